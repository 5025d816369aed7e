//! The training stage on a small learnable dataset with a label store written here: the loader's
//! pixels against `apply`, a short run above an accuracy floor, resume, several students from
//! one stream, and the bad inputs of issue 6.

use replay::apply::apply;

use datasets::{self as dataset, Dataset};
use formats::Recipe;
use formats::recipe::{CropConfig, MixConfig};
use formats::view::{Kernel, ViewRule};
use label_store::LabelStore;
use replay::batch::normalize;
use replay::sampler::MixedLabel;
use replay::stream::{Source, Stream, StreamConfig};
use std::path::Path;
use std::sync::Arc;
use student_train::checkpoint;
use student_train::models::{InputShape, ModelSpec, NormKind};
use student_train::optim::{OptimConfig, OptimizerKind, Schedule};
use student_train::run::{Progress, Quiet};
use student_train::rundir::load_metrics;
use student_train::{DeviceChoice, LossKind, RunData, TrainConfig, TrainError, train};
use testkit::bands::{Bands, write_store};

const SIDE: usize = 16;
const CLASSES: usize = 4;

/// Mild crops (the bands stay in place), flips, and mixup/cutmix on most records.
fn recipe() -> Recipe {
    Recipe {
        name: "test-mix".into(),
        center: None,
        crop: Some(CropConfig {
            scale: [0.6, 1.0],
            ratio: [0.8, 1.25],
        }),
        flip: 0.5,
        cutout: None,
        mix: Some(MixConfig {
            prob: 0.8,
            switch_prob: 0.5,
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            partner_block: None,
        }),
        // The other filter than the default, so both are replayed somewhere in the tests.
        interpolation: formats::Interpolation::Bicubic,
    }
}

fn open(dir: &Path, split: &str) -> Arc<dyn Dataset> {
    Arc::from(dataset::open(dir, None, split).unwrap())
}

struct Setup {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bands = Bands {
        side: SIDE,
        channels: 1,
        classes: CLASSES,
    };
    bands.write(&data, "train", 384, 0).unwrap();
    bands.write(&data, "test", 96, 1).unwrap();
    let train_data = open(&data, "train");
    write_store(
        &root.join("store"),
        train_data.as_ref(),
        2,
        3,
        &recipe(),
        11,
        None,
    )
    .unwrap();
    let test_data = open(&data, "test");
    write_store(
        &root.join("test-store"),
        test_data.as_ref(),
        1,
        3,
        &Recipe::none(),
        0,
        None,
    )
    .unwrap();
    Setup { _t: t, root, data }
}

