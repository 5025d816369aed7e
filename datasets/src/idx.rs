//! MNIST in IDX files: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (split `train`) and
//! `t10k-…` (split `test`), each optionally gzipped (`.gz`).

use super::{Packed, check_labels, fingerprint, packed_dataset, read_maybe_gz};
use crate::error::DataError;
use std::path::{Path, PathBuf};

/// An MNIST-style IDX split (also Fashion-MNIST and friends: any u8 images with labels).
pub struct Mnist {
    packed: Packed,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(DataError::data(
        dir.join(stem),
        "missing (looked for it with and without .gz)",
    ))
}

/// Parses an IDX header: magic (0, 0, type 0x08 = u8, dimension count) and big-endian dims.
fn parse(path: &Path, bytes: &[u8], want_dims: usize) -> Result<(Vec<usize>, usize), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::data(path, "not an IDX file (bad magic)"));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::data(
            path,
            format!("IDX element type 0x{:02x} is not u8 (0x08)", bytes[2]),
        ));
    }
    if usize::from(bytes[3]) != want_dims {
        return Err(DataError::data(
            path,
            format!("IDX has {} dimensions, expected {want_dims}", bytes[3]),
        ));
    }
    let header = 4 + 4 * want_dims;
    if bytes.len() < header {
        return Err(DataError::data(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..want_dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4")) as usize)
        .collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if want != Some(bytes.len() - header) || dims[1..].iter().any(|&d| d > 65535) {
        return Err(DataError::data(
            path,
            format!(
                "IDX dimensions {dims:?} need {} bytes of data (sides up to 65535), the file has {} (truncated or corrupt)",
                want.map_or("too many".into(), |v| v.to_string()),
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, header))
}

impl Mnist {
    /// Opens split `train` or `test` of the IDX files in `dir`.
    pub fn open(dir: &Path, split: &str) -> Result<Self, DataError> {
        let prefix = match split {
            "train" => "train",
            "test" | "t10k" => "t10k",
            _ => {
                return Err(DataError::invalid(
                    "split",
                    format!("MNIST has splits train and test, not {split:?}"),
                ));
            }
        };
        let ipath = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let lpath = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let ibytes = read_maybe_gz(&ipath)?;
        let lbytes = read_maybe_gz(&lpath)?;
        let (idims, ih) = parse(&ipath, &ibytes, 3)?;
        let (ldims, lh) = parse(&lpath, &lbytes, 1)?;
        if idims[0] != ldims[0] {
            return Err(DataError::data(
                &lpath,
                format!("{} labels for {} images", ldims[0], idims[0]),
            ));
        }
        if idims[1] == 0 || idims[2] == 0 {
            return Err(DataError::data(&ipath, "images of zero size"));
        }
        let labels: Vec<u32> = lbytes[lh..].iter().map(|&b| u32::from(b)).collect();
        let classes = labels.iter().max().map_or(10, |&m| (m + 1).max(10));
        check_labels(&lpath, &labels, classes)?;
        let pixels = ibytes[ih..].to_vec();
        let fingerprint = fingerprint("mnist-idx", split, &labels, &pixels);
        Ok(Mnist {
            packed: Packed {
                width: idims[2] as u32,
                height: idims[1] as u32,
                channels: 1,
                pixels,
                labels,
                classes,
                names: Some((0..classes).map(|c| c.to_string()).collect()),
                fingerprint,
            },
        })
    }
}

packed_dataset!(Mnist, |_: &Mnist| "mnist-idx");

/// Writes `images` (n × rows × cols bytes) and `labels` as IDX files (used by the MNIST fetch
/// and by tests).
pub fn write_idx(
    images_path: &Path,
    labels_path: &Path,
    rows: u32,
    cols: u32,
    images: &[u8],
    labels: &[u8],
) -> Result<(), DataError> {
    let n = labels.len() as u32;
    let mut img = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend_from_slice(images);
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&n.to_be_bytes());
    lab.extend_from_slice(labels);
    std::fs::write(images_path, img).map_err(DataError::io(images_path))?;
    std::fs::write(labels_path, lab).map_err(DataError::io(labels_path))
}
