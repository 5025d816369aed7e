//! What defines a training run: [`TrainConfig`] (written to `RUN/config.json` and compared on
//! `--resume`), its checks and identity, and the identity of a label store.

use crate::device::DeviceChoice;
use crate::error::TrainError;
use crate::loss::LossKind;
use crate::models::{InputShape, ModelSpec};
use crate::optim::OptimConfig;
use formats::Recipe;
use label_store::LabelStore;
use std::path::{Path, PathBuf};

/// Everything that defines a run; written to `RUN/config.json` and compared on `--resume`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Where the data came from (recorded, not opened here).
    pub data: String,
    pub split: String,
    /// The label store, when training from teacher labels.
    pub labels: Option<String>,
    /// Identity of the store's contents ([`store_identity`]), so that resuming against a store
    /// relabelled at the same path is refused.
    #[serde(default)]
    pub labels_identity: Option<String>,
    /// A test-split store of teacher labels made with `--aug none`, for fidelity metrics.
    pub eval_labels: Option<String>,
    pub models: Vec<ModelSpec>,
    pub input: InputShape,
    pub loss: LossKind,
    pub optim: OptimConfig,
    pub epochs: u32,
    pub batch: usize,
    pub seed: u64,
    /// Per-channel normalization: input = (pixel/255 − mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Augmentation sampled live when there is no store (hard-label training).
    pub aug: Option<Recipe>,
    pub device: DeviceChoice,
    /// Loader threads (not part of what makes runs equal).
    #[serde(default)]
    pub threads: usize,
    /// Keep only the last this many epoch checkpoints (0: keep all). Not part of what makes
    /// runs equal.
    #[serde(default)]
    pub keep_checkpoints: u32,
    /// Centre-crop fraction of the per-epoch test pass on image folders (without teacher test
    /// labels, whose own recipe is replayed).
    #[serde(default = "default_crop_pct")]
    pub eval_crop_pct: f64,
    /// Blocks per shuffle window over a store labelled in permuted decode-once blocks (0:
    /// shuffle all records); see [`StreamConfig::window`].
    #[serde(default = "default_window")]
    pub shuffle_window: usize,
    /// Store epochs replayed per epoch from one decode of each image (FKD's multi-crop).
    #[serde(default = "default_multi_crop")]
    pub multi_crop: u32,
    /// Record each epoch's [`StreamDigest`] as `stream_xxh3` in `metrics.jsonl` (costs the
    /// loader a hash of every batch). Not part of what makes runs equal.
    #[serde(default)]
    pub stream_digest: bool,
    /// Batches the loader builds ahead of training, in all (default: one per thread and two
    /// more). Not part of what makes runs equal.
    #[serde(default)]
    pub prefetch: Option<usize>,
    /// The teachers run on every batch when training online (`--teacher`), and how their
    /// labels are kept; the [`crate::RunData::teacher`] must be them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineTeacherInfo>,
    /// The feature term: each student's penultimate features, through a learned linear
    /// projector, matched against a feature head of the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<FeatureTerm>,
}

/// The feature term of a run (`--feature-weight`), added to the soft-label loss.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureTerm {
    /// The store's feature head (`features.heads[head]`).
    pub head: usize,
    /// The term's weight.
    pub weight: f32,
    pub loss: crate::loss::FeatureLoss,
}

/// What a run records of its online teachers (part of what makes runs equal).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OnlineTeacherInfo {
    pub teachers: Vec<formats::TeacherInfo>,
    /// Classes kept per label, and the value codec they pass through.
    pub k: u32,
    pub codec: formats::ValueCodec,
    /// How several teachers combine (`probs` or `logits`).
    pub ensemble: String,
    /// The teachers' input = (pixel / 255 · scale − mean[c]) / std[c].
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn default_window() -> usize {
    replay::stream::DEFAULT_WINDOW
}

fn default_multi_crop() -> u32 {
    1
}

impl TrainConfig {
    /// One `model` for `input` trained with `loss` on `distill train`'s defaults: one epoch,
    /// batches of 128, SGD (momentum 0.9, lr 0.05, weight decay 5e-4, constant rate), seed 0,
    /// inputs normalized with mean and std 0.5, the CPU, a loader thread per core, no store
    /// named (set `labels` for the losses that need one).
    pub fn new(model: ModelSpec, input: InputShape, loss: LossKind) -> Self {
        TrainConfig {
            data: "data".into(),
            split: "train".into(),
            labels: None,
            labels_identity: None,
            eval_labels: None,
            models: vec![model],
            input,
            loss,
            optim: OptimConfig {
                optimizer: crate::optim::OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                lr: 0.05,
                weight_decay: 5e-4,
                schedule: crate::optim::Schedule::Constant,
                warmup_epochs: 0.0,
                clip_grad_norm: None,
            },
            epochs: 1,
            batch: 128,
            seed: 0,
            mean: vec![0.5; input.channels],
            std: vec![0.5; input.channels],
            aug: None,
            device: DeviceChoice::Cpu,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_checkpoints: 0,
            eval_crop_pct: default_crop_pct(),
            shuffle_window: default_window(),
            multi_crop: default_multi_crop(),
            stream_digest: false,
            prefetch: None,
            online: None,
            feature: None,
        }
    }