fn config(loss: LossKind, epochs: u32) -> TrainConfig {
    TrainConfig {
        data: "data".into(),
        split: "train".into(),
        labels: Some("store".into()),
        labels_identity: None,
        eval_labels: Some("test-store".into()),
        models: vec![ModelSpec {
            family: student_train::models::ModelFamily::Lenet5,
            width: 1.0,
            norm: NormKind::Batch,
        }],
        input: InputShape {
            channels: 1,
            height: SIDE,
            width: SIDE,
            classes: CLASSES,
        },
        loss,
        optim: OptimConfig {
            optimizer: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            lr: 0.05,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine { min_factor: 0.0 },
            warmup_epochs: 0.0,
            clip_grad_norm: None,
        },
        epochs,
        batch: 32,
        seed: 3,
        mean: vec![0.5],
        std: vec![0.5],
        aug: None,
        device: DeviceChoice::Cpu,
        threads: 2,
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

fn run_data(s: &Setup) -> RunData {
    run_data_at(&s.root)
}

/// The run data of a [`setup`] made under `root`.
fn run_data_at(root: &Path) -> RunData {
    let data = root.join("data");
    RunData {
        train: open(&data, "train"),
        labels: Some(Arc::new(LabelStore::open(&root.join("store")).unwrap())),
        test: Some(open(&data, "test")),
        eval_labels: Some(Arc::new(
            LabelStore::open(&root.join("test-store")).unwrap(),
        )),
        teacher: None,
    }
}

const KD: LossKind = LossKind::Kd {
    weight: 0.9,
    tau: 4.0,
};

#[test]
fn the_loader_feeds_exactly_the_pixels_and_labels_the_store_describes() {
    let s = setup();
    let bicubic = ViewRule {
        kernel: Kernel::Pillow(formats::Interpolation::Bicubic),
        center: None,
    };
    // f32 batches, and u8 batches finished on the device (burn-flex here): the same bits.
    for pixels in [false, true] {
        loader_feeds_exactly(&s, &s.root.join("store"), pixels, bicubic);
    }
    // The same records in a format version 1 store replay with version 1's 2x2 kernel, as
    // they were labelled (a copy of the store, its manifest marked version 1).
    let v1 = s.root.join("store-v1");
    std::fs::create_dir_all(&v1).unwrap();
    for e in std::fs::read_dir(s.root.join("store")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), v1.join(e.file_name())).unwrap();
    }
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v1.join("manifest.json")).unwrap()).unwrap();
    m["format_version"] = 1.into();
    m["recipe"].as_object_mut().unwrap().remove("interpolation");
    std::fs::write(v1.join("manifest.json"), m.to_string()).unwrap();
    let legacy = ViewRule {
        kernel: Kernel::Legacy,
        center: None,
    };
    let differ = loader_feeds_exactly(&s, &v1, true, legacy);
    assert!(differ > 100, "the kernels differ on {differ} records only");
}

/// Checks one epoch of the stream over `store_dir` against `apply` under `rule`; returns the
/// records whose pixels the other kernel (bicubic / the 2x2 one) would have made differently.
fn loader_feeds_exactly(s: &Setup, store_dir: &Path, pixels: bool, rule: ViewRule) -> usize {
    let data = open(&s.data, "train");
    let store = Arc::new(LabelStore::open(store_dir).unwrap());
    let other = ViewRule {
        kernel: match rule.kernel {
            Kernel::Legacy => Kernel::Pillow(formats::Interpolation::Bicubic),
            Kernel::Pillow(_) => Kernel::Legacy,
        },
        center: None,
    };
    let mut differ = 0;
    let (mean, std) = (vec![0.25f32], vec![0.5f32]);
    let device = burn::tensor::Device::flex();
    let stream = Arc::new(
        Stream::new(
            Arc::clone(&data),
            Source::Store(Arc::clone(&store)),
            StreamConfig {
                batch: 50,
                threads: 2,
                prefetch: 3,
                seed: 9,
                mean: mean.clone(),
                std: std.clone(),
                size: (SIDE as u32, SIDE as u32),
                shuffle: true,
                window: replay::stream::DEFAULT_WINDOW,
                multi_crop: 1,
                part: replay::stream::Part::WHOLE,
                digest: false,
                pixels,
            },
        )
        .unwrap(),
    );
    // Student epoch 3 replays store epoch 3 mod 2 = 1, in its own order.
    assert_eq!(stream.store_epoch(3), Some(1));
    assert_ne!(stream.order(3), stream.order(1));
    let decoded = Arc::new(store.decode_epoch(1).unwrap());
    let (mut seen, mut mixed) = (vec![false; data.len() as usize], 0);
    let per = SIDE * SIDE;
    for batch in stream.epoch(3, vec![decoded], Some(2.0)).unwrap() {
        let b = batch.unwrap();
        assert_eq!(matches!(b.inputs, replay::batch::Inputs::U8(_)), pixels);
        let cpu = b.inputs.to_f32(1, &mean, &std);
        let on_device: Vec<f32> = student_train::input::upload(
            b.inputs.clone(),
            b.n,
            (1, SIDE, SIDE),
            &mean,
            &std,
            &device,
        )
        .into_data()
        .try_to_vec()
        .unwrap();
        assert!(
            cpu.iter()
                .zip(&on_device)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "the device's inputs differ from the CPU's"
        );
        let teacher = b.teacher.as_ref().unwrap();
        for (i, &smp) in b.samples.iter().enumerate() {
            assert!(!seen[smp as usize], "sample {smp} twice");
            seen[smp as usize] = true;
            let rec = store.get(1, smp).unwrap();
            let primary = data.image(smp).unwrap();
            let partner = rec.aug.mix.as_ref().map(|m| data.image(m.partner).unwrap());
            mixed += usize::from(partner.is_some());
            let mut want = vec![0f32; per];
            apply(
                &rule,
                &rec.aug,
                &primary,
                partner.as_ref(),
                16,
                16,
                &mut want,
            )
            .unwrap();
            let mut alt = vec![0f32; per];
            apply(
                &other,
                &rec.aug,
                &primary,
                partner.as_ref(),
                16,
                16,
                &mut alt,
            )
            .unwrap();
            differ += usize::from(alt != want);
            normalize(&mut want, 1, 1.0, &mean, &std);
            let got = &cpu[i * per..(i + 1) * per];
            assert!(
                want.iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "sample {smp}: pixels differ from apply"
            );
            let mut p = vec![0f32; CLASSES];
            rec.label.dense_into(2.0, &mut p);
            assert_eq!(&teacher[i * CLASSES..(i + 1) * CLASSES], &p[..]);
            let pl = rec
                .aug
                .mix
                .as_ref()
                .map_or(0, |m| data.label(m.partner).unwrap());
            let mut h = vec![0f32; CLASSES];
            MixedLabel::new(&rec.aug, data.label(smp).unwrap(), pl, 16, 16).dense_into(&mut h);
            assert_eq!(&b.hard[i * CLASSES..(i + 1) * CLASSES], &h[..]);
        }
    }
    assert!(seen.iter().all(|&v| v), "every sample once per epoch");
    assert!(mixed > 200, "the recipe mixes most records ({mixed})");
    differ
}

