//! `distill label`: flags to a [`teacher_infer::LabelConfig`], the writer lock taken first, a
//! progress bar, and the printed summary.

use crate::flags::{
    CodecFlag, DataArgs, EnsembleFlag, InterpolationFlag, parse_bytes, parse_shard, parse_size,
};
use anyhow::{Context, Result, bail};
use datasets::Dataset;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use teacher_infer::LabelConfig;

#[derive(clap::Args)]
#[command(mut_arg("data", |a| a.required(true)))]
pub struct LabelArgs {
    /// ONNX teacher model; repeat for an ensemble (all must have the same class count).
    #[arg(long = "teacher", required = true)]
    pub teachers: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Store directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Augmented copies of the dataset to label.
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Classes kept per record. For a teacher test store (`--split test --aug none`, the
    /// `--eval-labels` of `train` and `eval`), use --topk = the number of classes: fidelity KL
    /// is then measured against the teacher's exact distribution, not one rebuilt from its top-k
    /// (whose own error, about 0.1 nats at k = 10 of 1,000 classes, is as large as the gaps
    /// measured); a test split is small, so the store stays small.
    #[arg(long, default_value_t = 10)]
    pub topk: u32,
    /// Augmentation recipe: none, light, usi, center (evaluation: shorter side to size /
    /// --crop-pct, central crop; the recipe for teacher test stores of image folders, with
    /// `--split val` or `test`), or a TOML file.
    #[arg(long, default_value = "none")]
    pub aug: String,
    /// With --aug center: the fraction of the resized shorter side kept (default: the teacher
    /// file's `crop_pct` metadata, else 0.875).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// The filter crops are resized with, Pillow's exactly (what torchvision's PIL path and timm
    /// feed a teacher): bilinear is torchvision's default; most timm models were trained and
    /// are evaluated with bicubic. Overrides the recipe's `interpolation` (default: the
    /// recipe file's, else the teacher file's `interpolation` metadata, else bilinear).
    #[arg(long, value_enum)]
    pub interpolation: Option<InterpolationFlag>,
    /// Seed of the augmentation sampling: parameters of (seed, epoch, sample) never depend
    /// on thread order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per teacher run.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Decode-once blocks of at most N images: each image is decoded once and all epochs of the
    /// block are labelled from it; recipes that mix draw partners inside the block, over a
    /// seeded permutation of the samples (partners from every class). 0: every record decodes its
    /// own images. Default: 1024 for image folders, 0 for arrays held in memory.
    #[arg(long, value_name = "N")]
    pub block: Option<u32>,
    /// Most decoded pixels a block may hold (two blocks are in memory at a time).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, default_value = "1G")]
    pub block_mem: u64,
    /// Loader threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// ONNX Runtime intra-op threads (default: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    pub session_threads: usize,
    /// Execution provider: cpu, cuda or cuda:N. Asking for CUDA and not getting it is an error.
    #[arg(long, default_value = "cpu", value_parser = clap::value_parser!(teacher_infer::Device))]
    pub device: teacher_infer::Device,
    /// CUDA: let cuDNN prefer NHWC kernels (fastest for fp16 convolution teachers).
    #[arg(long)]
    pub prefer_nhwc: bool,
    /// CUDA: TF32 tensor-core math for fp32 teachers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tf32: bool,
    /// Teacher input size, N or WxH (default: the model's fixed size, else the images' size).
    #[arg(long, value_name = "N|WxH", value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Pixel scale: inputs are pixel/255 · scale before mean and std.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// Per-channel mean of pixel/255, comma-separated (default: the teacher file's `mean`
    /// metadata, timm's `pretrained_cfg` name, else 0).
    #[arg(long, value_delimiter = ',')]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, comma-separated (default: the teacher file's `std`
    /// metadata, else 1).
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Label only shard I of N (contiguous sample ranges; on tar shards, whole files), for
    /// `distill merge` later.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// Continue an unfinished store from its last complete chunk.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace an existing store.
    #[arg(long)]
    pub force: bool,
    /// Value codec of the stored logits.
    #[arg(long, value_enum, default_value_t = CodecFlag::Q8)]
    pub codec: CodecFlag,
    /// Records per chunk of each epoch stream: the unit of compression, checksums and resume.
    #[arg(long, default_value_t = label_store::DEFAULT_CHUNK_RECORDS)]
    pub chunk_records: u32,
    /// How several teachers combine.
    #[arg(long, value_enum, default_value_t = EnsembleFlag::Probs)]
    pub ensemble: EnsembleFlag,
    /// The teacher output holding the logits (default: the output named `logits`, else the
    /// first output that is not --feature). `none`: read no logits, store --feature alone (an
    /// embedding-only teacher: a model whose one output is --feature is one by default); the
    /// store then holds views and features, no soft labels.
    #[arg(long, value_name = "NAME")]
    pub logits: Option<String>,
    /// Also store this `[batch, D]` teacher output (a pooled embedding) for every record: the
    /// teacher's features of the exact view, for feature distillation. In an ensemble, stored
    /// for each teacher that has it.
    #[arg(long, value_name = "NAME")]
    pub feature: Option<String>,
    /// Codec of the stored features: q8 (int8 with a scale per vector) or f16.
    #[arg(long, value_enum, default_value_t = CodecFlag::Q8, requires = "feature")]
    pub feature_codec: CodecFlag,
    /// Store each feature vector as its coefficients in this PCA basis (a file from `distill
    /// features fit` on the same teacher and output): d values instead of D. Every --shard job
    /// and --resume must give the same file; stores of different bases never merge.
    #[arg(long, value_name = "FILE", requires = "feature")]
    pub feature_basis: Option<PathBuf>,
    /// ONNX Runtime library to load instead of searching.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The labelling configuration the flags describe, over the opened `data`.
pub fn label_config(a: LabelArgs, data: Arc<dyn Dataset>) -> Result<LabelConfig> {
    let channels = usize::from(data.channels());
    let pre = Chosen::of(&a, channels)?;
    let mut recipe = match a.aug.as_str() {
        "center" => formats::Recipe::center(pre.crop_pct),
        other => replay::sampler::load_recipe(other)?,
    };
    if let Some(f) = pre.interpolation {
        recipe.interpolation = f;
    }
    let blocks = match a.block {
        Some(0) => None,
        Some(n) => Some(teacher_infer::block_config(n, a.block_mem, &recipe)),
        None => {
            teacher_infer::default_blocks(data.as_ref(), &recipe).map(|b| formats::BlockConfig {
                bytes: a.block_mem,
                ..b
            })
        }
    };
    let mode = if a.resume {
        label_store::OpenMode::Resume
    } else if a.force {
        label_store::OpenMode::Overwrite
    } else {
        label_store::OpenMode::Create
    };
    Ok(LabelConfig {
        teachers: a.teachers,
        data,
        out: a.out,
        epochs: a.epochs,
        k: a.topk,
        recipe,
        seed: a.seed,
        batch: a.batch,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        session_threads: a.session_threads,
        device: a.device,
        cuda: teacher_infer::CudaOptions {
            prefer_nhwc: a.prefer_nhwc,
            tf32: a.tf32,
        },
        size: a.size,
        scale: a.scale,
        mean: pre.mean,
        std: pre.std,
        sources: pre.sources,
        shard: a.shard,
        mode,
        codec: a.codec.into(),
        chunk_records: a.chunk_records,
        ensemble: a.ensemble.into(),
        ort_lib: a.ort_lib,
        blocks,
        outputs: teacher_infer::Outputs {
            no_logits: a.logits.as_deref() == Some("none"),
            logits: a.logits.filter(|l| l != "none"),
            feature: a.feature,
        },
        feature_codec: a.feature_codec.into(),
        feature_basis: a.feature_basis,
    })
}

/// The teacher's pre-processing as `label` resolves it: each setting from its flag, else from
/// the teacher files' metadata (timm's `pretrained_cfg` keys, `formats::preprocess`; the
/// teachers of an ensemble must agree), else the recipe's or the default.
pub(crate) struct Chosen {
    pub(crate) mean: Vec<f32>,
    pub(crate) std: Vec<f32>,
    /// The filter to set into the recipe; `None` leaves the recipe's own.
    pub(crate) interpolation: Option<formats::Interpolation>,
    crop_pct: f64,
    /// Where each came from, for the manifest (`teacher_input.sources`) and `inspect`.
    sources: std::collections::BTreeMap<String, String>,
}

impl Chosen {
    fn of(a: &LabelArgs, channels: usize) -> Result<Self> {
        let flags = formats::preprocess::Preprocessing {
            mean: (!a.mean.is_empty()).then(|| a.mean.clone()),
            std: (!a.std.is_empty()).then(|| a.std.clone()),
            interpolation: a.interpolation.map(Into::into),
            crop_pct: a.crop_pct,
        };
        Self::resolve(&a.teachers, flags, &a.aug, channels, &|key| {
            format!("--{}", key.replace('_', "-"))
        })
    }

    /// The pre-processing of `teachers` for `channels`-channel images with the recipe `aug`:
    /// each of `flags` where given, else the files' metadata, else the recipe's or the default
    /// (`distill train --teacher` resolves its teachers' the same way). Errors name the flag
    /// that settles a setting as `flag_of(key)` gives it (`--mean` in `label`, `--teacher-mean`
    /// in `train`).
    pub(crate) fn resolve(
        teachers: &[PathBuf],
        flags: formats::preprocess::Preprocessing,
        aug: &str,
        channels: usize,
        flag_of: &dyn Fn(&str) -> String,
    ) -> Result<Self> {
        use formats::preprocess::Preprocessing;
        // What the teacher files declare, and the file that declared each key first. A key a
        // flag sets is not taken from the files, so teachers may disagree on it.
        let mut model = Preprocessing::default();
        let mut whose = Whose {
            files: Default::default(),
            flag_of,
        };
        for t in teachers {
            let p = teacher_infer::session::model_preprocessing(t)
                .with_context(|| format!("reading {}'s metadata", t.display()))?;
            let mean = p.mean.filter(|_| flags.mean.is_none());
            agree(&mut model.mean, mean, "mean", t, &mut whose)?;
            let std = p.std.filter(|_| flags.std.is_none());
            agree(&mut model.std, std, "std", t, &mut whose)?;
            let f = p.interpolation.filter(|_| flags.interpolation.is_none());
            agree(&mut model.interpolation, f, "interpolation", t, &mut whose)?;
            let c = p.crop_pct.filter(|_| flags.crop_pct.is_none());
            agree(&mut model.crop_pct, c, "crop_pct", t, &mut whose)?;
        }
        // The files' mean and std are used unless a flag gives them (they were dropped then).
        for (key, v) in [("mean", &model.mean), ("std", &model.std)] {
            if let Some(v) = v
                && v.len() != channels
            {
                bail!(
                    "{}: metadata {key} has {} values for {channels}-channel images (give {})",
                    whose.files[key].display(),
                    v.len(),
                    flag_of(key)
                );
            }
        }
        let mut sources = std::collections::BTreeMap::new();
        let mean =
            pick(&mut sources, "mean", flags.mean, model.mean).unwrap_or(vec![0.0; channels]);
        let std = pick(&mut sources, "std", flags.std, model.std).unwrap_or(vec![1.0; channels]);
        // A recipe file that names its filter comes after the flag and before the teacher.
        let interpolation =
            if flags.interpolation.is_none() && replay::sampler::recipe_names_interpolation(aug) {
                sources.insert("interpolation".into(), "recipe".into());
                None
            } else {
                pick(
                    &mut sources,
                    "interpolation",
                    flags.interpolation,
                    model.interpolation,
                )
            };
        let crop_pct = pick(&mut sources, "crop_pct", flags.crop_pct, model.crop_pct)
            .unwrap_or(formats::recipe::DEFAULT_CROP_PCT);
        if aug != "center" {
            // Only the built-in centre recipe takes its crop from here.
            sources.remove("crop_pct");
        }
        Ok(Chosen {
            mean,
            std,
            interpolation,
            crop_pct,
            sources,
        })
    }
}

/// The flag's value, else the teacher files', else `None` (the default), recording which in
/// `sources` under `key`.
fn pick<T>(
    sources: &mut std::collections::BTreeMap<String, String>,
    key: &str,
    flag: Option<T>,
    model: Option<T>,
) -> Option<T> {
    let (from, v) = match (flag, model) {
        (Some(v), _) => ("flag", Some(v)),
        (None, Some(v)) => ("model", Some(v)),
        (None, None) => ("default", None),
    };
    sources.insert(key.into(), from.into());
    v
}

/// The file that declared each setting first, and how errors name a setting's flag.
struct Whose<'a, 'b> {
    files: std::collections::BTreeMap<&'static str, &'a std::path::Path>,
    flag_of: &'b dyn Fn(&str) -> String,
}

/// Takes `value` (declared by `file`) into `slot` for `key`; a teacher declaring another value
/// than an earlier one is an error naming both files and the flag that settles it.
fn agree<'a, T: PartialEq + std::fmt::Debug>(
    slot: &mut Option<T>,
    value: Option<T>,
    key: &'static str,
    file: &'a std::path::Path,
    whose: &mut Whose<'a, '_>,
) -> Result<()> {
    let Some(v) = value else { return Ok(()) };
    match slot {
        Some(w) if *w != v => bail!(
            "the teachers' metadata disagree on {key}: {} has {w:?}, {} has {v:?} (give {})",
            whose.files[key].display(),
            file.display(),
            (whose.flag_of)(key)
        ),
        Some(_) => {}
        None => {
            *slot = Some(v);
            whose.files.insert(key, file);
        }
    }
    Ok(())
}

/// `distill label`.
pub fn label(a: LabelArgs) -> Result<ExitCode> {
    // The output's writer lock comes first: a second run on the same directory (a retried
    // batch job whose predecessor still runs) fails at once, before any slow set-up.
    let lock = label_store::WriterLock::acquire(&a.out)
        .with_context(|| format!("labelling into {}", a.out.display()))?;
    let data = a.data.open(&a.data.split_or("train"), None, None)?;
    let json = a.json;
    let cfg = label_config(a, data)?;
    let range = teacher_infer::pipeline::shard_range(cfg.data.as_ref(), cfg.shard)?;
    let total = u64::from(range.len()) * u64::from(cfg.epochs);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records  {per_sec}  {msg}  ETA {eta}",
        )
        .expect("valid template"),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let summary = teacher_infer::label_locked(&cfg, lock, |p| {
        bar.set_position(p.records);
        bar.set_message(format!("{} images decoded", p.images_decoded));
    })
    .with_context(|| format!("labelling into {}", cfg.out.display()));
    bar.finish_and_clear();
    let s = summary?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
    } else if s.already_complete {
        writeln!(
            out,
            "{} is already finished with these settings ({} records): nothing to do",
            s.out.display(),
            s.records
        )?;
    } else {
        let acc = s
            .quality
            .teacher_top1_accuracy
            .map_or("n/a".into(), |v| format!("{:.2}%", 100.0 * v));
        let labels = if s.k == 0 {
            "no soft labels (an embedding-only teacher): views and features".to_string()
        } else {
            format!(
                "teacher top-1 {acc} on un-mixed records, mean top-{} mass {:.3}",
                s.k, s.quality.mean_top_k_mass
            )
        };
        writeln!(
            out,
            "labelled {} records ({} in this run) into {} in {:.1}s ({:.0} records/s, {} images decoded); {labels}",
            s.records,
            s.labelled,
            s.out.display(),
            s.seconds,
            s.images_per_sec,
            s.images_decoded,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
