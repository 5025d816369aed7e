//! `distill train`, `eval` and `export` end to end: a linear ONNX teacher labels a small IDX
//! dataset, two students train from the one store at once (separate processes sharing the mmap),
//! eval reports the fidelity metrics, and every model family exports to ONNX that ONNX Runtime
//! runs to the burn forward pass's logits.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use std::path::PathBuf;
use std::process::Command;
use student_train::checkpoint::{self, CheckpointMeta};
use student_train::models::{InputShape, ModelSpec, NormKind};
use teacher_infer::{Device, TeacherSession};

mod common;
use common::*;

struct Setup {
    _t: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Data (400 train, 100 test), a teacher, and its train (2 augmented epochs) and test (no aug)
/// stores.
fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    write_split(&data, "test", 100, 3);
    let teacher = root.join("teacher.onnx");
    write_teacher(&teacher, 0.05, 0.0);
    // Crops that keep most of the cross, and mixup on half the records (flips would move the
    // cross's column to another class).
    let recipe = root.join("mild.toml");
    std::fs::write(
        &recipe,
        "name = \"mild\"\n[crop]\nscale = [0.7, 1.0]\nratio = [0.8, 1.25]\n\
         [mix]\nprob = 0.5\nswitch_prob = 0.0\nmixup_alpha = 0.4\ncutmix_alpha = 0.0\n",
    )
    .unwrap();
    for (split, aug, out, epochs) in [
        ("train", path(&recipe), "store", "2"),
        ("test", "none", "test-store", "1"),
    ] {
        label_split(&teacher, &data, (split, aug, epochs), &root.join(out), &[]);
    }
    Setup { _t: t, root, data }
}

