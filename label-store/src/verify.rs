//! `verify`: every footer, every chunk checksum, every record, and the manifest against the
//! shards. Unlike opening a store, it keeps going after a fault and reports them all.

use crate::reader::{Shard, check_shard_against_manifest};
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
    let row = layout.row_bytes();
    let mut rec = Record::empty(layout.k as usize);
    let (mut rows, mut scratch) = (Vec::new(), Vec::new());
    for entry in &manifest.shards {
        let path = dir.join(&entry.file);
        if !path.exists() {
            report.errors.push(format!(
                "{}: shard {} (samples {}) is missing",
                dir.display(),
                entry.file,
                entry.samples
            ));
            continue;
        }
        let shard = match Shard::open(&path) {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        if let Err(e) = check_shard_against_manifest(&manifest, entry, &shard) {
            report.errors.push(e.to_string());
        }
        for (i, e) in shard.footer.index.iter().enumerate() {
            report.chunks_checked += 1;
            rows.resize(e.raw_len as usize, 0);
            if let Err(err) = shard.chunk_rows(i, &mut scratch, &mut rows) {
                report.errors.push(err.to_string());
                continue;
            }
            for (n, r) in rows.chunks_exact(row).enumerate() {
                report.records_checked += 1;
                if let Err(err) = layout.decode_into(r, &mut rec) {
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
    report.ok = report.errors.is_empty();
    report
}
