//! `distill train` and `distill eval`: flags to a [`student_train::TrainConfig`], datasets and
//! stores opened, progress bars, and the printed results.

use crate::commands::label::Chosen;
use crate::flags::{
    CodecFlag, DataArgs, EnsembleFlag, FeatureLossFlag, LossFlag, NormFlag, OptimizerFlag,
    ScheduleFlag, parse_size,
};
use anyhow::{Context, Result, bail};
use datasets::{DataFormat, Dataset};
use label_store::LabelStore;
use replay::online::OnlineTeacher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use student_train::EpochMetrics;
use student_train::config::OnlineTeacherInfo;
use student_train::eval::{KlReference, evaluate_checkpoint};
use student_train::export::checkpoint_to_onnx_with;
use student_train::models::{InputShape, ModelFamily, ModelSpec, NormKind};
use student_train::optim::{OptimConfig, OptimizerKind, Schedule};
use student_train::run::Progress;
use student_train::rundir::student_checkpoint;
use student_train::{DeviceChoice, LossKind, RunData, TrainConfig};
use teacher_infer::{LabelConfig, OnlineLabeller};

#[derive(clap::Args)]
#[command(mut_arg("data", |a| a.required(true)))]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Split evaluated after each epoch (test_accuracy); `none` skips evaluation.
    #[arg(long, default_value = "test")]
    pub test_split: String,
    /// Label store of the training split (from `distill label`). Without it only `--loss ce`
    /// works (hard labels, augmentation sampled live from --aug).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Teacher labels of the test split (`distill label --split test --aug none`): adds
    /// test_agreement and test_kl to the metrics.
    #[arg(long)]
    pub eval_labels: Option<PathBuf>,
    #[command(flatten)]
    pub online: OnlineArgs,
    /// Student architecture: mlp, lenet5, resnet20, resnet56, resnet18. Repeat to train several
    /// students from one stream (each batch is decoded and augmented once).
    #[arg(long = "model", required = true)]
    pub models: Vec<ModelFamily>,
    /// Width multiplier of every layer.
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// Normalization layers.
    #[arg(long, value_enum, default_value_t = NormFlag::Batch)]
    pub norm: NormFlag,
    /// Training objective.
    #[arg(long, value_enum, default_value_t = LossFlag::Kd)]
    pub loss: LossFlag,
    /// Weight of the distillation term: w of (1 − w)·CE + w·τ²·KL for kd/eskd (default 0.9),
    /// the KL factor for usi (default 5).
    #[arg(long)]
    pub kd_weight: Option<f32>,
    /// Distillation temperature τ for kd and eskd.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// usi: drop the cross-entropy term.
    #[arg(long)]
    pub kd_only: bool,
    /// eskd: distil for epochs below this, then train on hard labels.
    #[arg(long)]
    pub kd_until_epoch: Option<u32>,
    /// Weight of the feature term, added to the loss: the student's penultimate features,
    /// through a learned linear projector (kept in checkpoints, dropped at export), against
    /// the teacher features of a store labelled with --feature. With --loss features, the
    /// term alone.
    #[arg(long)]
    pub feature_weight: Option<f32>,
    /// How the feature term compares them.
    #[arg(long, value_enum, default_value_t = FeatureLossFlag::Cosine, requires = "feature_weight")]
    pub feature_loss: FeatureLossFlag,
    /// The store's feature head to match (in teacher order: 0 is the first teacher that has
    /// the feature output).
    #[arg(long, default_value_t = 0, requires = "feature_weight")]
    pub feature_head: usize,
    /// The students' class count when neither the store nor the data gives one: an
    /// embedding-only teacher's store (no soft labels) over data read --unlabelled, where the
    /// classifier stays untrained (for fine-tuning later) and only the feature term teaches.
    #[arg(long)]
    pub student_classes: Option<u32>,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerFlag::Sgd)]
    pub optimizer: OptimizerFlag,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for SGD, decoupled for AdamW).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// Learning-rate schedule after warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleFlag::Cosine)]
    pub schedule: ScheduleFlag,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 30)]
    pub lr_step_every: u32,
    /// Step schedule: decay factor.
    #[arg(long, default_value_t = 0.1)]
    pub lr_step_gamma: f64,
    /// Epochs of linear LR warm-up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// Clip each parameter's gradient to this L2 norm.
    #[arg(long)]
    pub clip_grad_norm: Option<f32>,
    /// Student epochs (epoch e replays store epoch e mod E).
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Images per training step (shared by every --model).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Seed of initialization and sample order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Student input size WxH (or S for square). Default: the store's teacher input size with
    /// --labels, else the images' size (they must all have one).
    #[arg(long, value_name = "N|WxH", value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Per-channel input mean after pixel/255, comma-separated (default 0.5).
    #[arg(long, value_delimiter = ',')]
    pub mean: Vec<f32>,
    /// Per-channel input std, comma-separated (default 0.5).
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Augmentation when training without a store: none, light, usi, center or a TOML file.
    #[arg(long, default_value = "none")]
    pub aug: String,
    /// Backend: cpu (burn-flex), ndarray, tch:cpu, tch:cuda:N (needs the `tch` feature).
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// Loader threads (default: the cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Centre-crop fraction of the per-epoch test pass on image folders: the shorter side is
    /// resized to size / crop-pct and the central size × size taken (timm's and torchvision's
    /// evaluation). Teacher test labels (--eval-labels) replay their own recipe instead.
    #[arg(long, default_value_t = formats::recipe::DEFAULT_CROP_PCT)]
    pub crop_pct: f64,
    /// With a store labelled in decode-once blocks over a permutation (image folders with a
    /// mixing recipe): shuffle its blocks, then the records within windows of N blocks, so each
    /// image is decoded once per epoch (about two windows of decoded images are in memory).
    /// 0: shuffle all records, each decoding its own image and partner.
    #[arg(long, value_name = "N", default_value_t = replay::stream::DEFAULT_WINDOW)]
    pub shuffle_window: usize,
    /// FKD's multi-crop: each epoch replays K consecutive stored epochs, one decode of an image
    /// feeding its K crops (K times the records and steps per epoch: divide --epochs by K to
    /// keep the step count). Fewer decodes, but the K crops of an image land close together
    /// in the stream (within a window, or one after another without blocks), so batches are
    /// less independent.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub multi_crop: u32,
    /// Record a digest of every epoch's batches (xxh3 of each batch's inputs, labels and
    /// teacher values) as `stream_xxh3` in metrics.jsonl, to check another replay of the store
    /// against this run bit for bit (distill.Loader from Python computes the same). Costs the
    /// loader one hash pass over every batch.
    #[arg(long)]
    pub stream_digest: bool,
    /// Batches the loader builds ahead of training, in all, whatever --threads is (the loader's
    /// memory: N batches of u8 pixels, twice that when they mix). Default: one per thread and
    /// two more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub prefetch: Option<usize>,
    /// Keep only the last N epoch checkpoints (0: keep every epoch's, e.g. to export an
    /// early-stopped teacher with `export --epoch`).
    #[arg(long, default_value_t = 0)]
    pub keep_checkpoints: u32,
    /// Run directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Online distillation: teachers run on every batch instead of a store read back.
