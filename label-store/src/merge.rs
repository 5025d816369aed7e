//! `merge`: joins shard stores written separately (by sample range, on other processes or
//! machines) into one store by writing a manifest. Record bytes are never copied: shard files
//! are hard-linked into the output directory, or referenced by relative path where a hard link
//! is impossible (another file system).

use crate::error::{Result, StoreError, format, io};
use crate::lock::WriterLock;
use crate::reader::LabelStore;
use crate::writer::{MANIFEST_FILE, write_atomic};
use formats::{Manifest, Quality, QualitySums, SampleRange};
use std::path::{Component, Path, PathBuf};

/// Merges the stores in `inputs` into `out`; they must agree on everything but their sample
/// ranges, and their ranges must tile the dataset without gap or overlap.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<Manifest> {
    if inputs.is_empty() {
        return Err(StoreError::Invalid(
            "merge needs at least one shard store".into(),
        ));
    }
    let mut stores = inputs
        .iter()
        .map(|p| LabelStore::open(p))
        .collect::<Result<Vec<_>>>()?;
    stores.sort_by_key(|s| s.samples().start);
    let first = &stores[0];
    for s in &stores[1..] {
        if let Some(diff) = incompatibility(&first.manifest, &s.manifest) {
            return Err(StoreError::Invalid(format!(
                "cannot merge {} with {}: {diff}",
                first.dir.display(),
                s.dir.display()
            )));
        }
    }
    let total = first.manifest.dataset.samples;
    let mut at = 0u32;
    for s in &stores {
        let r = s.samples();
        if r.start > at {
            return Err(StoreError::Invalid(format!(
                "gap: samples {at}..{} are in no shard store (next is {} with {r})",
                r.start,
                s.dir.display()
            )));
        }
        if r.start < at {
            return Err(StoreError::Invalid(format!(
                "overlap: {} ({r}) overlaps samples before {at}",
                s.dir.display()
            )));
        }
        at = r.end;
    }
    if u64::from(at) != total {
        return Err(StoreError::Invalid(format!(
            "gap: samples {at}..{total} are in no shard store"
        )));
    }
    // One writer per directory: a second merge (or a labelling run) into `out` is refused.
    let _lock = WriterLock::acquire(out)?;
    if out.join(MANIFEST_FILE).exists() {
        return Err(StoreError::Invalid(format!(
            "{} already holds a label store",
            out.display()
        )));
    }
    let mut shards = Vec::new();
    let mut sums = QualitySums::default();
    for s in &stores {
        for (entry, shard) in s.manifest.shards.iter().zip(&s.shards) {
            sums.add(&shard.quality_sums()?);
            let mut e = entry.clone();
            e.file = place(&shard.path, out)?;
            shards.push(e);
        }
    }
    let mut m = first.manifest.clone();
    m.samples = SampleRange { start: 0, end: at };
    m.shards = shards;
    m.quality = Quality::from_sums(&sums);
    if let Some(f) = &mut m.features {
        for (h, head) in f.heads.iter_mut().enumerate() {
            let mut files = Vec::new();
            let mut sums = QualitySums::default();
            for s in &stores {
                let fs = s.features(h)?;
                for (entry, shard) in fs.head.shards.iter().zip(fs.shards()) {
                    sums.add(&shard.quality_sums()?);
                    let mut e = entry.clone();
                    e.file = place(&shard.path, out)?;
                    files.push(e);
                }
            }
            head.shards = files;
            head.quality = formats::FeatureQuality::from_sums(&sums, head.dim);
        }
    }
    m.created = formats::manifest::now_rfc3339();
    m.check().map_err(format("merged manifest"))?;
    write_atomic(&out.join(MANIFEST_FILE), m.to_json().as_bytes())?;
    // The result must open like any store.
    LabelStore::open(out)?;
    Ok(m)
}

fn incompatibility(a: &Manifest, b: &Manifest) -> Option<String> {
    if let Some(d) = a.dataset.mismatch(&b.dataset) {
        return Some(d);
    }
    let fields: [(&str, String, String); 13] = [
        (
            "format_version",
            a.format_version.to_string(),
            b.format_version.to_string(),
        ),
        ("teachers", json(&a.teachers), json(&b.teachers)),
        ("recipe", a.recipe.to_string(), b.recipe.to_string()),
        ("seed", a.seed.to_string(), b.seed.to_string()),
        ("epochs", a.epochs.to_string(), b.epochs.to_string()),
        ("classes", a.classes.to_string(), b.classes.to_string()),
        ("k", a.k.to_string(), b.k.to_string()),
        ("codec", a.codec.name().into(), b.codec.name().into()),
        (
            "chunk_records",
            a.chunk_records.to_string(),
            b.chunk_records.to_string(),
        ),
        (
            "teacher_input",
            json(&a.teacher_input),
            json(&b.teacher_input),
        ),
        ("extra", json(&a.extra), json(&b.extra)),
        ("decode_probe", json(&a.decode_probe), json(&b.decode_probe)),
        ("features", feature_setup(a), feature_setup(b)),
    ];
    fields
        .into_iter()
        .find(|(_, x, y)| x != y)
        .map(|(f, x, y)| format!("{f} differs ({x} vs {y})"))
}

/// What the feature section of a store says beside its files and figures: codec and heads.
fn feature_setup(m: &Manifest) -> String {
    let mut f = m.features.clone();
    for h in f.iter_mut().flat_map(|f| f.heads.iter_mut()) {
        h.shards.clear();
        h.quality = Default::default();
    }
    json(&f)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Puts `shard` into `out` without copying: a hard link, else a relative path to it.
fn place(shard: &Path, out: &Path) -> Result<String> {
    let name = shard
        .file_name()
        .ok_or_else(|| StoreError::Invalid(format!("{}: not a file", shard.display())))?;
    let target = out.join(name);
    if target.exists() {
        if same_file(shard, &target) {
            return Ok(name.to_string_lossy().into_owned());
        }
        return Err(StoreError::Invalid(format!(
            "{} already exists and is another file",
            target.display()
        )));
    }
    match std::fs::hard_link(shard, &target) {
        Ok(()) => Ok(name.to_string_lossy().into_owned()),
        Err(e) => {
            tracing::info!(shard = %shard.display(), error = %e, "hard link failed; referencing the shard by relative path");
            relative_path(shard, out)
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Path of `file` relative to directory `from`.
fn relative_path(file: &Path, from: &Path) -> Result<String> {
    let file = file.canonicalize().map_err(io(file))?;
    let from = from.canonicalize().map_err(io(from))?;
    let a: Vec<Component> = file.components().collect();
    let b: Vec<Component> = from.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &a[common..] {
        rel.push(c);
    }
    Ok(rel.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("x/y");
        let b = t.path().join("z");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f.dls"), b"1").unwrap();
        assert_eq!(relative_path(&a.join("f.dls"), &b).unwrap(), "../x/y/f.dls");
    }
}