#[test]
fn a_short_kd_run_learns_and_resume_continues_the_same_metrics() {
    let s = setup();
    let run = s.root.join("run");
    let cfg = config(KD, 3);
    let summary = train(&cfg, &run_data(&s), &run, false, &mut Quiet).unwrap();
    let first = load_metrics(&run).unwrap();
    assert_eq!(first.len(), 3);
    let last = summary.students[0].last.clone().unwrap();
    assert!(last.test_accuracy.unwrap() >= 0.9, "{last:?}");
    assert!(last.test_agreement.unwrap() >= 0.9, "{last:?}");
    assert!(last.test_kl.unwrap() < 0.5, "{last:?}");
    assert!((0.0..=1.0).contains(&last.loader_wait_fraction));
    assert_eq!(first[2].store_epoch, Some(0));

    // A crash after epoch 3's metrics line but before its checkpoint: resume drops the line,
    // re-trains epoch 3 from the epoch-2 checkpoint and gets the same numbers.
    std::fs::remove_file(run.join("checkpoints").join(checkpoint::file_name(3))).unwrap();
    std::fs::remove_file(run.join("student.ckpt")).unwrap();
    let again = train(&cfg, &run_data(&s), &run, true, &mut Quiet).unwrap();
    assert_eq!(again.resumed_from_epoch, 2);
    let second = load_metrics(&run).unwrap();
    assert_eq!(second.len(), 3);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.epoch, b.epoch);
        assert_eq!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
        assert_eq!(a.test_accuracy, b.test_accuracy, "epoch {}", a.epoch);
        assert_eq!(a.test_kl, b.test_kl, "epoch {}", a.epoch);
        assert_eq!(a.lr, b.lr);
    }

    // Without `resume` an existing run is refused; with changed settings resume is refused.
    let e = train(&cfg, &run_data(&s), &run, false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("`resume`"), "{e}");
    let mut other = cfg.clone();
    other.batch = 64;
    let e = train(&other, &run_data(&s), &run, true, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("\"batch\""), "{e}");

    // A corrupt checkpoint is named on resume.
    let ck = run.join("checkpoints").join(checkpoint::file_name(3));
    let mut bytes = std::fs::read(&ck).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&ck, bytes).unwrap();
    let mut longer = cfg.clone();
    longer.epochs = 4;
    let e = train(&longer, &run_data(&s), &run, true, &mut Quiet).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("epoch-0003.ckpt") && msg.contains("checksum"),
        "{msg}"
    );
}

