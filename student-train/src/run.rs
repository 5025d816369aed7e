//! Training runs: the epoch loop over a [`Stream`], per-epoch metrics and checkpoints, resume,
//! and evaluation (accuracy, and against a teacher's test labels the fidelity metrics of Stanton
//! et al.: top-1 agreement and predictive KL).
//!
//! A run directory holds `config.json`, and per student `metrics.jsonl` (one JSON line per
//! epoch), `checkpoints/epoch-NNNN.ckpt` (parameters and optimizer state after each epoch) and
//! `student.ckpt` (the final parameters). One student trains in the run directory itself;
//! several (`--model` repeated) train from one stream, each in a subdirectory named after it.

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::device::DeviceChoice;
use crate::error::TrainError;
use crate::loss::LossKind;
use crate::models::{InputShape, ModelSpec, Student};
use crate::optim::OptimConfig;
use crate::stream::{Batch, Labels, Stream, StreamConfig, StreamDigest, check_store};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use formats::augment::{Recipe, Sampler};
use formats::dataset::Dataset;
use label_store::LabelStore;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    pub eval_crop_pct: f32,
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
}

fn default_window() -> usize {
    crate::stream::DEFAULT_WINDOW
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
        }
    }

    /// Checks every hyper-parameter, naming the flag out of range.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.loss.validate().map_err(TrainError::Config)?;
        self.optim.validate().map_err(TrainError::Config)?;
        if self.epochs == 0 {
            return Err(TrainError::config("--epochs must be ≥ 1"));
        }
        if self.multi_crop == 0 {
            return Err(TrainError::config("--multi-crop must be ≥ 1"));
        }
        if self.batch == 0 {
            return Err(TrainError::config("--batch must be ≥ 1"));
        }
        if !(self.eval_crop_pct > 0.0 && self.eval_crop_pct <= 1.0) {
            return Err(TrainError::config(format!(
                "--crop-pct {} must be in (0, 1]",
                self.eval_crop_pct
            )));
        }
        if self.models.is_empty() {
            return Err(TrainError::config("no --model given"));
        }
        for m in &self.models {
            m.check(&self.input).map_err(TrainError::Mismatch)?;
        }
        if self.labels.is_none() && self.loss != LossKind::Ce {
            return Err(TrainError::config(
                "this --loss needs teacher labels: pass --labels STORE, or use --loss ce",
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
    fn identity(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        if let Some(o) = v.as_object_mut() {
            o.remove("epochs");
            o.remove("threads");
            o.remove("keep_checkpoints");
            o.remove("stream_digest");
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

/// The data a run trains and evaluates on.
pub struct RunData {
    pub train: Arc<dyn Dataset>,
    pub labels: Option<Arc<LabelStore>>,
    /// The test split, for `test_accuracy` after each epoch.
    pub test: Option<Arc<dyn Dataset>>,
    pub eval_labels: Option<Arc<LabelStore>>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// 0-based epoch index.
    pub epoch: u32,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    pub images_per_sec: f64,
    /// Share of the epoch's training time spent waiting for the loader.
    pub loader_wait_fraction: f64,
    /// Images the loader decoded this epoch (absent in runs of older builds: 0).
    #[serde(default)]
    pub images_decoded: u64,
    /// xxh3 of the epoch's batches as trained ([`StreamDigest`]: every input, hard label and
    /// teacher value, in order), so another replay of the store (`distill.Loader` from Python)
    /// can be checked bit for bit against it (with `--stream-digest`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stream_xxh3: Option<String>,
    /// The store epoch replayed, when training from a store.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub store_epoch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_kl: Option<f64>,
}

/// Evaluation of one student.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    pub accuracy: f64,
    /// Top-1 agreement with the teacher, when teacher labels were given.
    pub agreement: Option<f64>,
    /// Mean KL(p_t ‖ p_s) at τ = 1 in nats, when teacher labels were given.
    pub kl: Option<f64>,
    pub samples: u64,
}

/// What the caller sees of a run while it trains.
pub trait Progress {
    /// An epoch of `steps` batches starts.
    fn epoch_start(&mut self, _epoch: u32, _steps: usize) {}
    /// A batch was trained; `loss` is the first student's.
    fn step(&mut self, _loss: f64) {}
    /// An epoch ended with these metrics, one per student.
    fn epoch_end(&mut self, _metrics: &[EpochMetrics]) {}
}

/// Progress that shows nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// What a finished run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSummary {
    pub run: PathBuf,
    pub students: Vec<StudentSummary>,
    pub resumed_from_epoch: u32,
    pub seconds: f64,
}

/// One student of a finished run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StudentSummary {
    pub dir: PathBuf,
    pub model: ModelSpec,
    pub last: Option<EpochMetrics>,
}

struct StudentState {
    dir: PathBuf,
    spec: ModelSpec,
    model: Option<Student>,
    optim: ModuleOptimizer,
    metrics: Vec<EpochMetrics>,
}

const CONFIG_FILE: &str = "config.json";
const METRICS_FILE: &str = "metrics.jsonl";
const FINAL_FILE: &str = "student.ckpt";
const CHECKPOINTS: &str = "checkpoints";

/// Trains the run `cfg` into `run` (creating it, or continuing it with `resume`).
pub fn train(
    cfg: &TrainConfig,
    data: &RunData,
    run: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    cfg.validate()?;
    let input = cfg.input;
    input
        .check_data(data.train.as_ref(), "the training split")
        .map_err(TrainError::Mismatch)?;
    let size = (input.width as u32, input.height as u32);
    let device = cfg.device.training().map_err(TrainError::Config)?;
    let infer_device = device.clone().without_autodiff();

    let labels = match &data.labels {
        Some(s) => Labels::Store(Arc::clone(s)),
        None => {
            let recipe = cfg.aug.clone().unwrap_or_else(Recipe::none);
            let sampler = Sampler::new(&recipe, cfg.seed, data.train.len(), size.0, size.1)?;
            Labels::Live(Arc::new(sampler))
        }
    };
    let stream = Arc::new(Stream::new(
        Arc::clone(&data.train),
        labels,
        StreamConfig {
            window: cfg.shuffle_window,
            multi_crop: cfg.multi_crop,
            digest: cfg.stream_digest,
            ..StreamConfig::training(
                cfg.batch,
                cfg.threads.max(1),
                cfg.seed,
                cfg.mean.clone(),
                cfg.std.clone(),
                size,
            )
        },
    )?);
    if let Some(test) = &data.test {
        input
            .check_data(test.as_ref(), "the test split")
            .map_err(TrainError::Mismatch)?;
    }
    let evaluator = match &data.test {
        Some(test) => Some(Evaluator::new(
            Arc::clone(test),
            data.eval_labels.clone(),
            EvalView {
                size,
                mean: &cfg.mean,
                std: &cfg.std,
                crop_pct: cfg.eval_crop_pct,
            },
            cfg.batch.max(256),
            cfg.threads.max(1),
        )?),
        None if data.eval_labels.is_some() => {
            return Err(TrainError::config(
                "--eval-labels needs the test split of the data to evaluate on",
            ));
        }
        None => None,
    };
    let start_epoch = prepare_run_dir(cfg, run, resume)?;
    let dirs = cfg.student_dirs(run);
    let mut students = Vec::with_capacity(dirs.len());
    for (i, (dir, spec)) in dirs.iter().zip(&cfg.models).enumerate() {
        fs::create_dir_all(dir.join(CHECKPOINTS)).map_err(TrainError::io(dir))?;
        let mut optim = cfg.optim.init();
        let (model, metrics) = if start_epoch > 0 {
            let ck = Checkpoint::read(
                &dir.join(CHECKPOINTS)
                    .join(checkpoint::file_name(start_epoch)),
            )?;
            if ck.meta.model != *spec || ck.meta.input != input {
                return Err(TrainError::corrupt(
                    &ck.path,
                    "the checkpoint holds another model than the run's config",
                ));
            }
            optim = ck.optimizer(optim)?;
            let metrics = read_metrics(&dir.join(METRICS_FILE), start_epoch)?;
            (ck.student(&device)?, metrics)
        } else {
            device.seed(cfg.seed.wrapping_add(i as u64));
            let model = spec.init(&input, &device).map_err(TrainError::Mismatch)?;
            (model, Vec::new())
        };
        // The metrics file holds exactly the epochs the checkpoint has (a crash after writing a
        // metrics line but before its checkpoint leaves one line too many).
        write_metrics(&dir.join(METRICS_FILE), &metrics)?;
        students.push(StudentState {
            dir: dir.clone(),
            spec: spec.clone(),
            model: Some(model),
            optim,
            metrics,
        });
    }

    let prefetch = data.labels.as_ref().map(|s| {
        let epochs = (start_epoch..cfg.epochs)
            .flat_map(|e| stream.store_epochs(e))
            .collect();
        s.prefetch(epochs)
    });

    let steps = stream.batches();
    let (c, h, w) = (input.channels, input.height, input.width);
    for epoch in start_epoch..cfg.epochs {
        let mut decoded = Vec::new();
        if let Some(p) = &prefetch {
            for _ in 0..cfg.multi_crop {
                decoded.push(Arc::new(p.next_epoch().ok_or_else(|| {
                    TrainError::config("the label prefetcher stopped early")
                })??));
            }
        }
        let tau = cfg.loss.teacher_tau(epoch);
        progress.epoch_start(epoch, steps);
        let t0 = Instant::now();
        let mut waited = 0.0f64;
        let mut loss_sum = vec![0.0f64; students.len()];
        let mut lr = cfg.optim.lr;
        let mut seen = 0usize;
        let mut loader = stream.epoch(epoch, decoded, tau)?;
        let mut digest = StreamDigest::default();
        for step in 0..steps {
            let tw = Instant::now();
            let batch: Batch = loader
                .next()
                .ok_or_else(|| TrainError::config("the loader ended early"))??;
            waited += tw.elapsed().as_secs_f64();
            if cfg.stream_digest {
                digest.push(&batch);
            }
            let n = batch.n;
            seen += n;
            let x = Tensor::<4>::from_data(TensorData::new(batch.inputs, [n, c, h, w]), &device);
            let y =
                Tensor::<2>::from_data(TensorData::new(batch.hard, [n, input.classes]), &device);
            let t = batch
                .teacher
                .map(|t| Tensor::<2>::from_data(TensorData::new(t, [n, input.classes]), &device));
            lr = cfg.optim.lr_at(epoch, step, steps, cfg.epochs);
            for (si, s) in students.iter_mut().enumerate() {
                let model = s.model.take().expect("model present between steps");
                let logits = model.forward(x.clone());
                let loss = cfg.loss.loss(epoch, logits, y.clone(), t.clone());
                let value = f64::from(
                    loss.clone()
                        .into_data()
                        .try_to_vec::<f32>()
                        .map_err(|e| TrainError::config(format!("reading the loss: {e:?}")))?[0],
                );
                if !value.is_finite() {
                    return Err(TrainError::config(format!(
                        "{}: the loss became {value} at epoch {epoch}, step {step} (lower --lr or \
                         set --clip-grad-norm)",
                        s.dir.display()
                    )));
                }
                loss_sum[si] += value * n as f64;
                if si == 0 {
                    progress.step(value);
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                s.model = Some(s.optim.step(lr, model, grads));
            }
        }
        let images_decoded = loader.images_decoded();
        drop(loader);
        let train_secs = t0.elapsed().as_secs_f64();
        let mut epoch_metrics = Vec::with_capacity(students.len());
        for (si, s) in students.iter_mut().enumerate() {
            let model = s.model.as_ref().expect("model present");
            let report = match &evaluator {
                Some(ev) => Some(ev.evaluate(model, &infer_device)?),
                None => None,
            };
            let m = EpochMetrics {
                epoch,
                lr,
                train_loss: loss_sum[si] / seen.max(1) as f64,
                images_per_sec: seen as f64 / train_secs,
                loader_wait_fraction: waited / train_secs,
                images_decoded,
                stream_xxh3: cfg.stream_digest.then(|| digest.hex()),
                store_epoch: stream.store_epoch(epoch),
                test_accuracy: report.as_ref().map(|r| r.accuracy),
                test_agreement: report.as_ref().and_then(|r| r.agreement),
                test_kl: report.as_ref().and_then(|r| r.kl),
            };
            let meta = CheckpointMeta {
                epochs_done: epoch + 1,
                model: s.spec.clone(),
                input,
                mean: cfg.mean.clone(),
                std: cfg.std.clone(),
            };
            // The metrics line first, then the checkpoint: a crash between them leaves a line
            // that resume drops (and recomputes), never a checkpoint without its line.
            append_metrics(&s.dir.join(METRICS_FILE), &m)?;
            checkpoint::save(
                &s.dir
                    .join(CHECKPOINTS)
                    .join(checkpoint::file_name(epoch + 1)),
                &meta,
                model,
                Some(&s.optim),
            )?;
            let keep = cfg.keep_checkpoints;
            if keep > 0 && epoch + 1 > keep {
                // Only after the new checkpoint is safely on disk.
                let old = s
                    .dir
                    .join(CHECKPOINTS)
                    .join(checkpoint::file_name(epoch + 1 - keep));
                if old.exists() {
                    fs::remove_file(&old).map_err(TrainError::io(&old))?;
                }
            }
            s.metrics.push(m.clone());
            epoch_metrics.push(m);
        }
        progress.epoch_end(&epoch_metrics);
    }

    let mut out = Vec::with_capacity(students.len());
    for s in &students {
        let meta = CheckpointMeta {
            epochs_done: cfg.epochs,
            model: s.spec.clone(),
            input,
            mean: cfg.mean.clone(),
            std: cfg.std.clone(),
        };
        checkpoint::save(
            &s.dir.join(FINAL_FILE),
            &meta,
            s.model.as_ref().expect("model present"),
            None,
        )?;
        out.push(StudentSummary {
            dir: s.dir.clone(),
            model: s.spec.clone(),
            last: s.metrics.last().cloned(),
        });
    }
    Ok(RunSummary {
        run: run.to_path_buf(),
        students: out,
        resumed_from_epoch: start_epoch,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Creates the run directory (refusing a non-empty one unless resuming), or on resume checks
/// the config and returns the epoch to continue from: the last epoch every student has a valid
/// checkpoint of.
fn prepare_run_dir(cfg: &TrainConfig, run: &Path, resume: bool) -> Result<u32, TrainError> {
    let cfg_path = run.join(CONFIG_FILE);
    let write_config = || -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(cfg).expect("config serializes");
        Ok(label_store::writer::write_atomic(
            &cfg_path,
            text.as_bytes(),
        )?)
    };
    if !resume {
        if run.exists()
            && fs::read_dir(run)
                .map_err(TrainError::io(run))?
                .next()
                .is_some()
        {
            return Err(TrainError::config(format!(
                "{} already exists and is not empty: pass --resume to continue it, or choose \
                 another --out",
                run.display()
            )));
        }
        fs::create_dir_all(run).map_err(TrainError::io(run))?;
        write_config()?;
        return Ok(0);
    }
    let text = match fs::read_to_string(&cfg_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Nothing to resume: start fresh, but never over files that are not a run.
            if fs::read_dir(run).is_ok_and(|mut d| d.next().is_some()) {
                return Err(TrainError::config(format!(
                    "{} is not empty and holds no {CONFIG_FILE}: not a run to resume",
                    run.display()
                )));
            }
            fs::create_dir_all(run).map_err(TrainError::io(run))?;
            write_config()?;
            return Ok(0);
        }
        Err(e) => return Err(TrainError::io(&cfg_path)(e)),
    };
    let old: TrainConfig =
        serde_json::from_str(&text).map_err(|e| TrainError::corrupt(&cfg_path, e.to_string()))?;
    if old.identity() != cfg.identity() {
        let (a, b) = (old.identity(), cfg.identity());
        let field = a
            .as_object()
            .zip(b.as_object())
            .and_then(|(a, b)| a.keys().find(|k| a.get(*k) != b.get(*k)).cloned())
            .unwrap_or_default();
        return Err(TrainError::Mismatch(format!(
            "{}: the run was made with another {field:?} than this command's; resume with the \
             same settings (only --epochs may change)",
            cfg_path.display()
        )));
    }
    write_config()?;
    let mut epoch = u32::MAX;
    for dir in cfg.student_dirs(run) {
        // A run continued past its end: the old final student must not pass for the new one
        // while it trains (eval and export fall back to the latest checkpoint).
        let fin = dir.join(FINAL_FILE);
        if let Ok(ck) = Checkpoint::read(&fin)
            && ck.meta.epochs_done != cfg.epochs
        {
            fs::remove_file(&fin).map_err(TrainError::io(&fin))?;
        }
    }
    for dir in cfg.student_dirs(run) {
        epoch = epoch.min(last_checkpoint(&dir)?.map_or(0, |(e, _)| e));
    }
    if epoch > cfg.epochs {
        return Err(TrainError::config(format!(
            "{} already has {epoch} epochs, more than --epochs {}",
            run.display(),
            cfg.epochs
        )));
    }
    Ok(epoch)
}

/// The latest checkpoint in `dir/checkpoints` (epochs done, path). A corrupt latest checkpoint
/// is an error (naming it), not a silent step back: the user decides whether to delete it.
pub fn last_checkpoint(dir: &Path) -> Result<Option<(u32, PathBuf)>, TrainError> {
    let ck = dir.join(CHECKPOINTS);
    let entries = match fs::read_dir(&ck) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(&ck)(e)),
    };
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(TrainError::io(&ck))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(e) = name
            .strip_prefix("epoch-")
            .and_then(|s| s.strip_suffix(".ckpt"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| e > *b) {
            best = Some((e, entry.path()));
        }
    }
    if let Some((_, path)) = &best {
        Checkpoint::read(path)?;
    }
    Ok(best)
}

/// The checkpoint a run directory's student is used from: `student.ckpt` when the run
/// finished, else the checkpoint of `epoch` (epochs done) or the latest one.
pub fn student_checkpoint(dir: &Path, epoch: Option<u32>) -> Result<Checkpoint, TrainError> {
    if let Some(e) = epoch {
        let path = dir.join(CHECKPOINTS).join(checkpoint::file_name(e));
        if !path.exists() {
            return Err(TrainError::config(format!(
                "{}: no checkpoint after epoch {e} ({} missing)",
                dir.display(),
                path.display()
            )));
        }
        return Checkpoint::read(&path);
    }
    let fin = dir.join(FINAL_FILE);
    if fin.exists() {
        return Checkpoint::read(&fin);
    }
    match last_checkpoint(dir)? {
        Some((_, path)) => Checkpoint::read(&path),
        None => {
            let subdirs: Vec<String> = fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().join(CHECKPOINTS).is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Err(TrainError::config(if subdirs.is_empty() {
                format!(
                    "{}: no student checkpoint here (not a run directory?)",
                    dir.display()
                )
            } else {
                format!(
                    "{} holds several students; name one: {}",
                    dir.display(),
                    subdirs.join(", ")
                )
            }))
        }
    }
}

fn read_metrics(path: &Path, epochs: u32) -> Result<Vec<EpochMetrics>, TrainError> {
    let f = File::open(path).map_err(TrainError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(TrainError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let m: EpochMetrics = match serde_json::from_str(&line) {
            Ok(m) => m,
            // A torn last line from a crash mid-write is dropped; anything else is corruption.
            Err(_) if out.len() as u32 >= epochs => break,
            Err(e) => {
                return Err(TrainError::corrupt(path, format!("line {}: {e}", i + 1)));
            }
        };
        if m.epoch < epochs {
            out.push(m);
        }
    }
    if out.len() as u32 != epochs {
        return Err(TrainError::corrupt(
            path,
            format!(
                "has {} epochs of metrics, the checkpoint {epochs}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).expect("metrics serialize"));
        text.push('\n');
    }
    Ok(label_store::writer::write_atomic(path, text.as_bytes())?)
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<(), TrainError> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(TrainError::io(path))?;
    let line = serde_json::to_string(m).expect("metrics serialize") + "\n";
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(TrainError::io(path))
}

/// Reads a run's `metrics.jsonl` (for reports).
pub fn load_metrics(dir: &Path) -> Result<Vec<EpochMetrics>, TrainError> {
    let path = dir.join(METRICS_FILE);
    let text = fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TrainError::corrupt(&path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Evaluates students on a test split (un-augmented, resized to the input size), optionally
/// against a teacher's labels of the same split.
pub struct Evaluator {
    stream: Arc<Stream>,
    teacher: Option<TeacherTest>,
}

/// A teacher's test labels: top-1 class and rebuilt distribution at τ = 1 per sample.
struct TeacherTest {
    top1: Vec<u32>,
    probs: Vec<f32>,
}

/// How the evaluator makes a student's inputs: the student's size and normalization, and the
/// centre-crop fraction for image folders evaluated without teacher test labels.
#[derive(Clone, Copy, Debug)]
pub struct EvalView<'a> {
    pub size: (u32, u32),
    pub mean: &'a [f32],
    pub std: &'a [f32],
    pub crop_pct: f32,
}

impl Evaluator {
    /// An evaluator of `data`; `labels` must be a store of this very split made with `--aug
    /// none` or `--aug center`, whose recipe the evaluator then replays. Without a store, image
    /// folders are evaluated on centre crops (`crop_pct`, 0.875 as timm and torchvision evaluate)
    /// and other datasets on whole images.
    pub fn new(
        data: Arc<dyn Dataset>,
        labels: Option<Arc<LabelStore>>,
        view: EvalView<'_>,
        batch: usize,
        threads: usize,
    ) -> Result<Self, TrainError> {
        let EvalView {
            size,
            mean,
            std,
            crop_pct,
        } = view;
        if data.is_empty() {
            return Err(TrainError::config("the evaluation split has no samples"));
        }
        let classes = data.classes() as usize;
        let recipe = match &labels {
            Some(store) => eval_recipe(store)?,
            None if data.format() == "image-folder" => Recipe::center(crop_pct),
            None => Recipe::none(),
        };
        let sampler = Sampler::new(&recipe, 0, data.len(), size.0, size.1)?;
        let dims = |i: u32| data.dims(i);
        let teacher = match labels {
            Some(store) => {
                check_store(&store, data.as_ref(), size)?;
                if store.samples().start != 0 || store.samples().end != data.len() {
                    return Err(TrainError::Mismatch(format!(
                        "{}: field samples is {}, but evaluation needs every one of the {} samples \
                         (merge the shards first)",
                        store.dir.display(),
                        store.samples(),
                        data.len()
                    )));
                }
                let decoded = store.decode_epoch(0)?;
                let n = data.len() as usize;
                let mut top1 = Vec::with_capacity(n);
                let mut probs = vec![0f32; n * classes];
                let mut rec = formats::Record::empty(0);
                for s in 0..data.len() {
                    decoded.get_into(s, &mut rec)?;
                    // The student sees what the teacher saw: the evaluator's own parameters
                    // must be the stored ones.
                    if rec.aug != sampler.sample(0, s, &dims)? {
                        return Err(TrainError::Mismatch(format!(
                            "{}: record (epoch 0, sample {s}) holds other augmentation than its \
                             recipe {:?} gives; teacher test labels must be made with --aug none \
                             or center",
                            store.dir.display(),
                            recipe.name
                        )));
                    }
                    top1.push(rec.label.indices[0]);
                    let i = s as usize;
                    rec.label
                        .dense_into(1.0, &mut probs[i * classes..(i + 1) * classes]);
                }
                Some(TeacherTest { top1, probs })
            }
            None => None,
        };
        let stream = Stream::new(
            data,
            Labels::Live(Arc::new(sampler)),
            StreamConfig {
                batch,
                threads,
                capacity: 2,
                seed: 0,
                mean: mean.to_vec(),
                std: std.to_vec(),
                size,
                shuffle: false,
                window: 0,
                multi_crop: 1,
                part: crate::stream::Part::WHOLE,
                digest: false,
            },
        )?;
        Ok(Evaluator {
            stream: Arc::new(stream),
            teacher,
        })
    }

    /// Accuracy (and agreement and KL with teacher labels) of `model`, run on `device` in
    /// inference mode (BatchNorm on running statistics).
    pub fn evaluate(&self, model: &Student, device: &Device) -> Result<EvalReport, TrainError> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        let cl = self.stream.classes();
        let (mut correct, mut agree, mut kl, mut n_all) = (0u64, 0u64, 0f64, 0u64);
        let loader = self.stream.epoch(0, Vec::new(), None)?;
        let (w, h) = self.stream.size();
        let (w, h) = (w as usize, h as usize);
        for batch in loader {
            let b = batch?;
            let c = b.inputs.len() / (b.n * w * h);
            let x = Tensor::<4>::from_data(TensorData::new(b.inputs, [b.n, c, h, w]), &device);
            let logits = model
                .forward(x)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| TrainError::config(format!("reading logits: {e:?}")))?;
            for (i, row) in logits.chunks(cl).enumerate() {
                let pred = argmax(row);
                let s = b.samples[i] as usize;
                correct += u64::from(pred == b.labels[i]);
                if let Some(t) = &self.teacher {
                    agree += u64::from(pred == t.top1[s]);
                    kl += kl_from_logits(&t.probs[s * cl..(s + 1) * cl], row);
                }
                n_all += 1;
            }
        }
        let n = n_all.max(1) as f64;
        Ok(EvalReport {
            accuracy: correct as f64 / n,
            agreement: self.teacher.as_ref().map(|_| agree as f64 / n),
            kl: self.teacher.as_ref().map(|_| kl / n),
            samples: n_all,
        })
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `KL(p ‖ softmax(logits))` in nats, in f64.
pub fn kl_from_logits(p: &[f32], logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    p.iter()
        .zip(logits)
        .filter(|(p, _)| **p > 0.0)
        .map(|(&p, &l)| {
            let p = p as f64;
            p * (p.ln() - (l as f64 - lse))
        })
        .sum()
}

/// The recipe of a teacher test store, when it is one the evaluator can replay (`none` or a
/// centre crop); an error naming the store otherwise.
fn eval_recipe(store: &LabelStore) -> Result<Recipe, TrainError> {
    let recipe: Recipe = serde_json::from_value(store.manifest.recipe.clone()).map_err(|e| {
        TrainError::Mismatch(format!(
            "{}: field recipe is not a recipe: {e}",
            store.dir.display()
        ))
    })?;
    if recipe.is_random() {
        return Err(TrainError::Mismatch(format!(
            "{}: recipe {:?} augments; teacher test labels must be made with --aug none or center",
            store.dir.display(),
            recipe.name
        )));
    }
    Ok(recipe)
}

fn default_crop_pct() -> f32 {
    formats::augment::DEFAULT_CROP_PCT
}