fn train_args(s: &Setup, out: &str) -> Vec<String> {
    [
        "train",
        "--json",
        "--data",
        path(&s.data),
        "--labels",
        path(&s.root.join("store")),
        "--eval-labels",
        path(&s.root.join("test-store")),
        "--model",
        "lenet5",
        "--loss",
        "kd",
        "--epochs",
        "6",
        "--batch",
        "16",
        "--lr",
        "0.05",
        "--seed",
        "5",
        "--threads",
        "1",
        "--out",
        path(&s.root.join(out)),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn two_processes_train_from_one_store_and_eval_reports_fidelity() {
    let s = setup();
    // Both start before either ends: they read the store through mmap side by side.
    let spawn = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(train_args(&s, out))
            .output()
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| spawn("run-a").unwrap());
        let b = sc.spawn(|| spawn("run-b").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let (va, vb) = (ok(&a), ok(&b));
    assert_eq!(va["students"][0]["last"]["epoch"], 5);
    assert_eq!(vb["students"][0]["last"]["epoch"], 5);
    let (ma, mb) = (
        metrics(&s.root.join("run-a")),
        metrics(&s.root.join("run-b")),
    );
    assert_eq!(ma.len(), 6);
    for (x, y) in ma.iter().zip(&mb) {
        // Same seed, same store: the same training, whatever the other process did meanwhile.
        assert_eq!(x["train_loss"], y["train_loss"]);
        assert_eq!(x["test_agreement"], y["test_agreement"]);
        for key in [
            "lr",
            "images_per_sec",
            "loader_wait_fraction",
            "test_accuracy",
            "test_kl",
        ] {
            assert!(x[key].is_number(), "{key} missing in {x}");
        }
    }
    let last = &ma[5];
    assert!(last["test_accuracy"].as_f64().unwrap() >= 0.9, "{last}");
    assert!(last["test_agreement"].as_f64().unwrap() >= 0.9, "{last}");

    // eval gives the same figures as the run's last metrics line.
    let run = s.root.join("run-a");
    let v = ok(&distill(&[
        "eval",
        "--json",
        "--run",
        path(&run),
        "--data",
        path(&s.data),
        "--split",
        "test",
        "--labels",
        path(&s.root.join("test-store")),
    ]));
    assert_eq!(v["samples"], 100);
    assert_eq!(v["accuracy"], last["test_accuracy"]);
    // Top-5 of 10 classes: the KL is against the rebuilt distribution, and both say so.
    assert_eq!(v["kl_vs"], "top-k rebuild");
    assert_eq!(last["test_kl_vs"], "top-k rebuild");
    // Teacher test labels on centre crops: the evaluator replays the store's crops; a store
    // made with a random recipe is refused as test labels.
    for (aug, out) in [("center", "center-store"), ("light", "light-store")] {
        ok(&distill(&[
            "label",
            "--json",
            "--teacher",
            path(&s.root.join("teacher.onnx")),
            "--data",
            path(&s.data),
            "--split",
            "test",
            "--aug",
            aug,
            "--topk",
            if aug == "center" { "10" } else { "5" },
            "--out",
            path(&s.root.join(out)),
            "--mean",
            "0.5",
            "--std",
            "0.25",
        ]));
    }
    let eval_with = |store: &str| {
        distill(&[
            "eval",
            "--json",
            "--run",
            path(&run),
            "--data",
            path(&s.data),
            "--labels",
            path(&s.root.join(store)),
        ])
    };
    let c = ok(&eval_with("center-store"));
    assert_eq!(c["samples"], 100);
    assert_eq!(c["kl_vs"], "full", "k = classes: the exact distribution");
    assert!(c["agreement"].as_f64().unwrap() >= 0.8, "{c}");
    let o = eval_with("light-store");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("recipe \"light\" augments"),
        "{err}"
    );
    assert_eq!(v["agreement"], last["test_agreement"]);
    let (k1, k2) = (v["kl"].as_f64().unwrap(), last["test_kl"].as_f64().unwrap());
    assert!((k1 - k2).abs() < 1e-9, "{k1} vs {k2}");

    // Bad input: the train store given as test labels names the split; a missing checkpoint
    // epoch names the file.
    let o = distill(&[
        "eval",
        "--run",
        path(&run),
        "--data",
        path(&s.data),
        "--labels",
        path(&s.root.join("store")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("split"), "{err}");
    let o = distill(&[
        "export",
        path(&run),
        "--onnx",
        path(&s.root.join("x.onnx")),
        "--epoch",
        "9",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("epoch-0009.ckpt"));
    // A backend this build lacks names the cargo feature.
    let mut args = train_args(&s, "run-tch");
    args.extend(["--device".into(), "tch:cuda:0".into()]);
    let o = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(&args)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--features tch"));
}

/// Each family and normalization, with BatchNorm running statistics moved off their initial
/// values by a few training-mode passes, exported and run by ONNX Runtime.
#[test]
fn exported_students_match_the_burn_forward_pass() {
    let t = tempfile::tempdir().unwrap();
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let train_dev = burn::tensor::Device::flex().autodiff();
    let cases = [
        ("mlp", NormKind::None, 1, 16),
        ("mlp", NormKind::Batch, 1, 16),
        ("mlp", NormKind::Layer, 1, 16),
        ("lenet5", NormKind::Batch, 1, 28),
        ("lenet5", NormKind::Layer, 3, 32),
        ("resnet20", NormKind::Batch, 3, 16),
        ("resnet20", NormKind::None, 1, 12),
        ("resnet18", NormKind::Batch, 3, 32),
    ];
    for (i, (family, norm, c, side)) in cases.into_iter().enumerate() {
        let input = InputShape {
            channels: c,
            height: side,
            width: side,
            classes: 7,
        };
        let spec = ModelSpec {
            family: family.parse().unwrap(),
            width: 0.5,
            norm,
        };
        train_dev.seed(i as u64);
        let model = spec.init(&input, &train_dev).unwrap();
        let n = 5;
        let per = c * side * side;
        let pixels: Vec<f32> = (0..n * per)
            .map(|j| ((j * 7919 + i * 13) % 256) as f32 / 255.0)
            .collect();
        let meta = CheckpointMeta {
            epochs_done: 1,
            model: spec,
            input,
            mean: (0..c).map(|k| 0.4 + 0.05 * k as f32).collect(),
            std: (0..c).map(|k| 0.3 - 0.02 * k as f32).collect(),
            interpolation: None,
            crop_pct: None,
            projector: None,
        };
        let normalized = |dev: &burn::tensor::Device| {
            let mut x = pixels.clone();
            for (j, v) in x.iter_mut().enumerate() {
                let ch = (j / (side * side)) % c;
                *v = (*v - meta.mean[ch]) / meta.std[ch];
            }
            Tensor::<4>::from_data(TensorData::new(x, [n, c, side, side]), dev)
        };
        // Training-mode passes update the running statistics.
        for _ in 0..3 {
            let _ = model.forward(normalized(&train_dev));
        }
        let dir = t.path().join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        checkpoint::save(&dir.join("student.ckpt"), &meta, &model, None).unwrap();
        // Every student is exported with its penultimate features as a second output too.
        let onnx = dir.join("student.onnx");
        ok(&distill(&[
            "export",
            path(&dir),
            "--onnx",
            path(&onnx),
            "--feature-output",
            "embedding",
            "--json",
        ]));

        let infer = train_dev.clone().without_autodiff();
        let (features, logits) = model.valid().forward_features(normalized(&infer));
        let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let (want_f, want) = (read(features), read(logits));
        let outputs = teacher_infer::Outputs {
            logits: None,
            no_logits: false,
            feature: Some("embedding".into()),
        };
        let mut session =
            TeacherSession::open_outputs(env, &onnx, Device::Cpu, 1, Default::default(), &outputs)
                .unwrap();
        assert_eq!(
            session.feature.as_ref().map(|f| f.dim as usize),
            Some(want_f.len() / n)
        );
        let (mut got, mut got_f) = (Vec::new(), Vec::new());
        session
            .run_with_features(&pixels, n, [c, side, side], &mut got, Some(&mut got_f))
            .unwrap();
        for (what, got, want) in [("logits", &got, &want), ("features", &got_f, &want_f)] {
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
            eprintln!("{family} {norm:?} {what}: max |onnx − burn| = {worst}, max |value| {scale}");
            assert!(
                worst <= 1e-4 * scale.max(1.0),
                "{family} {norm:?} {what}: max |onnx − burn| = {worst}"
            );
        }
    }
}

#[test]
fn a_store_whose_decode_probe_differs_is_refused_naming_the_sample() {
    let s = setup();
    let store = s.root.join("store");
    let mpath = store.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    let probe = &m["decode_probe"];
    assert_eq!(
        probe["decoder"], "none",
        "IDX data needs no decoder: {probe}"
    );
    assert_eq!(
        probe["samples"],
        serde_json::json!([0, 50, 100, 150, 200, 250, 300, 350])
    );
    let o = distill(&["inspect", path(&store)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("decode probe none on samples [0, 50"));
    // As if another build had decoded sample 150 differently when the store was labelled.
    m["decode_probe"]["pixels_xxh3"][3] = "xxh3:0000000000000000".into();
    std::fs::write(&mpath, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let args = train_args(&s, "refused");
    let o = distill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "trained on a store with another decoder"
    );
    assert!(
        err.contains("sample 150 decodes to other pixels") && err.contains("label again"),
        "{err}"
    );
    assert!(!s.root.join("refused").join("metrics.jsonl").exists());
}

/// Library errors name config fields; the command line puts the flag on each (the assertions
/// the library's own tests made of flag names before, moved here with them).
#[test]
fn bad_settings_are_refused_naming_their_flags() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    let out = t.path().join("run");
    let train = |extra: &[&str]| -> String {
        let mut args = vec![
            "train",
            "--data",
            path(&data),
            "--out",
            path(&out),
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--test-split",
            "none",
        ];
        if !extra.contains(&"--loss") {
            args.extend(["--loss", "ce"]);
        }
        args.extend_from_slice(extra);
        let o = distill(&args);
        assert!(!o.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (flags, want) in [
        (&["--loss", "kd", "--kd-weight", "1.5"][..], "--kd-weight"),
        (&["--loss", "kd", "--temperature", "0"][..], "--temperature"),
        (&["--lr", "0"][..], "--lr"),
        (&["--warmup-epochs=-1"][..], "--warmup-epochs"),
        (&["--clip-grad-norm", "0"][..], "--clip-grad-norm"),
        (
            &["--optimizer", "sgd", "--momentum", "1.5"][..],
            "--momentum",
        ),
        (&["--width", "100"][..], "--width"),
        (&["--crop-pct", "1.5"][..], "--crop-pct"),
        (&["--mean", "0.1,0.2"][..], "--mean"),
        // A loss that needs teacher labels without a store: the flag to add.
        (&["--loss", "kd"][..], "--labels"),
        (&["--loss", "features"][..], "--feature-weight"),
        (&["--feature-weight", "0"][..], "--feature-weight"),
        (&["--feature-weight", "1"][..], "--labels"),
    ] {
        let e = train(flags);
        assert!(e.contains(want) && !e.contains('`'), "{flags:?}: {e}");
    }
    // An existing run without --resume.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = train(&[]);
    assert!(e.contains("--resume") && e.contains("--out"), "{e}");
}

/// A teacher with a feature output labels the data with `--feature pooled` (train and test
/// stores); students learn its features through a projector alongside kd, or from them alone
/// (`--loss features`): the test feature cosine rises, a resumed run (projector and its
/// optimizer from the checkpoint) gives the uninterrupted run's numbers, and export drops the
/// projector. A store without features is refused naming it.
#[test]
fn feature_students_learn_the_teachers_features_and_resume_to_the_same_numbers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    write_split(&data, "test", 100, 3);
    let teacher = root.join("features.onnx");
    write_feature_teacher(&teacher);
    let label = |split: &str, aug: &str, out: &str, epochs: &str, extra: &[&str]| {
        label_split(
            &teacher,
            &data,
            (split, aug, epochs),
            &root.join(out),
            extra,
        );
    };
    // Crops that keep most of each cross (a 12-pixel image cropped to 8% is another image).
    let recipe = root.join("mild.toml");
    std::fs::write(
        &recipe,
        "name = \"mild\"\n[crop]\nscale = [0.7, 1.0]\nratio = [0.8, 1.25]\n",
    )
    .unwrap();
    label(
        "train",
        path(&recipe),
        "store",
        "2",
        &["--feature", "pooled"],
    );
    label(
        "test",
        "none",
        "test-store",
        "1",
        &["--feature", "pooled", "--feature-codec", "f16"],
    );
    label("train", path(&recipe), "plain", "2", &[]);
    let (store, test_store) = (root.join("store"), root.join("test-store"));
    // A small mlp from `labels`, evaluated against `eval`.
    let train_on = |labels: &std::path::Path, eval: &std::path::Path, out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--json",
            "--data",
            path(&data),
            "--labels",
            path(labels),
            "--eval-labels",
            path(eval),
            "--model",
            "mlp",
            "--width",
            "0.25",
            "--epochs",
            "4",
            "--batch",
            "16",
            "--lr",
            "0.1",
            "--seed",
            "2",
            "--threads",
            "1",
            "--mean",
            "0.5",
            "--std",
            "0.25",
            "--out",
        ];
        let out = root.join(out);
        args.push(path(&out));
        args.extend_from_slice(extra);
        distill(&args)
    };
    let train = |out: &str, extra: &[&str]| train_on(&store, &test_store, out, extra);
    let cosines = |run: &str| -> Vec<f64> {
        metrics(&root.join(run))
            .iter()
            .map(|m| {
                m["test_feature_cosine"]
                    .as_f64()
                    .expect("test_feature_cosine")
            })
            .collect()
    };
    ok(&train("kd", &["--loss", "kd", "--feature-weight", "1"]));
    let kd = cosines("kd");
    assert!(
        kd[3] > kd[0] + 0.03 && kd[3] > 0.85,
        "kd + features: {kd:?}"
    );
    let m = metrics(&root.join("kd"));

    // The feature term alone, on un-augmented views of the training split evaluated on those
    // very views (no normalization layers, so training and evaluation compute the same
    // thing): the evaluated cosine is the training objective's.
    label(
        "train",
        "none",
        "train-views",
        "1",
        &["--feature", "pooled"],
    );
    let views = root.join("train-views");
    let alone_flags = [
        "--test-split",
        "train",
        "--norm",
        "none",
        "--loss",
        "features",
        "--feature-weight",
        "1",
    ];
    ok(&train_on(&views, &views, "alone", &alone_flags));
    let alone = root.join("alone");
    let last = metrics(&alone).pop().unwrap();
    let (cos, loss) = (
        last["test_feature_cosine"].as_f64().unwrap(),
        last["train_loss"].as_f64().unwrap(),
    );
    assert!(
        cos > 0.95 && (cos - (1.0 - loss)).abs() < 0.01,
        "cosine {cos}, loss {loss}"
    );

    // The same views labelled by the teacher read as embedding-only (--logits none): no soft
    // labels, the same features, so the feature term alone trains the very same student.
    label(
        "train",
        "none",
        "emb-views",
        "1",
        &["--feature", "pooled", "--logits", "none"],
    );
    let emb = root.join("emb-views");
    ok(&train_on(&emb, &emb, "emb-alone", &alone_flags));
    let (a, b) = (metrics(&alone), metrics(&root.join("emb-alone")));
    for (a, b) in a.iter().zip(&b) {
        for key in ["train_loss", "test_feature_cosine", "test_accuracy"] {
            assert_eq!(a[key], b[key], "epoch {}: {key}", a["epoch"]);
        }
        assert!(a["test_agreement"].is_number() && b["test_agreement"].is_null());
    }
    // With an online teacher the views of that store get the teacher's labels: the kd student
    // equals the one trained offline from the labelled store of the same views (the online
    // labels are kept as the store keeps them: top-5, q8).
    let kd = ["--test-split", "train", "--norm", "none", "--loss", "kd"];
    ok(&train_on(&views, &views, "views-kd", &kd));
    let online = [
        &kd[..],
        &[
            "--teacher",
            path(&teacher),
            "--teacher-mean",
            "0.5",
            "--teacher-std",
            "0.25",
        ],
        &["--topk", "5"],
    ]
    .concat();
    ok(&train_on(&emb, &views, "emb-online-kd", &online));
    let (a, b) = (
        metrics(&root.join("views-kd")),
        metrics(&root.join("emb-online-kd")),
    );
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        for key in ["train_loss", "test_agreement", "test_kl"] {
            assert_eq!(a[key], b[key], "epoch {}: {key}", a["epoch"]);
        }
    }
    // A loss that needs soft labels is refused, naming the store.
    let o = train_on(&emb, &emb, "emb-kd", &["--loss", "kd"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("emb-views") && e.contains("no soft labels"),
        "{e}"
    );
    // Over data read --unlabelled neither the store nor the data has classes: the students'
    // count is asked for, and then they train on the feature term.
    label(
        "train",
        "none",
        "emb-unlabelled",
        "1",
        &["--unlabelled", "--feature", "pooled", "--logits", "none"],
    );
    let unl = root.join("emb-unlabelled");
    let mut flags = vec![
        "--test-split",
        "train",
        "--loss",
        "features",
        "--feature-weight",
        "1",
    ];
    let o = train_on(&unl, &unl, "unl-refused", &flags);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("--student-classes") && e.contains("emb-unlabelled"),
        "{e}"
    );
    flags.extend(["--student-classes", "7"]);
    ok(&train_on(&unl, &unl, "unl", &flags));
    let ck = checkpoint::Checkpoint::read(&root.join("unl").join("student.ckpt")).unwrap();
    assert_eq!(ck.meta.input.classes, 7);
    let last = metrics(&root.join("unl")).pop().unwrap();
    assert!(
        last["test_feature_cosine"].as_f64().unwrap() > 0.5 && last["test_accuracy"].is_null(),
        "{last}"
    );
    // Evaluated against a store of soft labels over other classes, or one that measures nothing
    // on data without hard labels: refused, saying why.
    label("train", "none", "unl-labels", "1", &["--unlabelled"]);
    let eval = |labels: &str| {
        let run = root.join("unl");
        let labels = root.join(labels);
        let args = [
            "eval",
            "--run",
            path(&run),
            "--data",
            path(&data),
            "--split",
            "train",
        ];
        distill(&[&args[..], &["--labels", path(&labels)]].concat())
    };
    let e = String::from_utf8_lossy(&eval("unl-labels").stderr).to_string();
    assert!(
        e.contains("the student has 7 classes, the teacher test labels 10"),
        "{e}"
    );
    let e = String::from_utf8_lossy(&eval("emb-unlabelled").stderr).to_string();
    assert!(e.contains("nothing to measure"), "{e}");

    // Resume: drop epoch 4's checkpoint and the final student, as a crash would.
    let run = root.join("kd");
    std::fs::remove_file(run.join("checkpoints").join("epoch-0004.ckpt")).unwrap();
    std::fs::remove_file(run.join("student.ckpt")).unwrap();
    ok(&train(
        "kd",
        &["--loss", "kd", "--feature-weight", "1", "--resume"],
    ));
    let again = metrics(&run);
    for (a, b) in m.iter().zip(&again) {
        for key in ["train_loss", "test_feature_cosine", "test_kl"] {
            assert_eq!(a[key], b[key], "epoch {}: {key}", a["epoch"]);
        }
    }
    // The final checkpoint keeps the projector; the export is the student alone.
    let ck = checkpoint::Checkpoint::read(&run.join("student.ckpt")).unwrap();
    let p = ck.meta.projector.expect("a projector");
    assert_eq!((p.outputs, p.optim_bytes), (POOLED, 0));
    let onnx = root.join("kd.onnx");
    let o = distill(&["export", path(&run), "--onnx", path(&onnx)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let s = TeacherSession::open(env, &onnx, Device::Cpu, 1).unwrap();
    assert_eq!(s.classes, 10);

    // A store without features, for a run with a feature term: refused, naming the store.
    let mut args = vec!["train", "--data", path(&data), "--labels"];
    let plain = root.join("plain");
    args.push(path(&plain));
    let out = root.join("refused");
    args.extend_from_slice(&[
        "--model",
        "mlp",
        "--feature-weight",
        "1",
        "--out",
        path(&out),
    ]);
    let o = distill(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("plain") && e.contains("--feature"),
        "{e}"
    );
}
