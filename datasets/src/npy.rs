//! `.npy` arrays: `{split}_images.npy` (u8, shape `[N, H, W]` or `[N, H, W, C]` with C = 1 or 3,
//! C order) and `{split}_labels.npy` (any integer dtype, shape `[N]`).

use super::{Packed, check_labels, fingerprint, packed_dataset};
use crate::error::DataError;
use std::path::Path;

/// A split stored as two `.npy` arrays.
pub struct NpyArrays {
    packed: Packed,
}

/// Whether `dir` holds some `*_images.npy`.
pub(crate) fn has_arrays(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_images.npy"))
        })
        .unwrap_or(false)
}

/// A parsed `.npy` header: dtype string, shape, and where the data starts.
#[derive(Debug, PartialEq)]
pub(crate) struct NpyHeader {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data_offset: usize,
}

/// The header of the `.npy` file `b` (read by `npyz`): C order only, and a plain dtype.
pub(crate) fn parse_header(path: &Path, b: &[u8]) -> Result<NpyHeader, DataError> {
    let bad = |what: &str| DataError::data(path, format!("not a valid .npy file: {what}"));
    let mut rest = b;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| bad(&e.to_string()))?;
    if header.order() == npyz::Order::Fortran {
        return Err(bad(
            "Fortran-order arrays are not supported; save with C order",
        ));
    }
    let descr = match header.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => return Err(bad(&format!("dtype {} is not a plain type", other.descr()))),
    };
    let shape = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(&format!("shape entry {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader {
        descr,
        shape,
        data_offset: b.len() - rest.len(),
    })
}

fn read_labels(path: &Path) -> Result<Vec<u32>, DataError> {
    let b = std::fs::read(path).map_err(DataError::io(path))?;
    let h = parse_header(path, &b)?;
    if h.shape.len() != 1 {
        return Err(DataError::data(
            path,
            format!("labels must have shape [N], not {:?}", h.shape),
        ));
    }
    let n = h.shape[0];
    let (size, signed) = match h.descr.trim_start_matches(['<', '|', '=']) {
        "u1" => (1, false),
        "i1" => (1, true),
        "u2" => (2, false),
        "i2" => (2, true),
        "u4" => (4, false),
        "i4" => (4, true),
        "u8" => (8, false),
        "i8" => (8, true),
        other => {
            return Err(DataError::data(
                path,
                format!("label dtype {other:?} is not a little-endian integer"),
            ));
        }
    };
    let data = &b[h.data_offset.min(b.len())..];
    if n.checked_mul(size) != Some(data.len()) {
        return Err(DataError::data(
            path,
            format!(
                "{n} labels of {size} bytes do not fill the file's {} bytes",
                data.len()
            ),
        ));
    }
    data.chunks_exact(size)
        .enumerate()
        .map(|(i, c)| {
            let mut buf = [0u8; 8];
            buf[..size].copy_from_slice(c);
            if signed && c[size - 1] & 0x80 != 0 {
                return Err(DataError::data(path, format!("sample {i}: negative label")));
            }
            let v = u64::from_le_bytes(buf);
            u32::try_from(v)
                .map_err(|_| DataError::data(path, format!("sample {i}: label {v} too large")))
        })
        .collect()
}

impl NpyArrays {
    /// Opens `{split}_images.npy` and `{split}_labels.npy` in `dir`.
    pub fn open(dir: &Path, split: &str) -> Result<Self, DataError> {
        let ipath = dir.join(format!("{split}_images.npy"));
        let lpath = dir.join(format!("{split}_labels.npy"));
        let b = std::fs::read(&ipath).map_err(DataError::io(&ipath))?;
        let h = parse_header(&ipath, &b)?;
        if !matches!(h.descr.as_str(), "|u1" | "<u1" | "u1") {
            return Err(DataError::data(
                &ipath,
                format!("image dtype {:?} is not u8", h.descr),
            ));
        }
        let (n, hh, w, c) = match h.shape[..] {
            [n, hh, w] => (n, hh, w, 1),
            [n, hh, w, c] if c == 1 || c == 3 => (n, hh, w, c),
            _ => {
                return Err(DataError::data(
                    &ipath,
                    format!(
                        "images must have shape [N,H,W] or [N,H,W,1|3], not {:?}",
                        h.shape
                    ),
                ));
            }
        };
        let pixels = b[h.data_offset.min(b.len())..].to_vec();
        let need = [n, hh, w, c]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if need != Some(pixels.len()) || hh == 0 || w == 0 || hh > 65535 || w > 65535 {
            return Err(DataError::data(
                &ipath,
                format!(
                    "shape {:?} needs {} bytes (sides 1..=65535), the file has {}",
                    h.shape,
                    need.map_or("too many".into(), |v| v.to_string()),
                    pixels.len()
                ),
            ));
        }
        let labels = read_labels(&lpath)?;
        if labels.len() != n {
            return Err(DataError::data(
                &lpath,
                format!("{} labels for {n} images", labels.len()),
            ));
        }
        let classes = labels.iter().max().map_or(1, |&m| m + 1);
        check_labels(&lpath, &labels, classes)?;
        let fingerprint = fingerprint("npy", split, &labels, &pixels);
        Ok(NpyArrays {
            packed: Packed {
                width: w as u32,
                height: hh as u32,
                channels: c as u8,
                pixels,
                labels,
                classes,
                names: None,
                fingerprint,
            },
        })
    }
}

packed_dataset!(NpyArrays, |_: &NpyArrays| "npy");

/// Writes a C-order `.npy` array (version 1) with dtype `descr` (tests and tools).
pub fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<(), DataError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).map_err(DataError::io(path))
}
