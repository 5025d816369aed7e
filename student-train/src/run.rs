//! The training loop: every student of a run trains from one [`Stream`], epoch by epoch, with
//! an evaluation, a metrics line and a checkpoint per student after each epoch. What defines a
//! run is in [`crate::config`], its directory on disk in [`crate::rundir`], the evaluation in
//! [`crate::eval`].
//!
//! A run directory holds `config.json`, and per student `metrics.jsonl` (one JSON line per
//! epoch), `checkpoints/epoch-NNNN.ckpt` (parameters and optimizer state after each epoch) and
//! `student.ckpt` (the final parameters). One student trains in the run directory itself;
//! several (`--model` repeated) train from one stream, each in a subdirectory named after it.

use crate::checkpoint::{self, Checkpoint, CheckpointMeta, ProjectorState};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::eval::{EvalView, Evaluator};
use crate::input::upload;
use crate::models::{ModelSpec, Student};
use crate::rundir::{
    CHECKPOINTS, EpochMetrics, FINAL_FILE, METRICS_FILE, append_metrics, prepare_run_dir,
    prune_checkpoints, read_metrics, write_metrics,
};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use datasets::Dataset;
use formats::Recipe;
use label_store::LabelStore;
use replay::online::OnlineTeacher;
use replay::sampler::Sampler;
use replay::stream::{Batch, Source, Stream, StreamConfig, StreamDigest};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The data a run trains and evaluates on.
pub struct RunData {
    pub train: Arc<dyn Dataset>,
    pub labels: Option<Arc<LabelStore>>,
    /// The test split, for `test_accuracy` after each epoch.
    pub test: Option<Arc<dyn Dataset>>,
    pub eval_labels: Option<Arc<LabelStore>>,
    /// A teacher run on every batch (online distillation: `TrainConfig::online` says which),
    /// on fresh views, or on the store's replayed views when `labels` is given too.
    pub teacher: Option<Arc<dyn OnlineTeacher>>,
}

/// What the caller sees of a run while it trains.
pub trait Progress {
    /// An epoch of `steps` batches starts.
    fn epoch_start(&mut self, _epoch: u32, _steps: usize) {}
    /// A batch was trained; `loss` is the first student's.
    /// A batch was trained; `loss` is the first student's mean loss over the batches since the
    /// last value, given every [`LOSS_READ_EVERY`] steps and at the epoch's end.
    fn step(&mut self, _loss: Option<f64>) {}
    /// Student `student` saved its checkpoint after `epochs_done` epochs (all of an epoch's
    /// checkpoints are saved before old ones are pruned).
    fn checkpoint_saved(&mut self, _student: usize, _epochs_done: u32) {}
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
    /// The feature term's projector (student features → teacher features) and its optimizer.
    projector: Option<(Linear, ModuleOptimizer)>,
}

/// Steps between reads of the losses from the device (and at each epoch's end): each read
/// waits for the device to finish, so reading every step would stop upload and compute from
/// overlapping.
pub const LOSS_READ_EVERY: usize = 32;

/// One student's training loss over an epoch: `n`-weighted batch losses summed on the device
/// since the last read, and on the host before.
#[derive(Default)]
struct LossSum {
    pending: Option<Tensor<1>>,
    /// Images, first and last step of the pending sum.
    pending_n: usize,
    pending_from: usize,
    pending_to: usize,
    /// Sum of `loss × n` read so far.
    total: f64,
}

impl LossSum {
    fn add(&mut self, loss: &Tensor<1>, n: usize, step: usize) {
        let part = loss.clone().detach().mul_scalar(n as f32);
        if self.pending.is_none() {
            self.pending_from = step;
        }
        self.pending = Some(match self.pending.take() {
            Some(p) => p + part,
            None => part,
        });
        self.pending_n += n;
        self.pending_to = step;
    }

    /// Reads the pending sum (one device sync): the mean loss over its images, or an error
    /// naming the steps when it is not finite.
    fn read(&mut self, epoch: u32, dir: &Path) -> Result<Option<f64>, TrainError> {
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        let sum = f64::from(
            p.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| TrainError::config(format!("reading the loss: {e:?}")))?[0],
        );
        let n = std::mem::take(&mut self.pending_n);
        if !sum.is_finite() {
            return Err(TrainError::config(format!(
                "{}: the loss became {sum} at epoch {epoch}, within steps {}..={} (lower `lr` \
                 or set `clip_grad_norm`)",
                dir.display(),
                self.pending_from,
                self.pending_to
            )));
        }
        self.total += sum;
        Ok(Some(sum / n.max(1) as f64))
    }
}

