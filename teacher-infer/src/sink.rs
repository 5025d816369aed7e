//! The record sink: a writer thread that turns each labelled batch's logits into records (top-k,
//! reconstruction quality, the teacher's correctness on unmixed records) and appends them to the
//! store in order, or stages a permuted block's records whole.

use crate::error::InferError;
use crate::pipeline::Batch;
use crossbeam_channel::Sender;
use formats::{Record, SoftLabel};
use label_store::{RecordQuality, StoreWriter};
use replay::block::BlockPlan;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The writer thread of a labelling run and the channel that feeds it.
pub(crate) struct RecordSink {
    tx: Sender<(Batch, Vec<f32>, Vec<Vec<f32>>)>,
    thread: JoinHandle<Result<StoreWriter, InferError>>,
}

impl RecordSink {
    /// Starts the thread over `writer`: `k` classes kept of `classes`, `epochs` per block.
    /// Batches come block-major (every epoch of a block before the next block), so a staged
    /// block is complete once its `block size × epochs` records have come.
    pub(crate) fn start(
        mut writer: StoreWriter,
        out: &Path,
        classes: u32,
        k: u32,
        epochs: u32,
        plan: Arc<BlockPlan>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<(Batch, Vec<f32>, Vec<Vec<f32>>)>(2);
        let out_dir = out.to_path_buf();
        let staged = writer.staged_groups().is_some();
        let heads = writer.feature_heads();
        let thread = std::thread::Builder::new()
            .name("label-writer".into())
            .spawn(move || -> Result<StoreWriter, InferError> {
                let mut group = Vec::new();
                // Per head, the group's vectors end to end (staged writing).
                let mut group_features: Vec<Vec<f32>> = vec![Vec::new(); heads];
                for (b, logits, features) in rx {
                    let n = b.samples.len();
                    let dims: Vec<usize> = features.iter().map(|f| f.len() / n.max(1)).collect();
                    let cl = classes as usize;
                    for j in 0..n {
                        let (epoch, s) = (b.epoch, b.samples[j]);
                        // An embedding-only teacher's batch has no logits: records of views.
                        let row = &logits[j * cl..(j + 1) * cl];
                        let rec = record(&b, j, row, k as usize, &out_dir)?;
                        let q = quality(&b, j, row, &rec.label);
                        let vectors: Vec<&[f32]> = features
                            .iter()
                            .zip(&dims)
                            .map(|(f, &d)| &f[j * d..(j + 1) * d])
                            .collect();
                        if staged {
                            group.push((epoch, s, rec, q));
                            for (g, v) in group_features.iter_mut().zip(&vectors) {
                                g.extend_from_slice(v);
                            }
                        } else {
                            writer
                                .append_with_features(epoch, s, &rec, &q, &vectors)
                                .map_err(|e| store_err(&out_dir, e))?;
                        }
                    }
                    let block = plan.block(b.block as usize).len() * epochs as usize;
                    if staged && group.len() == block {
                        let vectors: Vec<Vec<&[f32]>> = group_features
                            .iter()
                            .map(|g| g.chunks_exact(g.len() / block.max(1)).collect())
                            .collect();
                        writer
                            .append_group_with_features(&group, &vectors)
                            .map_err(|e| store_err(&out_dir, e))?;
                        group.clear();
                        group_features.iter_mut().for_each(Vec::clear);
                    }
                }
                Ok(writer)
            })
            .expect("spawn writer thread");
        RecordSink { tx, thread }
    }

    /// Hands a batch, its logits and each feature head's values to the writer; false when the writer has stopped (with an
    /// error that [`RecordSink::finish`] returns).
    pub(crate) fn send(&self, batch: Batch, logits: Vec<f32>, features: Vec<Vec<f32>>) -> bool {
        self.tx.send((batch, logits, features)).is_ok()
    }

    /// Waits for the writer to write everything sent, and returns it (not yet finished: a run
    /// that failed leaves its complete chunks for `--resume`).
    pub(crate) fn finish(self) -> Result<StoreWriter, InferError> {
        drop(self.tx);
        self.thread.join().expect("writer thread")
    }
}

/// The record of row `j` of batch `b`: its augmentation and the top-`k` of its logits.
fn record(b: &Batch, j: usize, row: &[f32], k: usize, out: &Path) -> Result<Record, InferError> {
    if k == 0 {
        return Ok(Record {
            aug: b.aug[j],
            label: SoftLabel::none(),
        });
    }
    let label = SoftLabel::from_logits(row, k).map_err(|e| InferError::Run {
        file: out.to_path_buf(),
        what: format!(
            "teacher output for sample {} (epoch {}): {e}",
            b.samples[j], b.epoch
        ),
    })?;
    Ok(Record {
        aug: b.aug[j],
        label,
    })
}

/// The reconstruction KL of `label` at τ = 1 and 4, and whether the teacher's top class is the
/// true one (unmixed records of labelled samples only); nothing for a record without a label.
fn quality(b: &Batch, j: usize, row: &[f32], label: &SoftLabel) -> RecordQuality {
    if label.k() == 0 {
        return RecordQuality::default();
    }
    let correct = b.truth[j]
        .as_ref()
        .filter(|t| t.partner.is_none())
        .map(|t| label.indices[0] == t.primary);
    RecordQuality {
        reconstruction_kl: Some((label.kl_from_full(row, 1.0), label.kl_from_full(row, 4.0))),
        teacher_correct: correct,
    }
}

pub(crate) fn store_err(out: &Path, e: label_store::StoreError) -> InferError {
    InferError::Run {
        file: PathBuf::from(out),
        what: e.to_string(),
    }
}