#[test]
fn several_students_train_from_one_stream() {
    let s = setup();
    let run = s.root.join("multi");
    let mut cfg = config(
        LossKind::Usi {
            weight: 5.0,
            kd_only: false,
        },
        1,
    );
    cfg.models.push(ModelSpec {
        family: student_train::models::ModelFamily::Mlp,
        width: 0.5,
        norm: NormKind::Layer,
    });
    let summary = train(&cfg, &run_data(&s), &run, false, &mut Quiet).unwrap();
    assert_eq!(summary.students.len(), 2);
    for st in &summary.students {
        let m = load_metrics(&st.dir).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m[0].train_loss.is_finite());
        assert!(st.dir.join("student.ckpt").exists());
    }
    assert_ne!(summary.students[0].dir, summary.students[1].dir);
}

/// In the child process of the crash test: the run directory to train into.
const CRASH_ENV: &str = "DISTILL_TEST_CRASH_RUN";

/// Aborts the process (no unwinding, no cleanup, as a kill -9 leaves the files) right after
/// `student` saved the checkpoint of `epochs_done` epochs.
struct AbortAfterSave {
    student: usize,
    epochs_done: u32,
}

impl Progress for AbortAfterSave {
    fn checkpoint_saved(&mut self, student: usize, epochs_done: u32) {
        if (student, epochs_done) == (self.student, self.epochs_done) {
            std::process::abort();
        }
    }
}

fn two_students(epochs: u32, keep: u32) -> TrainConfig {
    let mut cfg = config(KD, epochs);
    cfg.models.push(ModelSpec {
        family: student_train::models::ModelFamily::Mlp,
        width: 0.5,
        norm: NormKind::Layer,
    });
    cfg.keep_checkpoints = keep;
    cfg
}

fn checkpoints_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_crash_between_two_students_saves_resumes_to_the_uninterrupted_run() {
    if let Some(run) = std::env::var_os(CRASH_ENV) {
        let run = Path::new(&run);
        let root = run.parent().unwrap();
        let mut abort = AbortAfterSave {
            student: 0,
            epochs_done: 2,
        };
        let _ = train(
            &two_students(3, 1),
            &run_data_at(root),
            run,
            false,
            &mut abort,
        );
        unreachable!("the run was to abort after student 0's second checkpoint");
    }
    let s = setup();
    let reference = s.root.join("reference");
    let done = train(
        &two_students(3, 1),
        &run_data(&s),
        &reference,
        false,
        &mut Quiet,
    )
    .unwrap();
    for st in &done.students {
        assert_eq!(
            checkpoints_of(&st.dir),
            ["epoch-0003.ckpt"],
            "{}",
            st.dir.display()
        );
    }

    let crashed = s.root.join("crashed");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crash_between_two_students_saves_resumes_to_the_uninterrupted_run",
            "--nocapture",
        ])
        .env(CRASH_ENV, &crashed)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have died");
    let dirs: Vec<_> = done
        .students
        .iter()
        .map(|st| crashed.join(st.dir.strip_prefix(&reference).unwrap()))
        .collect();
    // Student 0 saved epoch 2, student 1 did not: nothing was pruned yet, so epoch 1, which
    // resume needs, is still there for both.
    assert_eq!(
        checkpoints_of(&dirs[0]),
        ["epoch-0001.ckpt", "epoch-0002.ckpt"]
    );
    assert_eq!(checkpoints_of(&dirs[1]), ["epoch-0001.ckpt"]);

    // Resume (keeping 2 now: the setting may change) continues from epoch 1 and ends where the
    // uninterrupted run did.
    let resumed = train(
        &two_students(3, 2),
        &run_data(&s),
        &crashed,
        true,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from_epoch, 1);
    for (st, dir) in done.students.iter().zip(&dirs) {
        // The same losses and test metrics every epoch (checkpoint bytes differ: burn gives
        // parameters random ids).
        let (a, b) = (load_metrics(&st.dir).unwrap(), load_metrics(dir).unwrap());
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        for (a, b) in a.iter().zip(&b) {
            let key = |m: &student_train::EpochMetrics| {
                (m.train_loss, m.test_accuracy, m.test_agreement, m.test_kl)
            };
            assert_eq!(key(a), key(b), "{} epoch {}", dir.display(), a.epoch);
        }
        assert!(dir.join("student.ckpt").exists());
        assert_eq!(checkpoints_of(dir), ["epoch-0002.ckpt", "epoch-0003.ckpt"]);
    }
}

