//! A list of datasets read as one (`--data` repeated): a labelled split and unlabelled transfer
//! data in one store, the set-up of Stanton et al. Sample `i` of the list is sample
//! `i − start` of the part that holds it, parts in the order given. Each part keeps its own
//! reader, labels (or none) and fingerprint; the list's fingerprint hashes the parts', and the
//! parts' are recorded one by one (`Dataset::parts`), so a store names the part that differs.

use super::{Dataset, Image};
use crate::error::DataError;
use formats::manifest::DatasetFingerprint;
use xxhash_rust::xxh3::Xxh3;

/// The `format` of a list's fingerprint.
pub const LIST_FORMAT: &str = "list";

/// Several datasets as one.
pub struct DataList {
    parts: Vec<Box<dyn Dataset>>,
    /// The first sample of each part, and the total at the end.
    starts: Vec<u32>,
    classes: u32,
    names: Option<Vec<String>>,
    fingerprints: Vec<DatasetFingerprint>,
    fingerprint: DatasetFingerprint,
    /// Each part's file starts (or its first sample), in list numbering.
    file_starts: Vec<u32>,
}

impl DataList {
    /// The list of `parts` (at least two). Their images must have the same channels, and the
    /// labelled ones the same classes; errors name the part (1-based, as given).
    pub fn new(parts: Vec<Box<dyn Dataset>>) -> Result<Self, DataError> {
        if parts.len() < 2 {
            return Err(DataError::invalid(
                "`data`",
                "a list of datasets needs two or more",
            ));
        }
        let channels = parts[0].channels();
        let mut labelled: Option<(usize, u32)> = None;
        let (mut starts, mut total, mut file_starts) = (Vec::new(), 0u64, Vec::new());
        for (i, p) in parts.iter().enumerate() {
            if p.channels() != channels {
                return Err(DataError::invalid(
                    "`data`",
                    format!(
                        "dataset {} has {}-channel images, dataset 1 {channels}-channel ones",
                        i + 1,
                        p.channels()
                    ),
                ));
            }
            if p.labelled() {
                match labelled {
                    Some((j, c)) if c != p.classes() => {
                        return Err(DataError::invalid(
                            "`data`",
                            format!(
                                "dataset {} has {} classes, dataset {} {c}: labelled parts of a \
                                 list share their classes",
                                i + 1,
                                p.classes(),
                                j + 1
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => labelled = Some((i, p.classes())),
                }
            }
            let start = total as u32;
            starts.push(start);
            match p.file_starts() {
                Some(f) => file_starts.extend(f.iter().map(|s| start + s)),
                None => file_starts.push(start),
            }
            total += u64::from(p.len());
            if total > u64::from(u32::MAX) {
                return Err(DataError::invalid(
                    "`data`",
                    "more than 2^32 samples in all",
                ));
            }
        }
        starts.push(total as u32);
        let fingerprints: Vec<DatasetFingerprint> =
            parts.iter().map(|p| p.fingerprint().clone()).collect();
        let (mut lh, mut ch) = (Xxh3::new(), Xxh3::new());
        for f in &fingerprints {
            lh.update(f.labels_xxh3.as_bytes());
            lh.update(&[u8::from(f.labelled)]);
            ch.update(f.content_xxh3.as_bytes());
        }
        let fingerprint = DatasetFingerprint {
            format: LIST_FORMAT.into(),
            split: fingerprints
                .iter()
                .map(|f| f.split.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            samples: total,
            labels_xxh3: format!("{:016x}", lh.digest()),
            content_xxh3: format!("{:016x}", ch.digest()),
            labelled: fingerprints.iter().all(|f| f.labelled),
        };
        let names = labelled.and_then(|(j, _)| parts[j].class_names().map(<[String]>::to_vec));
        Ok(DataList {
            classes: labelled.map_or(0, |(_, c)| c),
            parts,
            starts,
            names,
            fingerprints,
            fingerprint,
            file_starts,
        })
    }

    /// The part holding sample `index`, and the sample's index in it.
    fn locate(&self, index: u32) -> Result<(&dyn Dataset, u32), DataError> {
        let total = *self.starts.last().expect("a start per part and the end");
        if index >= total {
            return Err(DataError::invalid(
                "index",
                format!("sample {index} is beyond the {total} samples"),
            ));
        }
        let p = self.starts.partition_point(|&s| s <= index) - 1;
        Ok((self.parts[p].as_ref(), index - self.starts[p]))
    }
}

impl Dataset for DataList {
    fn format(&self) -> &'static str {
        LIST_FORMAT
    }
    fn len(&self) -> u32 {
        *self.starts.last().expect("a start per part and the end")
    }
    fn classes(&self) -> u32 {
        self.classes
    }
    fn class_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }
    fn label(&self, index: u32) -> Option<u32> {
        let (p, i) = self.locate(index).ok()?;
        p.label(i)
    }
    /// Whether any part has hard labels (then their records train with them).
    fn labelled(&self) -> bool {
        self.classes > 0
    }
    fn channels(&self) -> u8 {
        self.parts[0].channels()
    }
    fn dims(&self, index: u32) -> Result<(u32, u32), DataError> {
        let (p, i) = self.locate(index)?;
        p.dims(i)
    }
    fn uniform_dims(&self) -> Result<(u32, u32), DataError> {
        let first = self.parts[0].uniform_dims()?;
        for (i, p) in self.parts.iter().enumerate().skip(1) {
            let d = p.uniform_dims()?;
            if d != first {
                return Err(DataError::invalid(
                    "`size`",
                    format!(
                        "dataset {}'s images are {}x{}, dataset 1's {}x{}: give the input `size`",
                        i + 1,
                        d.0,
                        d.1,
                        first.0,
                        first.1
                    ),
                ));
            }
        }
        Ok(first)
    }
    fn image(&self, index: u32) -> Result<Image, DataError> {
        let (p, i) = self.locate(index)?;
        p.image(i)
    }
    fn encoded(&self) -> bool {
        self.parts.iter().any(|p| p.encoded())
    }
    fn decoder(&self) -> &'static str {
        self.parts
            .iter()
            .find(|p| p.encoded())
            .map_or("none", |p| p.decoder())
    }
    fn file_starts(&self) -> Option<&[u32]> {
        Some(&self.file_starts)
    }
    fn parts(&self) -> &[DatasetFingerprint] {
        &self.fingerprints
    }
    fn fingerprint(&self) -> &DatasetFingerprint {
        &self.fingerprint
    }
}