/// Trains the run `cfg` into `run` (creating it, or continuing it with `resume`).
pub fn train(
    cfg: &TrainConfig,
    data: &RunData,
    run: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<RunSummary, TrainError> {
    let mut r = StudentRun::init(cfg, data, run, resume)?;
    for epoch in r.start_epoch..cfg.epochs {
        r.epoch(epoch, progress)?;
    }
    r.finish()
}

/// A training run in progress: its stream and evaluator, its students (fresh, or resumed from
/// their last common checkpoint), and what an exported student declares of its input.
pub struct StudentRun<'a> {
    cfg: &'a TrainConfig,
    run: PathBuf,
    started: Instant,
    device: Device,
    infer_device: Device,
    stream: Arc<Stream>,
    evaluator: Option<Evaluator>,
    students: Vec<StudentState>,
    /// The first epoch this process trains (> 0 when resumed).
    start_epoch: u32,
    /// The store's epochs, decoded ahead of the epochs that replay them.
    prefetch: Option<label_store::Prefetcher>,
    /// The filter the store's views were resized with (`None`: format version 1's kernel).
    interpolation: Option<formats::Interpolation>,
    /// The centre crop an image-folder student is evaluated with.
    crop_pct: Option<f64>,
}

impl<'a> StudentRun<'a> {
    /// Checks the config and the data, builds the stream and the evaluator, and creates the
    /// run directory or, with `resume`, reads every student back from its last checkpoint.
    pub fn init(
        cfg: &'a TrainConfig,
        data: &RunData,
        run: &Path,
        resume: bool,
    ) -> Result<Self, TrainError> {
        let started = Instant::now();
        cfg.validate()?;
        if data.teacher.is_some() != cfg.online.is_some() {
            return Err(TrainError::config(
                "an online teacher must be given with its description (`online`) and only then",
            ));
        }
        let input = cfg.input;
        input
            .check_data(data.train.as_ref(), "the training split")
            .map_err(TrainError::Mismatch)?;
        let device = cfg.device.training().map_err(TrainError::Config)?;
        let infer_device = device.clone().without_autodiff();
        // What an exported student declares of its input: the filter its views were resized
        // with, and (on image folders) the centre crop it is evaluated with.
        let interpolation = match &data.labels {
            Some(s) => match s.view_rule()?.kernel {
                formats::view::Kernel::Pillow(f) => Some(f),
                formats::view::Kernel::Legacy => None,
            },
            None => Some(
                cfg.aug
                    .as_ref()
                    .map(|r| r.interpolation)
                    .unwrap_or_default(),
            ),
        };
        // After the stream, which checks a store against the data (a list read otherwise).
        let stream = Arc::new(Self::stream(cfg, data)?);
        if !data.train.labelled() && cfg.loss.needs_hard_labels(cfg.epochs) {
            return Err(TrainError::config(
                "the training data has no hard labels (`unlabelled`): this `loss` needs them; \
                 train teacher-only (kd with `kd_weight` 1, or usi with `kd_only`)",
            ));
        }
        if let Some(store) = &data.labels
            && !store.manifest.has_labels()
            && data.teacher.is_none()
            && (0..cfg.epochs).any(|e| cfg.loss.teacher_tau(e).is_some())
        {
            return Err(TrainError::config(format!(
                "{} holds no soft labels (an embedding-only teacher's store, k = 0): this `loss` \
                 needs teacher labels; train with the features loss (the feature term alone) or \
                 ce with a feature term (`feature_weight`)",
                store.dir.display()
            )));
        }
        let evaluator = Self::evaluator(cfg, data)?;
        let start_epoch = prepare_run_dir(cfg, run, resume)?;
        let feature_dim = stream.feature_store().map(|f| f.dim());
        let students = Self::students(cfg, run, start_epoch, &device, feature_dim)?;
        let prefetch = data.labels.as_ref().map(|s| {
            let epochs = (start_epoch..cfg.epochs)
                .flat_map(|e| stream.store_epochs(e))
                .collect();
            s.prefetch_with_features(epochs, stream.feature_store().cloned())
        });
        Ok(StudentRun {
            cfg,
            run: run.to_path_buf(),
            started,
            device,
            infer_device,
            stream,
            evaluator,
            students,
            start_epoch,
            prefetch,
            interpolation,
            crop_pct: data.train.encoded().then_some(cfg.eval_crop_pct),
        })
    }