#[test]
fn hard_label_training_without_a_store_learns() {
    let s = setup();
    let mut cfg = config(LossKind::Ce, 2);
    cfg.labels = None;
    cfg.eval_labels = None;
    cfg.aug = Some(Recipe {
        mix: None,
        ..recipe()
    });
    let mut data = run_data(&s);
    data.labels = None;
    data.eval_labels = None;
    cfg.keep_checkpoints = 1;
    let summary = train(&cfg, &data, &s.root.join("ce"), false, &mut Quiet).unwrap();
    let last = summary.students[0].last.clone().unwrap();
    assert!(last.test_accuracy.unwrap() >= 0.9, "{last:?}");
    // --keep-checkpoints 1: only the last epoch's checkpoint is left.
    let mut kept: Vec<String> = std::fs::read_dir(s.root.join("ce/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["epoch-0002.ckpt"]);
    assert!(last.test_agreement.is_none());
    // A KD loss without a store is refused naming the field to set.
    cfg.loss = KD;
    let e = train(&cfg, &data, &s.root.join("kd"), false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("`labels`"), "{e}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let s = setup();
    // The test split's store used as the training split's labels: the fingerprint names split.
    let mut data = run_data(&s);
    data.labels = Some(Arc::new(
        LabelStore::open(&s.root.join("test-store")).unwrap(),
    ));
    let e = train(&config(KD, 1), &data, &s.root.join("a"), false, &mut Quiet).unwrap_err();
    assert!(
        matches!(e, TrainError::Replay(replay::ReplayError::Mismatch(_))),
        "{e}"
    );
    assert!(e.to_string().contains("split"), "{e}");

    // A store that does not say which input size its boxes are in cannot be replayed.
    let bare = s.root.join("no-teacher-input");
    std::fs::create_dir_all(&bare).unwrap();
    for f in std::fs::read_dir(s.root.join("store")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bare.join(f.file_name().unwrap())).unwrap();
    }
    let mpath = bare.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    assert!(m["teacher_input"]["width"].is_u64(), "a typed field: {m}");
    m.as_object_mut().unwrap().remove("teacher_input");
    std::fs::write(&mpath, m.to_string()).unwrap();
    let mut data = run_data(&s);
    data.labels = Some(Arc::new(LabelStore::open(&bare).unwrap()));
    let e = train(&config(KD, 1), &data, &s.root.join("b"), false, &mut Quiet).unwrap_err();
    assert!(
        e.to_string().contains("field teacher_input is missing"),
        "{e}"
    );

    // Out-of-range hyper-parameters name their field (the command line's test checks flags).
    for (loss, flag) in [
        (
            LossKind::Kd {
                weight: 0.9,
                tau: 0.0,
            },
            "`temperature`",
        ),
        (
            LossKind::Kd {
                weight: 1.5,
                tau: 4.0,
            },
            "`kd_weight`",
        ),
        (
            LossKind::Usi {
                weight: -1.0,
                kd_only: false,
            },
            "`kd_weight`",
        ),
    ] {
        let e = train(
            &config(loss, 1),
            &run_data(&s),
            &s.root.join("b"),
            false,
            &mut Quiet,
        )
        .unwrap_err();
        assert!(e.to_string().contains(flag), "{e}");
    }

    // A model that cannot take the images.
    let mut cfg = config(KD, 1);
    cfg.input.height = 8;
    cfg.input.width = 8;
    let e = train(&cfg, &run_data(&s), &s.root.join("c"), false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("8x8"), "{e}");

    // --resume into a directory that holds something else than a run.
    let other = s.root.join("not-a-run");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep me").unwrap();
    let e = train(&config(KD, 1), &run_data(&s), &other, true, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("not a run"), "{e}");
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "keep me"
    );

    // A test split with another class count than the training split.
    let mut data = run_data(&s);
    let bands = Bands {
        side: SIDE,
        channels: 1,
        classes: 3,
    };
    let three = s.root.join("three");
    std::fs::create_dir_all(&three).unwrap();
    bands.write(&three, "test", 30, 0).unwrap();
    data.test = Some(open(&three, "test"));
    data.eval_labels = None;
    let e = train(&config(KD, 1), &data, &s.root.join("e"), false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("test split"), "{e}");
    assert!(
        !s.root.join("e").exists(),
        "nothing is written before the inputs are checked"
    );

    // A run configured for other data.
    let mut cfg = config(KD, 1);
    cfg.input.classes = 10;
    let e = train(&cfg, &run_data(&s), &s.root.join("d"), false, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("classes"), "{e}");
}

#[test]
fn a_full_disk_leaves_the_previous_checkpoint_usable() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("epoch-0001.ckpt");
    label_store::writer::write_atomic(&path, b"previous").unwrap();
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let e = label_store::writer::write_atomic_with(&path, &vec![7u8; 1 << 16], |_| {
        std::fs::OpenOptions::new().write(true).open("/dev/full")
    })
    .unwrap_err();
    assert!(e.to_string().contains("epoch-0001.ckpt"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    let leftovers: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

/// A store of the training split labelled in permuted decode-once blocks of 64 (as `distill
/// label` labels image folders), 2 epochs.
fn block_store(s: &Setup) -> Arc<LabelStore> {
    let dir = s.root.join("block-store");
    testkit::bands::write_store(
        &dir,
        open(&s.data, "train").as_ref(),
        2,
        3,
        &recipe(),
        11,
        Some(formats::BlockConfig {
            images: 64,
            bytes: u64::MAX,
            order: formats::BlockOrder::Permuted,
        }),
    )
    .unwrap();
    Arc::new(LabelStore::open(&dir).unwrap())
}

fn stream_over(s: &Setup, store: &Arc<LabelStore>, window: usize, multi_crop: u32) -> Arc<Stream> {
    Arc::new(
        Stream::new(
            open(&s.data, "train"),
            Source::Store(Arc::clone(store)),
            StreamConfig {
                window,
                multi_crop,
                ..StreamConfig::training(48, 2, 9, vec![0.5], vec![0.5], (SIDE as u32, SIDE as u32))
            },
        )
        .unwrap(),
    )
}

/// Every (sample, store epoch) of one student epoch, with the decodes it took.
fn one_epoch(stream: &Arc<Stream>, store: &LabelStore, epoch: u32) -> (Vec<(u32, Vec<f32>)>, u64) {
    let decoded = stream
        .store_epochs(epoch)
        .into_iter()
        .map(|e| Arc::new(store.decode_epoch(e).unwrap()))
        .collect();
    let mut batches = stream.epoch(epoch, decoded, Some(1.0)).unwrap();
    let mut out = Vec::new();
    for b in batches.by_ref() {
        let b = b.unwrap();
        let t = b.teacher.unwrap();
        for (i, &smp) in b.samples.iter().enumerate() {
            out.push((smp, t[i * CLASSES..(i + 1) * CLASSES].to_vec()));
        }
    }
    (out, batches.images_decoded())
}

#[test]
fn a_block_grouped_stream_decodes_each_image_once_per_epoch() {
    let s = setup();
    let store = block_store(&s);
    let plan = replay::block::BlockPlan::new(
        store.manifest.blocks.unwrap(),
        11,
        store.manifest.samples,
        &|_| Ok(1),
    )
    .unwrap();
    assert_eq!(plan.len(), 6);
    let data = open(&s.data, "train");
    // Partners were drawn inside each block.
    for smp in 0..384 {
        if let Some(m) = store.get(0, smp).unwrap().aug.mix {
            assert_eq!(
                plan.locate(m.partner).unwrap().0,
                plan.locate(smp).unwrap().0
            );
        }
    }

    let grouped = stream_over(&s, &store, 2, 1);
    assert!(grouped.block_grouped());
    let (recs, decodes) = one_epoch(&grouped, &store, 1);
    assert_eq!(recs.len(), 384);
    assert_eq!(decodes, 384, "one decode per image, partners included");
    let mut seen = [false; 384];
    for (smp, _) in &recs {
        assert!(
            !std::mem::replace(&mut seen[*smp as usize], true),
            "sample {smp} twice"
        );
    }
    // Windows of two blocks: the first 128 records are two whole blocks.
    let mut first: Vec<u32> = recs[..128].iter().map(|r| r.0).collect();
    first.sort();
    let blocks: std::collections::BTreeSet<usize> = first
        .iter()
        .map(|&smp| plan.locate(smp).unwrap().0)
        .collect();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    // Shuffled within the window (not block order), and differently in another epoch.
    let order1: Vec<u32> = recs.iter().map(|r| r.0).collect();
    assert_ne!(&order1[..64], plan.block(*blocks.iter().next().unwrap()));
    assert_ne!(grouped.order(1), grouped.order(3));
    // The teacher rows are the store's records of store epoch 1.
    let mut dense = vec![0f32; CLASSES];
    for (smp, t) in recs.iter().take(40) {
        store
            .get(1, *smp)
            .unwrap()
            .label
            .dense_into(1.0, &mut dense);
        assert_eq!(t, &dense);
    }

    // Shuffling all records instead: each record decodes itself and its partner.
    let flat = stream_over(&s, &store, 0, 1);
    assert!(!flat.block_grouped());
    let (_, per_record) = one_epoch(&flat, &store, 1);
    let mixed = (0..384)
        .filter(|&smp| store.get(1, smp).unwrap().aug.mix.is_some())
        .count() as u64;
    assert_eq!(per_record, 384 + mixed);

    // Multi-crop 2: both store epochs of every image from one decode.
    let multi = stream_over(&s, &store, 2, 2);
    assert_eq!(multi.store_epochs(3), vec![0, 1]);
    let (recs, decodes) = one_epoch(&multi, &store, 3);
    assert_eq!(recs.len(), 768);
    assert_eq!(decodes, 384);
    let mut count = [0u8; 384];
    for (smp, _) in &recs {
        count[*smp as usize] += 1;
    }
    assert!(count.iter().all(|&c| c == 2));

    // Multi-crop without blocks: a sample's crops come together and share a decode.
    let plain = Arc::new(LabelStore::open(&s.root.join("store")).unwrap());
    let fkd = stream_over(&s, &plain, 2, 2);
    assert!(!fkd.block_grouped());
    let (recs, decodes) = one_epoch(&fkd, &plain, 0);
    assert_eq!(recs.len(), 768);
    assert!(recs.chunks(2).all(|p| p[0].0 == p[1].0));
    // Each batch is a decode group: its samples once, partners from outside it once per use.
    let mut want = 0;
    for batch in recs.chunks(48) {
        let inside: std::collections::HashSet<u32> = batch.iter().map(|r| r.0).collect();
        want += inside.len();
        for (i, (smp, _)) in batch.iter().enumerate() {
            // Crops come in store-epoch order, one after another.
            if let Some(m) = plain.get((i % 2) as u32, *smp).unwrap().aug.mix
                && !inside.contains(&m.partner)
            {
                want += 1;
            }
        }
    }
    assert_eq!(decodes, want as u64);
    let per_record: usize = 768
        + (0..2)
            .map(|e| {
                (0..384)
                    .filter(|&smp| plain.get(e, smp).unwrap().aug.mix.is_some())
                    .count()
            })
            .sum::<usize>();
    assert!(
        (decodes as usize) < per_record * 3 / 4,
        "{decodes} of {per_record}"
    );
    drop(data);

    // A training run records the decodes per epoch.
    let mut cfg = config(KD, 1);
    cfg.labels = Some("block-store".into());
    cfg.models[0].family = student_train::models::ModelFamily::Mlp;
    let out = s.root.join("run-blocks");
    let mut rd = run_data(&s);
    rd.labels = Some(store);
    train(&cfg, &rd, &out, false, &mut Quiet).unwrap();
    let m = load_metrics(&out).unwrap();
    assert_eq!(m[0].images_decoded, 384);
}

#[test]
fn ranks_split_each_epoch_into_disjoint_parts_that_cover_it() {
    let s = setup();
    let store = block_store(&s);
    let part_stream = |rank, world, drop_last| {
        Arc::new(
            Stream::new(
                open(&s.data, "train"),
                Source::Store(Arc::clone(&store)),
                StreamConfig {
                    part: replay::stream::Part {
                        rank,
                        world,
                        drop_last,
                    },
                    ..StreamConfig::training(
                        48,
                        2,
                        9,
                        vec![0.5],
                        vec![0.5],
                        (SIDE as u32, SIDE as u32),
                    )
                },
            )
            .unwrap(),
        )
    };
    let whole = one_epoch(&stream_over(&s, &store, 2, 1), &store, 2).0;
    let order: Vec<u32> = whole.iter().map(|r| r.0).collect();
    // Two ranks: halves of the same order, together the whole epoch, batches as a single
    // process would cut them.
    let mut joined = Vec::new();
    for rank in 0..2 {
        let st = part_stream(rank, 2, false);
        assert_eq!(st.samples(), 192);
        assert_eq!(st.batches(), 4);
        let (recs, decodes) = one_epoch(&st, &store, 2);
        assert!(
            decodes <= 192 + 64,
            "a rank decodes about its own half: {decodes}"
        );
        joined.extend(recs.into_iter().map(|r| r.0));
    }
    assert_eq!(joined, order);
    // Five ranks: 77 records each, the last part wrapping to the start; with drop_last, 48 each
    // (whole batches), disjoint.
    let mut all = Vec::new();
    for rank in 0..5 {
        let recs = one_epoch(&part_stream(rank, 5, false), &store, 2).0;
        assert_eq!(recs.len(), 77);
        all.extend(recs.into_iter().map(|r| r.0));
    }
    assert_eq!(&all[..384], &order[..]);
    assert_eq!(all[384], order[0]);
    let mut seen = std::collections::HashSet::new();
    for rank in 0..5 {
        let recs = one_epoch(&part_stream(rank, 5, true), &store, 2).0;
        assert_eq!(recs.len(), 48);
        assert!(recs.iter().all(|r| seen.insert(r.0)));
    }
    let e = Stream::new(
        open(&s.data, "train"),
        Source::Store(Arc::clone(&store)),
        StreamConfig {
            part: replay::stream::Part {
                rank: 2,
                world: 2,
                drop_last: false,
            },
            ..StreamConfig::training(48, 2, 9, vec![0.5], vec![0.5], (SIDE as u32, SIDE as u32))
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("`rank` 2") && e.contains("`world`"), "{e}");
}
