//! CIFAR-10 and CIFAR-100 in their binary versions.
//!
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` (split `train`), `test_batch.bin` (`test`),
//! records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B); names in
//! `batches.meta.txt`. CIFAR-100: `train.bin`, `test.bin`, records of a coarse and a fine label
//! byte + 3072 pixel bytes; the fine label is used; names in `fine_label_names.txt`.

use super::{Packed, check_labels, fingerprint, packed_dataset};
use crate::error::DataError;
use std::path::Path;

/// A CIFAR-10 or CIFAR-100 split, pixels converted from planar to HWC.
pub struct Cifar {
    packed: Packed,
    hundred: bool,
}

const PIXELS: usize = 32 * 32 * 3;

impl Cifar {
    /// Opens split `train` or `test` of CIFAR-10 (`hundred = false`) or CIFAR-100 in `dir`.
    pub fn open(dir: &Path, split: &str, hundred: bool) -> Result<Self, DataError> {
        let files: Vec<String> = match (hundred, split) {
            (false, "train") => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            (false, "test") => vec!["test_batch.bin".into()],
            (true, "train") => vec!["train.bin".into()],
            (true, "test") => vec!["test.bin".into()],
            _ => {
                return Err(DataError::invalid(
                    "split",
                    format!("CIFAR has splits train and test, not {split:?}"),
                ));
            }
        };
        let (label_bytes, classes) = if hundred { (2, 100) } else { (1, 10) };
        let record = label_bytes + PIXELS;
        let (mut labels, mut pixels) = (Vec::new(), Vec::new());
        for f in &files {
            let path = dir.join(f);
            let bytes = std::fs::read(&path).map_err(DataError::io(&path))?;
            if bytes.is_empty() || bytes.len() % record != 0 {
                return Err(DataError::data(
                    &path,
                    format!(
                        "{} bytes is not a whole number of {record}-byte records (truncated or not CIFAR-{})",
                        bytes.len(),
                        if hundred { 100 } else { 10 }
                    ),
                ));
            }
            for rec in bytes.chunks_exact(record) {
                labels.push(u32::from(rec[label_bytes - 1]));
                let planes = &rec[label_bytes..];
                for i in 0..1024 {
                    pixels.extend_from_slice(&[planes[i], planes[1024 + i], planes[2048 + i]]);
                }
            }
            check_labels(&path, &labels, classes)?;
        }
        let names_file = if hundred {
            "fine_label_names.txt"
        } else {
            "batches.meta.txt"
        };
        let names = std::fs::read_to_string(dir.join(names_file)).ok().map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        });
        let names = names.filter(|n| n.len() == classes as usize);
        let name = if hundred { "cifar100" } else { "cifar10" };
        let fingerprint = fingerprint(name, split, &labels, &pixels);
        Ok(Cifar {
            packed: Packed {
                width: 32,
                height: 32,
                channels: 3,
                pixels,
                labels,
                classes,
                names,
                fingerprint,
            },
            hundred,
        })
    }
}

packed_dataset!(Cifar, |c: &Cifar| if c.hundred {
    "cifar100"
} else {
    "cifar10"
});