    /// The training stream: the store's records replayed, or (without a store) views sampled
    /// live from the recipe with hard labels only.
    fn stream(cfg: &TrainConfig, data: &RunData) -> Result<Stream, TrainError> {
        let size = (cfg.input.width as u32, cfg.input.height as u32);
        let labels = match &data.labels {
            Some(s) => Source::Store(Arc::clone(s)),
            None => {
                let recipe = cfg.aug.clone().unwrap_or_else(Recipe::none);
                let sampler = Sampler::new(&recipe, cfg.seed, data.train.len(), size.0, size.1)?;
                Source::Sampler(Arc::new(sampler))
            }
        };
        let stream = Stream::new(
            Arc::clone(&data.train),
            labels,
            StreamConfig {
                window: cfg.shuffle_window,
                multi_crop: cfg.multi_crop,
                digest: cfg.stream_digest,
                prefetch: cfg
                    .prefetch
                    .unwrap_or_else(|| replay::stream::default_prefetch(cfg.threads.max(1))),
                pixels: true,
                ..StreamConfig::training(
                    cfg.batch,
                    cfg.threads.max(1),
                    cfg.seed,
                    cfg.mean.clone(),
                    cfg.std.clone(),
                    size,
                )
            },
        )?;
        let stream = match &data.teacher {
            Some(t) => stream.with_teacher(Arc::clone(t))?,
            None => stream,
        };
        Ok(match cfg.feature {
            Some(f) => stream.with_features(f.head)?,
            None => stream,
        })
    }

    /// The evaluation after each epoch, on the test split when there is one.
    fn evaluator(cfg: &TrainConfig, data: &RunData) -> Result<Option<Evaluator>, TrainError> {
        let Some(test) = &data.test else {
            if data.eval_labels.is_some() {
                return Err(TrainError::config(
                    "`eval_labels` needs the test split of the data to evaluate on",
                ));
            }
            return Ok(None);
        };
        // A test store measures agreement and KL when it has soft labels, the feature cosine
        // when it has the head the run matches.
        let measures = |s: &LabelStore| {
            s.manifest.has_labels()
                || cfg
                    .feature
                    .is_some_and(|f| s.feature_heads().len() > f.head)
        };
        if !test.labelled() && !data.eval_labels.as_deref().is_some_and(measures) {
            // Neither hard labels nor the teacher's: nothing to measure on it.
            tracing::warn!(
                "the test split has no hard labels, and no teacher test labels (`eval_labels`) \
                 with soft labels or the run's feature head were given: no test metrics"
            );
            return Ok(None);
        }
        cfg.input
            .check_data(test.as_ref(), "the test split")
            .map_err(TrainError::Mismatch)?;
        let ev = Evaluator::new(
            Arc::clone(test),
            data.eval_labels.clone(),
            EvalView {
                size: (cfg.input.width as u32, cfg.input.height as u32),
                mean: &cfg.mean,
                std: &cfg.std,
                crop_pct: cfg.eval_crop_pct,
            },
            cfg.batch.max(256),
            cfg.threads.max(1),
        )?;
        // The feature cosine, when the teacher's test store has the head the run matches.
        Ok(Some(match (&cfg.feature, &data.eval_labels) {
            (Some(f), Some(store)) if store.feature_heads().len() > f.head => {
                ev.with_features(store, f.head)?
            }
            _ => ev,
        }))
    }