    /// Checks every hyper-parameter, naming the field out of range.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.loss.validate().map_err(TrainError::Config)?;
        self.optim.validate().map_err(TrainError::Config)?;
        if self.epochs == 0 {
            return Err(TrainError::config("`epochs` must be ≥ 1"));
        }
        if self.multi_crop == 0 {
            return Err(TrainError::config("`multi_crop` must be ≥ 1"));
        }
        if self.batch == 0 {
            return Err(TrainError::config("`batch` must be ≥ 1"));
        }
        if !(self.eval_crop_pct > 0.0 && self.eval_crop_pct <= 1.0) {
            return Err(TrainError::config(format!(
                "`eval_crop_pct` {} must be in (0, 1]",
                self.eval_crop_pct
            )));
        }
        if self.models.is_empty() {
            return Err(TrainError::config("no model given (`models`)"));
        }
        for m in &self.models {
            m.check(&self.input).map_err(TrainError::Mismatch)?;
        }
        if let Some(f) = &self.feature {
            if !(f.weight > 0.0 && f.weight.is_finite()) {
                return Err(TrainError::config(format!(
                    "`feature_weight` {} must be > 0",
                    f.weight
                )));
            }
            if self.labels.is_none() {
                return Err(TrainError::config(
                    "`feature_weight` needs a store labelled with --feature (`labels`)",
                ));
            }
        } else if self.loss == LossKind::Features {
            return Err(TrainError::config(
                "the features `loss` is the feature term alone: give `feature_weight`",
            ));
        }
        if self.labels.is_none() && self.online.is_none() && self.loss != LossKind::Ce {
            return Err(TrainError::config(
                "this `loss` needs teacher labels: give a store (`labels`) or a teacher to run \
                 online (`teachers`), or use the ce loss",
            ));
        }
        if self.online.is_some() && self.loss.teacher_tau(0).is_none() {
            return Err(TrainError::config(
                "an online teacher (`teachers`) needs a `loss` that uses it (kd, usi or eskd)",
            ));
        }
        Ok(())
    }

    /// Whether `other` describes the same run up to the epoch and thread counts.
    pub fn same_run(&self, other: &TrainConfig) -> bool {
        self.identity() == other.identity()
    }

    /// The run's identity for `--resume`: everything but the epoch count, thread count,
    /// checkpoints kept and digest recording, which a resumed run may change.
    pub(crate) fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        if let Some(o) = v.as_object_mut() {
            o.remove("epochs");
            o.remove("threads");
            o.remove("keep_checkpoints");
            o.remove("stream_digest");
            o.remove("prefetch");
        }
        v
    }

    /// Directory names of the students: the run directory itself for one, else one per model.
    pub fn student_dirs(&self, run: &Path) -> Vec<PathBuf> {
        if self.models.len() == 1 {
            return vec![run.to_path_buf()];
        }
        let mut names: Vec<String> = Vec::new();
        for m in &self.models {
            let base = format!("{}-w{}-{}", m.family, m.width, norm_name(m));
            let mut name = base.clone();
            let mut i = 2;
            while names.contains(&name) {
                name = format!("{base}-{i}");
                i += 1;
            }
            names.push(name);
        }
        names.into_iter().map(|n| run.join(n)).collect()
    }
}

fn norm_name(m: &ModelSpec) -> &'static str {
    match m.norm {
        crate::models::NormKind::None => "nonorm",
        crate::models::NormKind::Batch => "bn",
        crate::models::NormKind::Layer => "ln",
    }
}

/// What identifies a store's contents: its teachers' SHA-256, seed, epochs and every shard's
/// checksum, hashed.
pub fn store_identity(store: &LabelStore) -> String {
    let m = &store.manifest;
    let mut text = format!("seed={} epochs={} k={}", m.seed, m.epochs, m.k);
    for t in &m.teachers {
        text.push_str(&t.sha256);
    }
    for sh in &m.shards {
        text.push_str(&sh.checksum);
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

fn default_crop_pct() -> f64 {
    formats::recipe::DEFAULT_CROP_PCT
}