#[derive(clap::Args, Debug)]
pub struct OnlineArgs {
    /// ONNX teacher run on every batch (online distillation) instead of reading a store; repeat
    /// for an ensemble, as for `label`. Without --labels it labels fresh views of --aug and
    /// --seed every epoch (the online baseline of offline stores); with --labels, the store's
    /// replayed views (a check of the store: metrics record `teacher_gap`, the largest
    /// difference from the stored distributions).
    #[arg(long = "teacher")]
    pub teachers: Vec<PathBuf>,
    /// Online teacher: classes kept per label, as `label --topk` (the student learns what a
    /// store of these settings would hold).
    #[arg(long, default_value_t = 10)]
    pub topk: u32,
    /// Online teacher: value codec of the kept logits, as `label --codec`.
    #[arg(long, value_enum, default_value_t = CodecFlag::Q8)]
    pub codec: CodecFlag,
    /// Online teachers: how several combine, as `label --ensemble`.
    #[arg(long, value_enum, default_value_t = EnsembleFlag::Probs)]
    pub ensemble: EnsembleFlag,
    /// Online teacher: pixel scale (its input is pixel/255 · scale, then mean and std).
    #[arg(long, default_value_t = 1.0)]
    pub teacher_scale: f32,
    /// Online teacher: per-channel mean, comma-separated (default: the teacher file's metadata,
    /// else 0), as `label --mean`.
    #[arg(long, value_delimiter = ',')]
    pub teacher_mean: Vec<f32>,
    /// Online teacher: per-channel std, comma-separated (default: the teacher file's metadata,
    /// else 1), as `label --std`.
    #[arg(long, value_delimiter = ',')]
    pub teacher_std: Vec<f32>,
    /// Online teacher: execution provider, cpu, cuda or cuda:N, as `label --device`.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(teacher_infer::Device))]
    pub teacher_device: teacher_infer::Device,
    /// Online teacher: ONNX Runtime intra-op threads (default: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    pub session_threads: usize,
    /// Online teacher: the ONNX Runtime library to load instead of searching.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

/// The online teacher `o` describes, for inputs of `size` of `data` with the recipe `aug`:
/// its labeller, what the run records of it, and the filter its pre-processing names for the
/// recipe (as `label` resolves them). Its errors name the `--teacher-…` flags.
fn open_online(
    o: &OnlineArgs,
    aug: &str,
    data: &Arc<dyn Dataset>,
    size: (u32, u32),
) -> Result<(
    OnlineLabeller,
    OnlineTeacherInfo,
    Option<formats::Interpolation>,
)> {
    let flags = formats::preprocess::Preprocessing {
        mean: (!o.teacher_mean.is_empty()).then(|| o.teacher_mean.clone()),
        std: (!o.teacher_std.is_empty()).then(|| o.teacher_std.clone()),
        interpolation: None,
        crop_pct: None,
    };
    // Online teachers' normalization flags are --teacher-mean and --teacher-std.
    let flag_of = |key: &str| match key {
        "mean" | "std" => format!("--teacher-{key}"),
        other => format!("--{}", other.replace('_', "-")),
    };
    let pre = Chosen::resolve(
        &o.teachers,
        flags,
        aug,
        usize::from(data.channels()),
        &flag_of,
    )?;
    let mut cfg = LabelConfig::new(o.teachers.clone(), Arc::clone(data), PathBuf::new());
    cfg.k = o.topk;
    cfg.codec = o.codec.into();
    cfg.ensemble = o.ensemble.into();
    cfg.scale = o.teacher_scale;
    cfg.mean = pre.mean;
    cfg.std = pre.std;
    cfg.device = o.teacher_device;
    cfg.session_threads = o.session_threads;
    cfg.ort_lib = o.ort_lib.clone();
    let labeller = OnlineLabeller::open(&cfg, size).map_err(|e| {
        // Its pre-processing fields are the --teacher-… flags here.
        anyhow::anyhow!(formats::field::rename(&e.to_string(), |f| match f {
            "mean" | "std" | "scale" => Some(format!("--teacher-{f}")),
            "device" => Some("--teacher-device".into()),
            other => Some(crate::flags::flag_of(other)),
        }))
    })?;
    let info = OnlineTeacherInfo {
        teachers: labeller.teachers().to_vec(),
        k: cfg.k,
        codec: cfg.codec,
        ensemble: cfg.ensemble.name().into(),
        scale: cfg.scale,
        mean: cfg.mean.clone(),
        std: cfg.std.clone(),
    };
    Ok((labeller, info, pre.interpolation))
}

#[derive(clap::Args)]
#[command(mut_arg("data", |a| a.required(true)))]
pub struct EvalArgs {
    /// Run directory (of one student).
    #[arg(long)]
    pub run: PathBuf,
    /// Evaluate the checkpoint after this many epochs instead of the final student.
    #[arg(long)]
    pub epoch: Option<u32>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Teacher labels of the same split made with --aug none: adds agreement and kl.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Centre-crop fraction on image folders without --labels (as for train).
    #[arg(long, default_value_t = formats::recipe::DEFAULT_CROP_PCT)]
    pub crop_pct: f64,
    /// Backend, as for train.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// Print the results as JSON (keys accuracy, agreement, kl, samples).
    #[arg(long)]
    pub json: bool,
}

/// Opens a dataset split, naming the path on failure.
pub fn open_data(
    path: &Path,
    format: Option<DataFormat>,
    split: &str,
    opts: &datasets::OpenOptions,
) -> Result<Arc<dyn Dataset>> {
    let data = datasets::open_with(path, format, split, opts)
        .with_context(|| format!("opening {} (split {split})", path.display()))?;
    Ok(Arc::from(data))
}

/// The decoder to read data with: `store`'s when one is replayed, else this build's.
pub fn store_decoder(store: Option<&LabelStore>) -> Result<datasets::ImageDecoder> {
    Ok(match store {
        Some(s) => replay::stream::store_decoder(s)?,
        None => datasets::ImageDecoder::default(),
    })
}

fn open_store(path: &Path) -> Result<Arc<LabelStore>> {
    Ok(Arc::new(
        LabelStore::open(path).with_context(|| format!("opening {}", path.display()))?,
    ))
}

fn threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The [`LossKind`] the flags describe.
pub fn loss_kind(a: &TrainArgs) -> Result<LossKind> {
    let kd_w = a.kd_weight.unwrap_or(0.9);
    let loss = match a.loss {
        LossFlag::Ce => LossKind::Ce,
        LossFlag::Kd => LossKind::Kd {
            weight: kd_w,
            tau: a.temperature,
        },
        LossFlag::Usi => LossKind::Usi {
            weight: a.kd_weight.unwrap_or(5.0),
            kd_only: a.kd_only,
        },
        LossFlag::Eskd => LossKind::Eskd {
            weight: kd_w,
            tau: a.temperature,
            until: a
                .kd_until_epoch
                .context("--loss eskd needs --kd-until-epoch")?,
        },
        LossFlag::Features => LossKind::Features,
    };
    if a.kd_only && !matches!(loss, LossKind::Usi { .. }) {
        bail!("--kd-only applies to --loss usi");
    }
    Ok(loss)
}

/// The students' classes: a store's are its teacher's (the data's, unless read unlabelled); a
/// store without soft labels has none, so the data's; `--student-classes` only where neither
/// has any.
fn student_classes(a: &TrainArgs, data: &dyn Dataset, store: Option<&LabelStore>) -> Result<u32> {
    let known = store
        .and_then(|s| s.manifest.label_classes())
        .unwrap_or(data.classes());
    match (known, a.student_classes) {
        // An online teacher's classes are set once it is opened.
        (0, None) if !a.online.teachers.is_empty() => Ok(0),
        (_, Some(_)) if !a.online.teachers.is_empty() => {
            bail!(
                "--student-classes with --teacher: the students take the online teacher's classes"
            )
        }
        (0, Some(0)) => bail!("--student-classes 0: a student needs at least one class"),
        (0, Some(c)) => Ok(c),
        (0, None) => bail!(
            "neither {} nor the data (read --unlabelled) gives the students a class count: give \
             --student-classes N (the classifier then stays untrained; the feature term teaches)",
            store.map_or_else(
                || "a store".to_string(),
                |s| format!("{} (no soft labels)", s.dir.display())
            )
        ),
        (c, Some(given)) if given != c => bail!(
            "--student-classes {given}, but the {} has {c}: --student-classes is for data and \
             stores without any",
            if store.is_some_and(|s| s.manifest.has_labels()) {
                "store"
            } else {
                "data"
            }
        ),
        (c, _) => Ok(c),
    }
}

/// The full training configuration from the flags, the opened data and the opened store.
pub fn train_config(
    a: &TrainArgs,
    data: &dyn Dataset,
    store: Option<&LabelStore>,
) -> Result<TrainConfig> {
    let norm = NormKind::from(a.norm);
    let (w, h) = match (&a.size, store.and_then(replay::stream::store_input_size)) {
        (Some(s), _) => *s,
        (None, Some(size)) => size,
        (None, None) => data
            .uniform_dims()
            .context("taking the input size from the images")?,
    };
    let c = usize::from(data.channels());
    let per_channel = |v: &[f32], default: f32| {
        if v.is_empty() {
            vec![default; c]
        } else {
            v.to_vec()
        }
    };
    let optimizer = match a.optimizer {
        OptimizerFlag::Sgd => OptimizerKind::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        OptimizerFlag::Adamw => OptimizerKind::Adamw {
            beta1: 0.9,
            beta2: 0.999,
        },
    };
    let schedule = match a.schedule {
        ScheduleFlag::Cosine => Schedule::Cosine { min_factor: 0.0 },
        ScheduleFlag::Step => Schedule::Step {
            every: a.lr_step_every,
            gamma: a.lr_step_gamma,
        },
        ScheduleFlag::Constant => Schedule::Constant,
    };
    Ok(TrainConfig {
        data: a.data.describe()?,
        split: a.data.split_or("train"),
        labels: a.labels.as_ref().map(|p| p.display().to_string()),
        labels_identity: store.map(student_train::config::store_identity),
        eval_labels: a.eval_labels.as_ref().map(|p| p.display().to_string()),
        models: a
            .models
            .iter()
            .map(|m| ModelSpec {
                family: *m,
                width: a.width,
                norm,
            })
            .collect(),
        input: InputShape {
            channels: c,
            height: h as usize,
            width: w as usize,
            classes: student_classes(a, data, store)? as usize,
        },
        loss: loss_kind(a)?,
        optim: OptimConfig {
            optimizer,
            lr: a.lr,
            weight_decay: a.weight_decay,
            schedule,
            warmup_epochs: a.warmup_epochs,
            clip_grad_norm: a.clip_grad_norm,
        },
        epochs: a.epochs,
        batch: a.batch,
        seed: a.seed,
        mean: per_channel(&a.mean, 0.5),
        std: per_channel(&a.std, 0.5),
        aug: if a.labels.is_some() {
            None
        } else {
            Some(replay::sampler::load_recipe(&a.aug)?)
        },
        device: a.device,
        threads: threads(a.threads),
        keep_checkpoints: a.keep_checkpoints,
        eval_crop_pct: a.crop_pct,
        shuffle_window: a.shuffle_window,
        multi_crop: a.multi_crop,
        stream_digest: a.stream_digest,
        prefetch: a.prefetch,
        online: None,
        feature: a
            .feature_weight
            .map(|weight| student_train::config::FeatureTerm {
                head: a.feature_head,
                weight,
                loss: a.feature_loss.into(),
            }),
    })
}

/// A progress bar per epoch, and a line of metrics after each.
pub struct Bars {
    bar: Option<indicatif::ProgressBar>,
    hidden: bool,
    epochs: u32,
}

impl Bars {
    /// Bars for a run of `epochs` epochs; `hidden` draws nothing (for --json).
    pub fn new(hidden: bool, epochs: u32) -> Self {
        Bars {
            bar: None,
            hidden,
            epochs,
        }
    }
}

impl Progress for Bars {
    fn epoch_start(&mut self, epoch: u32, steps: usize) {
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} batches  {per_sec}  ETA {eta}  loss {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        if self.hidden {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        self.bar = Some(bar);
    }

    fn step(&mut self, loss: Option<f64>) {
        if let Some(b) = &self.bar {
            b.inc(1);
            if let Some(loss) = loss {
                b.set_message(format!("{loss:.4}"));
            }
        }
    }

    fn epoch_end(&mut self, metrics: &[EpochMetrics]) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.hidden {
            return;
        }
        for m in metrics {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
            eprintln!(
                "epoch {:>3}  loss {:.4}  lr {:.4}  {:>7.0} img/s  loader wait {:>5.1}%  {} decoded  test acc {}  agreement {}  kl {}",
                m.epoch + 1,
                m.train_loss,
                m.lr,
                m.images_per_sec,
                100.0 * m.loader_wait_fraction,
                m.images_decoded,
                pct(m.test_accuracy),
                pct(m.test_agreement),
                m.test_kl.map_or("-".into(), |v| match m.test_kl_vs {
                    Some(KlReference::TopK) => format!("{v:.4} (vs top-k rebuild)"),
                    _ => format!("{v:.4}"),
                }),
            );
        }
    }
}

/// `distill train`.
pub fn train(a: TrainArgs) -> Result<ExitCode> {
    let labels = a.labels.as_deref().map(open_store).transpose()?;
    let eval_labels = a.eval_labels.as_deref().map(open_store).transpose()?;
    let classes = labels.as_ref().and_then(|s| s.manifest.label_classes());
    let train_data = a
        .data
        .open(&a.data.split_or("train"), classes, labels.as_deref())?;
    let mut cfg = train_config(&a, train_data.as_ref(), labels.as_deref())?;
    let teacher: Option<Arc<dyn OnlineTeacher>> = if a.online.teachers.is_empty() {
        None
    } else {
        let size = (cfg.input.width as u32, cfg.input.height as u32);
        let (labeller, info, filter) = open_online(&a.online, &a.aug, &train_data, size)?;
        // Fresh views are resized with the filter the teacher's pre-processing names (as
        // `label` would resize them); a store's keep their own.
        if let (Some(f), Some(recipe)) = (filter, cfg.aug.as_mut()) {
            recipe.interpolation = f;
        }
        cfg.input.classes = labeller.classes() as usize;
        cfg.online = Some(info);
        Some(Arc::new(labeller))
    };
    // The test split is read as the store that labelled it decoded it (and without hard
    // labels where that store's data had none, or the training data has none).
    // Tar shards of a test split take the training data's class count where the store has none
    // (a test split may lack the top class).
    let test_classes = classes.or(Some(cfg.input.classes as u32).filter(|&c| c > 0));
    let test = match a.test_split.as_str() {
        "none" => None,
        split => Some(a.data.open_first(
            split,
            test_classes,
            eval_labels.as_deref().or(labels.as_deref()),
        )?),
    };
    let data = RunData {
        train: train_data,
        labels,
        test,
        eval_labels,
        teacher,
    };
    let mut bars = Bars::new(a.json, a.epochs);
    let summary = student_train::train(&cfg, &data, &a.out, a.resume, &mut bars)
        .with_context(|| format!("training into {}", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        for s in &summary.students {
            let acc = s
                .last
                .as_ref()
                .and_then(|m| m.test_accuracy)
                .map_or("n/a".into(), |v| format!("{:.2}%", 100.0 * v));
            writeln!(
                out,
                "trained {} ({} epochs) in {:.1}s: test accuracy {acc}; student in {}",
                s.model.family,
                cfg.epochs,
                summary.seconds,
                s.dir.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `distill eval`.
pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    let ck = student_checkpoint(&a.run, a.epoch)?;
    let labels = a.labels.as_deref().map(open_store).transpose()?;
    let split = a.data.split_or("test");
    let data = a.data.open(
        &split,
        Some(ck.meta.input.classes as u32),
        labels.as_deref(),
    )?;
    let device = a.device.inference().map_err(anyhow::Error::msg)?;
    let r = evaluate_checkpoint(
        &ck,
        data,
        labels,
        a.batch,
        threads(None),
        a.crop_pct,
        &device,
    )
    .with_context(|| {
        format!(
            "evaluating on {} (split {split})",
            a.data.describe().unwrap_or_else(|_| "?".into())
        )
    })?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        let accuracy = r.accuracy.map_or("n/a (no hard labels)".into(), |a| {
            format!("{:.2}%", 100.0 * a)
        });
        write!(
            out,
            "{}: accuracy {accuracy} on {} samples",
            ck.path.display(),
            r.samples
        )?;
        if let (Some(ag), Some(kl)) = (r.agreement, r.kl) {
            write!(
                out,
                ", top-1 agreement {:.2}%, KL(teacher ‖ student) {kl:.4} nats (vs the {} \
                 teacher distribution)",
                100.0 * ag,
                r.kl_vs.map_or("?", KlReference::name)
            )?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run directory (of one student).
    pub run: PathBuf,
    /// ONNX file to write.
    #[arg(long)]
    pub onnx: PathBuf,
    /// Export the checkpoint after this many epochs (e.g. an early-stopped teacher) instead of
    /// the final student.
    #[arg(long)]
    pub epoch: Option<u32>,
    /// Also output the student's penultimate features (`[batch, D]`, what its classifier reads)
    /// under this name: a feature teacher for `distill label --feature NAME`.
    #[arg(long, value_name = "NAME")]
    pub feature_output: Option<String>,
    /// Print what was exported as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `distill export`.
pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let ck = student_checkpoint(&a.run, a.epoch)?;
    let bytes = checkpoint_to_onnx_with(&ck, a.feature_output.as_deref())
        .with_context(|| format!("exporting {}", ck.path.display()))?;
    label_store::writer::write_atomic(&a.onnx, &bytes)?;
    let i = ck.meta.input;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "onnx": a.onnx, "checkpoint": ck.path, "epochs_done": ck.meta.epochs_done,
                "model": ck.meta.model, "input": [i.channels, i.height, i.width],
                "classes": i.classes, "feature_output": a.feature_output, "bytes": bytes.len(),
            })
        )?;
    } else {
        writeln!(
            out,
            "exported {} ({} after {} epochs) to {}: input [batch, {}, {}, {}] pixels in [0, 1], output [batch, {}] logits, opset 17, {} bytes",
            ck.meta.model.family,
            ck.path.display(),
            ck.meta.epochs_done,
            a.onnx.display(),
            i.channels,
            i.height,
            i.width,
            i.classes,
            bytes.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