    /// Every student of the run: fresh (seeded per student), or read back from its checkpoint
    /// after `start_epoch` epochs with its optimizer state and metrics.
    fn students(
        cfg: &TrainConfig,
        run: &Path,
        start_epoch: u32,
        device: &Device,
        feature_dim: Option<usize>,
    ) -> Result<Vec<StudentState>, TrainError> {
        let dirs = cfg.student_dirs(run);
        let mut students = Vec::with_capacity(dirs.len());
        for (i, (dir, spec)) in dirs.iter().zip(&cfg.models).enumerate() {
            fs::create_dir_all(dir.join(CHECKPOINTS)).map_err(TrainError::io(dir))?;
            let mut optim = cfg.optim.init();
            let mut projector = None;
            let (model, metrics) = if start_epoch > 0 {
                let ck = Checkpoint::read(
                    &dir.join(CHECKPOINTS)
                        .join(checkpoint::file_name(start_epoch)),
                )?;
                if ck.meta.model != *spec || ck.meta.input != cfg.input {
                    return Err(TrainError::corrupt(
                        &ck.path,
                        "the checkpoint holds another model than the run's config",
                    ));
                }
                optim = ck.optimizer(optim)?;
                let metrics = read_metrics(&dir.join(METRICS_FILE), start_epoch)?;
                if feature_dim.is_some() {
                    let p = ck.projector(device)?.ok_or_else(|| {
                        TrainError::corrupt(
                            &ck.path,
                            "holds no feature projector, but the run has a feature term",
                        )
                    })?;
                    projector = Some((p, ck.projector_optimizer(cfg.optim.init())?));
                }
                (ck.student(device)?, metrics)
            } else {
                device.seed(cfg.seed.wrapping_add(i as u64));
                let model = spec
                    .init(&cfg.input, device)
                    .map_err(TrainError::Mismatch)?;
                if let Some(d) = feature_dim {
                    let p = LinearConfig::new(model.feature_dim(), d).init(device);
                    projector = Some((p, cfg.optim.init()));
                }
                (model, Vec::new())
            };
            // The metrics file holds exactly the epochs the checkpoint has (a crash after
            // writing a metrics line but before its checkpoint leaves one line too many).
            write_metrics(&dir.join(METRICS_FILE), &metrics)?;
            students.push(StudentState {
                dir: dir.clone(),
                spec: spec.clone(),
                model: Some(model),
                optim,
                metrics,
                projector,
            });
        }
        Ok(students)
    }

    /// Trains every student one epoch over the stream, then ends the epoch (evaluation,
    /// metrics, checkpoints); returns the epoch's metrics, one per student.
    pub fn epoch(
        &mut self,
        epoch: u32,
        progress: &mut dyn Progress,
    ) -> Result<Vec<EpochMetrics>, TrainError> {
        let cfg = self.cfg;
        let mut decoded = Vec::new();
        if let Some(p) = &self.prefetch {
            for _ in 0..cfg.multi_crop {
                decoded.push(Arc::new(p.next_epoch().ok_or_else(|| {
                    TrainError::config("the label prefetcher stopped early")
                })??));
            }
        }
        let steps = self.stream.batches();
        progress.epoch_start(epoch, steps);
        let t0 = Instant::now();
        let mut pass = EpochPass {
            losses: self.students.iter().map(|_| LossSum::default()).collect(),
            lr: cfg.optim.lr,
            seen: 0,
            waited: 0.0,
            seconds: 0.0,
            images_decoded: 0,
            digest: StreamDigest::default(),
            inputs: StreamDigest::default(),
            teacher_gap: None,
        };
        let mut loader = self
            .stream
            .epoch(epoch, decoded, cfg.loss.teacher_tau(epoch))?;
        for step in 0..steps {
            let tw = Instant::now();
            let batch: Batch = loader
                .next()
                .ok_or_else(|| TrainError::config("the loader ended early"))??;
            pass.waited += tw.elapsed().as_secs_f64();
            let shown = self.step(batch, epoch, step, steps, &mut pass)?;
            progress.step(shown);
        }
        pass.images_decoded = loader.images_decoded();
        drop(loader);
        pass.seconds = t0.elapsed().as_secs_f64();
        let metrics = self.end_epoch(epoch, &pass, progress)?;
        progress.epoch_end(&metrics);
        Ok(metrics)
    }

