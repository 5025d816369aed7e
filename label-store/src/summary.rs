//! What `distill inspect` shows about a store: sizes, shape, provenance, label quality, and the
//! histogram of teacher top-1 classes (a full read of every record).

use crate::error::Result;
use crate::reader::LabelStore;
use crate::writer::MANIFEST_FILE;
use formats::{Quality, SampleRange, TeacherInfo};
use serde::Serialize;

/// A readable summary of a store.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub records: u64,
    pub epochs: u32,
    pub samples: u32,
    pub sample_range: SampleRange,
    pub classes: u32,
    pub k: u32,
    pub codec: String,
    pub shards: usize,
    pub chunks: u64,
    /// Shard files plus the manifest.
    pub bytes_on_disk: u64,
    pub bytes_per_record: f64,
    /// Dense f32 logits (`4 × classes` bytes per record) over `bytes_per_record`.
    pub compression_vs_dense_f32: f64,
    pub teachers: Vec<TeacherInfo>,
    pub recipe: serde_json::Value,
    /// How records become pixels (format version and recipe): the kernel, and the centre-crop
    /// rule when there is one; or why this build cannot replay them.
    pub resampling: String,
    /// What the teacher was run on: input size, normalization, and where each pre-processing
    /// setting came from (flag, model metadata, recipe or default).
    pub teacher_input: Option<formats::manifest::TeacherInput>,
    pub seed: u64,
    pub dataset: formats::DatasetFingerprint,
    pub created: String,
    pub quality: Quality,
    /// The decoder and probe hashes the store was labelled with, when recorded.
    pub decode_probe: Option<formats::DecodeProbe>,
    /// The decode-once blocks the records were labelled in, when any.
    pub blocks: Option<formats::BlockConfig>,
    /// How many records have each class as the teacher's top-1.
    pub top1_histogram: Vec<u64>,
    /// The stored features, one entry per head (empty without features).
    pub features: Vec<FeatureSummary>,
}

/// What `inspect` shows of one feature head.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureSummary {
    /// The teacher's file name and the output stored.
    pub teacher: String,
    pub output: String,
    /// The output's dimensions and those stored per record.
    pub dim: u32,
    pub stored_dim: u32,
    /// The PCA basis the vectors were projected with, when any.
    pub basis: Option<formats::basis::BasisRef>,
    pub codec: String,
    /// Bytes of the head's files, and per record.
    pub bytes: u64,
    pub bytes_per_record: f64,
    /// The writer's reconstruction figures (cosine, errors) over every record.
    pub quality: formats::FeatureQuality,
    /// The largest of the cosine thresholds at least 99% of records reach (a lower bound on
    /// the 1st percentile), when any is.
    pub p1_cosine_at_least: Option<f64>,
}

/// Summarizes `store`, reading every record once for the top-1 histogram.
pub fn summarize(store: &LabelStore) -> Result<Summary> {
    let m = &store.manifest;
    let manifest_bytes = std::fs::metadata(store.dir.join(MANIFEST_FILE))
        .map(|md| md.len())
        .unwrap_or(0);
    let bytes_on_disk = store
        .shards
        .iter()
        .map(|s| s.bytes.len() as u64)
        .sum::<u64>()
        + manifest_bytes;
    let records = store.records();
    let bytes_per_record = bytes_on_disk as f64 / records as f64;
    let mut hist = vec![0u64; m.classes as usize];
    let r = store.layout.row_bytes();
    let index_at = formats::AUG_BYTES;
    let wide = store.layout.index_bytes() == 4;
    // A store without soft labels has no top-1 to count (and rows of the view alone).
    let epochs = if store.layout.has_labels() {
        store.epochs()
    } else {
        0
    };
    for e in 0..epochs {
        let epoch = store.decode_epoch(e)?;
        for s in store.samples().start..store.samples().end {
            let row = epoch.row(s);
            debug_assert_eq!(row.len(), r);
            // The top-1 index is the first index of the row; decode_epoch checked checksums and
            // the index is range-checked here.
            let c = if wide {
                u32::from_le_bytes(row[index_at..index_at + 4].try_into().expect("4 bytes"))
            } else {
                u32::from(u16::from_le_bytes([row[index_at], row[index_at + 1]]))
            };
            if let Some(h) = hist.get_mut(c as usize) {
                *h += 1;
            }
        }
    }
    Ok(Summary {
        records,
        epochs: m.epochs,
        samples: m.samples.len(),
        sample_range: m.samples,
        classes: m.classes,
        k: m.k,
        codec: m.codec.name().into(),
        shards: store.shards.len(),
        chunks: store
            .shards
            .iter()
            .map(|s| s.footer.index.len() as u64)
            .sum(),
        bytes_on_disk,
        bytes_per_record,
        compression_vs_dense_f32: 4.0 * f64::from(m.classes) / bytes_per_record,
        teachers: m.teachers.clone(),
        recipe: m.recipe.clone(),
        resampling: match store.view_rule() {
            Ok(r) => match r.center {
                Some(p) => format!(
                    "{}, centre crop of the resized whole image (crop_pct {p})",
                    r.kernel
                ),
                None => r.kernel.to_string(),
            },
            Err(e) => format!("cannot be replayed by this build: {e}"),
        },
        teacher_input: m.teacher_input.clone(),
        seed: m.seed,
        dataset: m.dataset.clone(),
        created: m.created.clone(),
        quality: m.quality.clone(),
        decode_probe: m.decode_probe.clone(),
        blocks: m.blocks,
        top1_histogram: hist,
        features: feature_summaries(m, records),
    })
}

/// The manifest's feature heads as [`FeatureSummary`] entries (nothing of their files is read).
fn feature_summaries(m: &formats::Manifest, records: u64) -> Vec<FeatureSummary> {
    let Some(f) = &m.features else {
        return Vec::new();
    };
    f.heads
        .iter()
        .map(|h| {
            let bytes: u64 = h.shards.iter().map(|s| s.bytes).sum();
            FeatureSummary {
                teacher: m
                    .teachers
                    .get(h.teacher as usize)
                    .map_or_else(|| h.teacher.to_string(), |t| t.file.clone()),
                output: h.output.clone(),
                dim: h.dim,
                stored_dim: h.stored_dim,
                basis: h.basis.clone(),
                codec: f.codec.name().into(),
                bytes,
                bytes_per_record: bytes as f64 / records.max(1) as f64,
                p1_cosine_at_least: h.quality.p1_at_least(),
                quality: h.quality.clone(),
            }
        })
        .collect()
}
