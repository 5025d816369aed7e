//! `verify`: every footer, every chunk checksum, every record, and the manifest against the
//! shards. Unlike opening a store, it keeps going after a fault and reports them all.

use crate::reader::{Shard, check_shard_against_manifest};
use crate::shard::RowKind;
use crate::writer::MANIFEST_FILE;
use formats::{Manifest, Record, RecordLayout};
use serde::Serialize;
use std::path::Path;

/// Outcome of [`verify`].
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct VerifyReport {
    pub ok: bool,
    pub chunks_checked: u64,
    pub records_checked: u64,
    /// One line per fault, naming the file and, where it applies, chunk, epoch and samples.
    pub errors: Vec<String>,
}

/// Checks the whole store in `dir`. Never fails: faults go into the report.
pub fn verify(dir: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mpath = dir.join(MANIFEST_FILE);
    let manifest = match std::fs::read_to_string(&mpath)
        .map_err(|e| e.to_string())
        .and_then(|t| Manifest::from_json(&t).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            report.errors.push(format!("{}: {e}", mpath.display()));
            return report;
        }
    };
    let layout = RecordLayout::new(manifest.classes, manifest.k, manifest.codec)
        .expect("checked manifest has a valid layout");
    let mut rec = Record::empty(layout.k as usize);
    for entry in &manifest.shards {
        let file = File {
            dir,
            manifest: &manifest,
            entry,
            what: "shard".into(),
            head: None,
        };
        file.check(layout.row_bytes(), &mut report, |r| {
            layout.decode_into(r, &mut rec).map(|_| ())
        });
    }
    if let Some(f) = &manifest.features {
        for (h, head) in f.heads.iter().enumerate() {
            // The manifest check refused a head whose layout is invalid.
            let Ok(layout) = formats::FeatureLayout::new(head.stored_dim, f.codec) else {
                continue;
            };
            let mut v = vec![0f32; head.stored_dim as usize];
            for entry in &head.shards {
                let file = File {
                    dir,
                    manifest: &manifest,
                    entry,
                    what: format!("feature file of head {h}"),
                    head: Some((head, f.codec)),
                };
                file.check(layout.row_bytes(), &mut report, |r| {
                    layout.decode_into(r, &mut v)
                });
            }
        }
    }
    report.ok = report.errors.is_empty();
    report
}

/// One file of a store to verify: a label shard, or a feature head's file.
struct File<'a> {
    dir: &'a Path,
    manifest: &'a Manifest,
    entry: &'a formats::ShardEntry,
    /// How errors name it.
    what: String,
    head: Option<(&'a formats::FeatureHead, formats::FeatureCodec)>,
}

impl File<'_> {
    /// Checks the footer against the manifest, every chunk's checksums, and every row with
    /// `decode`, reporting every fault.
    fn check(
        &self,
        row: usize,
        report: &mut VerifyReport,
        mut decode: impl FnMut(&[u8]) -> Result<(), formats::FormatError>,
    ) {
        let path = self.dir.join(&self.entry.file);
        if !path.exists() {
            report.errors.push(format!(
                "{}: {} {} (samples {}) is missing",
                self.dir.display(),
                self.what,
                self.entry.file,
                self.entry.samples
            ));
            return;
        }
        let kind = if self.head.is_some() {
            RowKind::Features
        } else {
            RowKind::Labels
        };
        let shard = match Shard::open_kind(&path, kind) {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(e.to_string());
                return;
            }
        };
        if let Err(e) = check_shard_against_manifest(self.manifest, self.entry, &shard, self.head) {
            report.errors.push(e.to_string());
        }
        let (mut rows, mut scratch) = (Vec::new(), Vec::new());
        for (i, e) in shard.footer.index.iter().enumerate() {
            report.chunks_checked += 1;
            rows.resize(e.raw_len as usize, 0);
            if let Err(err) = shard.chunk_rows(i, &mut scratch, &mut rows) {
                report.errors.push(err.to_string());
                continue;
            }
            for (n, r) in rows.chunks_exact(row).enumerate() {
                if self.head.is_none() {
                    report.records_checked += 1;
                }
                if let Err(err) = decode(r) {
                    report.errors.push(format!(
                        "{}: chunk {i}: record (epoch {}, sample {}): {err}",
                        path.display(),
                        e.epoch,
                        e.first + n as u32
                    ));
                    break;
                }
            }
        }
    }
}