    /// One batch through every student: forward, loss, backward, optimizer step. Returns the
    /// first student's mean loss when the losses were read this step.
    fn step(
        &mut self,
        batch: Batch,
        epoch: u32,
        step: usize,
        steps: usize,
        pass: &mut EpochPass,
    ) -> Result<Option<f64>, TrainError> {
        let (cfg, input) = (self.cfg, self.cfg.input);
        if let Some(d) = batch.digest {
            pass.digest.push(d);
        }
        if let Some(d) = batch.inputs_digest {
            pass.inputs.push(d);
        }
        if let Some(g) = batch.teacher_gap {
            pass.teacher_gap = Some(pass.teacher_gap.unwrap_or(0f32).max(g));
        }
        let (n, hard_rows) = (batch.n, batch.hard_rows());
        pass.seen += n;
        let chw = (input.channels, input.height, input.width);
        let x = upload(batch.inputs, n, chw, &cfg.mean, &cfg.std, &self.device);
        // Data without classes (read unlabelled, a store without soft labels, the students'
        // count given) has no hard-label rows to carry: zeros, which no loss term reads.
        let hard = if batch.hard.is_empty() {
            vec![0f32; n * input.classes]
        } else {
            batch.hard
        };
        let y = Tensor::<2>::from_data(TensorData::new(hard, [n, input.classes]), &self.device);
        let t = batch
            .teacher
            .map(|t| Tensor::<2>::from_data(TensorData::new(t, [n, input.classes]), &self.device));
        let tf = batch.features.map(|f| {
            let d = f.len() / n.max(1);
            Tensor::<2>::from_data(TensorData::new(f, [n, d]), &self.device)
        });
        pass.lr = cfg.optim.lr_at(epoch, step, steps, cfg.epochs);
        for (si, s) in self.students.iter_mut().enumerate() {
            let model = s.model.take().expect("model present between steps");
            // The feature term, when the run has one and the batch carries the features.
            let feature = match (&s.projector, &tf, cfg.feature) {
                (Some((p, _)), Some(tf), Some(term)) => Some((p, tf, term)),
                _ => None,
            };
            let (logits, feature) = match feature {
                Some((p, tf, term)) => {
                    let (features, logits) = model.forward_features(x.clone());
                    let f = crate::loss::feature_loss(p.forward(features), tf.clone(), term.loss);
                    (logits, Some(f.mul_scalar(term.weight)))
                }
                None => (model.forward(x.clone()), None),
            };
            let with_feature = feature.is_some();
            let label = cfg
                .loss
                .loss_rows(epoch, logits, y.clone(), hard_rows, t.clone());
            let loss = match feature {
                Some(f) => label + f,
                None => label,
            };
            pass.losses[si].add(&loss, n, step);
            let mut grads = loss.backward();
            if with_feature && let Some((p, mut po)) = s.projector.take() {
                let pg = GradientsParams::from_module(&mut grads, &p);
                s.projector = Some((po.step(pass.lr, p, pg), po));
            }
            let grads = GradientsParams::from_grads(grads, &model);
            s.model = Some(s.optim.step(pass.lr, model, grads));
        }
        // Reading a loss waits for the device: only every LOSS_READ_EVERY steps.
        let mut shown = None;
        if (step + 1).is_multiple_of(LOSS_READ_EVERY) || step + 1 == steps {
            for (si, s) in self.students.iter().enumerate() {
                let mean = pass.losses[si].read(epoch, &s.dir)?;
                if si == 0 {
                    shown = mean;
                }
            }
        }
        Ok(shown)
    }

    /// The end of an epoch: one evaluation pass for every student, then per student its
    /// metrics line and checkpoint, then (all saved) the pruning of old checkpoints.
    fn end_epoch(
        &mut self,
        epoch: u32,
        pass: &EpochPass,
        progress: &mut dyn Progress,
    ) -> Result<Vec<EpochMetrics>, TrainError> {
        let cfg = self.cfg;
        // One pass over the test split feeds every student.
        let reports = match &self.evaluator {
            Some(ev) => {
                let models: Vec<(&Student, Option<&Linear>)> = self
                    .students
                    .iter()
                    .map(|s| {
                        (
                            s.model.as_ref().expect("model present"),
                            s.projector.as_ref().map(|p| &p.0),
                        )
                    })
                    .collect();
                ev.evaluate_projected(&models, &self.infer_device)?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            None => vec![None; self.students.len()],
        };
        let mut epoch_metrics = Vec::with_capacity(self.students.len());
        for (si, report) in reports.into_iter().enumerate() {
            let m = EpochMetrics {
                epoch,
                lr: pass.lr,
                train_loss: pass.losses[si].total / pass.seen.max(1) as f64,
                images_per_sec: pass.seen as f64 / pass.seconds,
                loader_wait_fraction: pass.waited / pass.seconds,
                images_decoded: pass.images_decoded,
                stream_xxh3: cfg.stream_digest.then(|| pass.digest.hex()),
                inputs_xxh3: cfg.stream_digest.then(|| pass.inputs.hex()),
                teacher_gap: pass.teacher_gap.map(f64::from),
                store_epoch: self.stream.store_epoch(epoch),
                test_accuracy: report.as_ref().and_then(|r| r.accuracy),
                test_agreement: report.as_ref().and_then(|r| r.agreement),
                test_kl: report.as_ref().and_then(|r| r.kl),
                test_kl_vs: report.as_ref().and_then(|r| r.kl_vs),
                test_feature_cosine: report.as_ref().and_then(|r| r.feature_cosine),
            };
            let meta = self.meta(si, epoch + 1);
            let s = &mut self.students[si];
            // The metrics line first, then the checkpoint: a crash between them leaves a line
            // that resume drops (and recomputes), never a checkpoint without its line.
            append_metrics(&s.dir.join(METRICS_FILE), &m)?;
            checkpoint::save_with(
                &s.dir
                    .join(CHECKPOINTS)
                    .join(checkpoint::file_name(epoch + 1)),
                &meta,
                s.model.as_ref().expect("model present"),
                Some(&s.optim),
                s.projector.as_ref().map(|(p, po)| ProjectorState {
                    projector: p,
                    optim: Some(po),
                }),
            )?;
            progress.checkpoint_saved(si, epoch + 1);
            s.metrics.push(m.clone());
            epoch_metrics.push(m);
        }
        // Only once every student has its new checkpoint on disk: resume continues from the
        // last epoch all students have, which must still be there after a crash mid-save.
        if cfg.keep_checkpoints > 0 {
            for s in &self.students {
                prune_checkpoints(&s.dir, cfg.keep_checkpoints)?;
            }
        }
        Ok(epoch_metrics)
    }

    /// What student `si`'s checkpoint after `epochs_done` epochs records of it.
    fn meta(&self, si: usize, epochs_done: u32) -> CheckpointMeta {
        CheckpointMeta {
            epochs_done,
            model: self.students[si].spec.clone(),
            input: self.cfg.input,
            mean: self.cfg.mean.clone(),
            std: self.cfg.std.clone(),
            interpolation: self.interpolation,
            crop_pct: self.crop_pct,
            projector: None,
        }
    }

    /// Saves every student's final parameters and reports the run.
    pub fn finish(self) -> Result<RunSummary, TrainError> {
        let mut out = Vec::with_capacity(self.students.len());
        for (si, s) in self.students.iter().enumerate() {
            // The projector stays with the student (born-again feature students, evaluation);
            // export drops it.
            checkpoint::save_with(
                &s.dir.join(FINAL_FILE),
                &self.meta(si, self.cfg.epochs),
                s.model.as_ref().expect("model present"),
                None,
                s.projector.as_ref().map(|(p, _)| ProjectorState {
                    projector: p,
                    optim: None,
                }),
            )?;
            out.push(StudentSummary {
                dir: s.dir.clone(),
                model: s.spec.clone(),
                last: s.metrics.last().cloned(),
            });
        }
        Ok(RunSummary {
            run: self.run,
            students: out,
            resumed_from_epoch: self.start_epoch,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// What one epoch's pass over the stream measured.
struct EpochPass {
    losses: Vec<LossSum>,
    /// The learning rate of the last step.
    lr: f64,
    /// Images trained on.
    seen: usize,
    /// Seconds spent waiting for the loader.
    waited: f64,
    /// Seconds of the whole pass.
    seconds: f64,
    images_decoded: u64,
    digest: StreamDigest,
    /// The digest of the inputs alone.
    inputs: StreamDigest,
    /// The largest online-teacher-to-store difference seen (online over a store).
    teacher_gap: Option<f32>,
}
