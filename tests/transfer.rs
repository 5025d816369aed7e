//! Transfer sets (issue 28): a folder of photos in sub-folders that are not the teacher's classes,
//! read `--unlabelled`, labels against a 1,000-class teacher, trains a teacher-only student and
//! is evaluated by agreement and KL; losses that need hard labels are refused naming their
//! flags, and a labelled dataset whose classes are not the teacher's is still refused.

use formats::onnx::ValueInfo;
use std::path::Path;

mod common;
use common::*;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A linear teacher on `[batch, 3, 16, 16]` inputs with `classes` outputs.
fn write_wide_teacher(file: &Path, classes: usize) {
    let d = 3 * 16 * 16;
    let w: Vec<f32> = (0..d * classes)
        .map(|i| (((i * 37 + i / d * 11) % 101) as f32 - 50.0) * 1e-3)
        .collect();
    let b: Vec<f32> = (0..classes).map(|c| (c % 7) as f32 * 0.01).collect();
    write_linear_teacher(file, ValueInfo::images("image", 3, 16, 16), w, b);
}

fn fails(o: &std::process::Output) -> String {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn photos_label_against_a_1000_class_teacher_as_a_transfer_set() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("photos");
    jpeg_folder(&root, 4, 4);
    let teacher = t.path().join("imagenet.onnx");
    write_wide_teacher(&teacher, 1000);
    let label = |out: &str, extra: &[&str]| {
        let out = t.path().join(out);
        let mut args = vec![
            "label",
            "--json",
            "--teacher",
            path(&teacher),
            "--data",
            path(&root),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", path(&out)]);
        distill(&args)
    };

    // Read with its classes, the folder is refused naming both class counts, with or without
    // --classes.
    let e = fails(&label("s0", &["--aug", "none"]));
    assert!(
        e.contains("has 1000 classes, the dataset 4") && e.contains("--unlabelled"),
        "{e}"
    );
    let e = fails(&label("s1", &["--aug", "none", "--classes", "1000"]));
    assert!(e.contains("the data holds 4 classes, not 1000"), "{e}");
    let e = fails(&label(
        "s2",
        &["--aug", "none", "--unlabelled", "--classes", "4"],
    ));
    assert!(e.contains("--classes") && e.contains("--unlabelled"), "{e}");

    // An image one folder deeper: read unlabelled, every image at any depth counts.
    let deep = root.join("train/c1/holiday");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::copy(root.join("train/c0/000.jpg"), deep.join("beach.jpg")).unwrap();
    let summary = ok(&label(
        "store",
        &[
            "--unlabelled",
            "--aug",
            "usi",
            "--epochs",
            "2",
            "--topk",
            "10",
            "--seed",
            "3",
        ],
    ));
    assert_eq!(summary["records"], 2 * 17, "{summary}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("store/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["format_version"], 4);
    assert_eq!(manifest["classes"], 1000);
    assert_eq!(manifest["dataset"]["labelled"], false);
    assert_eq!(manifest["dataset"]["samples"], 17);
    assert_eq!(
        manifest["quality"]["teacher_top1_accuracy"],
        serde_json::Value::Null
    );
    // The teacher's labels of every photo at full precision, to evaluate against.
    ok(&label(
        "test-store",
        &[
            "--unlabelled",
            "--aug",
            "none",
            "--topk",
            "1000",
            "--codec",
            "f16",
        ],
    ));

    let store = t.path().join("store");
    let train = |out: &str, flags: &[&str]| {
        let out = t.path().join(out);
        let mut args = vec![
            "train",
            "--json",
            "--data",
            path(&root),
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--batch",
            "8",
            "--test-split",
            "none",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--out", path(&out)]);
        distill(&args)
    };
    // Losses with a hard-label term are refused, naming the flags that make them teacher-only.
    let store_flag = ["--labels", path(&store)];
    let from_store = |loss: &[&'static str]| [&store_flag[..], loss].concat();
    let e = fails(&train(
        "r0",
        &from_store(&["--loss", "kd", "--kd-weight", "0.5"]),
    ));
    assert!(
        e.contains("--unlabelled") && e.contains("--kd-weight") && e.contains("--kd-only"),
        "{e}"
    );
    let e = fails(&train("r1", &from_store(&["--loss", "usi"])));
    assert!(e.contains("no hard labels"), "{e}");
    // Teacher-only students train.
    ok(&train(
        "kd",
        &from_store(&["--loss", "kd", "--kd-weight", "1"]),
    ));
    let m = metrics(&t.path().join("kd"));
    assert_eq!(m.len(), 2);
    let loss = m[1]["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    assert_eq!(m[1]["test_accuracy"], serde_json::Value::Null);
    ok(&train("usi", &from_store(&["--loss", "usi", "--kd-only"])));

    // Evaluated against the teacher's labels of the photos: agreement and KL, no accuracy.
    let test_store = t.path().join("test-store");
    let kd_run = t.path().join("kd");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--run", path(&kd_run), "--data", path(&root)];
        args.extend_from_slice(&["--split", "train"]);
        args.extend_from_slice(extra);
        distill(&args)
    };
    let r = ok(&eval(&["--labels", path(&test_store), "--json"]));
    assert_eq!(r["accuracy"], serde_json::Value::Null, "{r}");
    assert_eq!(r["samples"], 17);
    let agreement = r["agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement), "{r}");
    let kl = r["kl"].as_f64().unwrap();
    assert!(kl.is_finite() && kl >= 0.0, "{r}");
    assert_eq!(r["kl_vs"], "full");
    // Without the teacher's labels there is nothing to measure on unlabelled data.
    let e = fails(&eval(&["--unlabelled"]));
    assert!(e.contains("no hard labels"), "{e}");

    // Online on the photos: the teacher labels fresh views of every epoch, no store at all.
    let teacher_flags = [
        "--unlabelled",
        "--teacher",
        path(&teacher),
        "--aug",
        "light",
        "--size",
        "16",
        "--loss",
        "kd",
        "--kd-weight",
        "1",
    ];
    let o = ok(&train("online", &teacher_flags));
    let online = t.path().join("online");
    assert_eq!(o["students"].as_array().unwrap().len(), 1, "{o}");
    let m = metrics(&online);
    assert!(m[1]["train_loss"].as_f64().unwrap().is_finite());
    assert_eq!(m[1]["teacher_gap"], serde_json::Value::Null);
}

/// `distill train` over `data` from `store` (optional) and `teacher` (optional): an mlp, 2
/// epochs of batches of 32, kd at τ = 4, stream digests recorded.
fn train_kd(
    data: &Path,
    store: Option<&Path>,
    teacher: Option<&Path>,
    out: &Path,
) -> Vec<serde_json::Value> {
    let mut args = vec![
        "train",
        "--json",
        "--data",
        path(data),
        "--model",
        "mlp",
        "--loss",
        "kd",
        "--temperature",
        "4",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--seed",
        "5",
        "--test-split",
        "none",
        "--stream-digest",
        "--out",
        path(out),
    ];
    if let Some(s) = store {
        args.extend_from_slice(&["--labels", path(s)]);
    }
    if let Some(t) = teacher {
        args.extend_from_slice(&["--teacher", path(t), "--topk", "10", "--codec", "f16"]);
        if store.is_none() {
            args.extend_from_slice(&["--aug", "usi"]);
        }
    }
    ok(&distill(&args));
    metrics(out)
}

#[test]
fn online_teachers_see_the_stores_views_and_fresh_ones() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    let teacher = t.path().join("teacher.onnx");
    write_teacher(&teacher, 0.05, 0.0);
    let store = t.path().join("store");
    ok(&distill(&[
        "label",
        "--json",
        "--teacher",
        path(&teacher),
        "--data",
        path(&data),
        "--aug",
        "usi",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--topk",
        "10",
        "--codec",
        "f16",
        "--out",
        path(&store),
    ]));

    // Offline, and online over the store's replayed views: the same inputs bit for bit, and
    // teacher distributions within the f16 codec's error of the stored ones.
    let offline = train_kd(&data, Some(&store), None, &t.path().join("offline"));
    let checked = train_kd(
        &data,
        Some(&store),
        Some(&teacher),
        &t.path().join("checked"),
    );
    for e in 0..2 {
        assert_eq!(
            offline[e]["inputs_xxh3"], checked[e]["inputs_xxh3"],
            "epoch {e}"
        );
        assert!(offline[e]["inputs_xxh3"].is_string());
        let gap = checked[e]["teacher_gap"].as_f64().unwrap();
        assert!(gap <= 1e-3, "epoch {e}: {gap}");
        assert_eq!(offline[e]["teacher_gap"], serde_json::Value::Null);
    }
    // Online on fresh views: other inputs in every epoch, and it learns.
    let fresh = train_kd(&data, None, Some(&teacher), &t.path().join("fresh"));
    assert_ne!(fresh[0]["inputs_xxh3"], offline[0]["inputs_xxh3"]);
    assert_ne!(fresh[0]["inputs_xxh3"], fresh[1]["inputs_xxh3"]);
    assert!(fresh[1]["train_loss"].as_f64().unwrap() < fresh[0]["train_loss"].as_f64().unwrap());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("fresh/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["online"]["k"], 10);
    assert_eq!(config["online"]["teachers"][0]["file"], "teacher.onnx");

    // A teacher with a loss that does not use it, and one whose classes are not the data's.
    let o = distill(&[
        "train",
        "--data",
        path(&data),
        "--teacher",
        path(&teacher),
        "--loss",
        "ce",
        "--model",
        "mlp",
        "--test-split",
        "none",
        "--out",
        path(&t.path().join("ce")),
    ]);
    let e = fails(&o);
    assert!(e.contains("--teacher") && e.contains("--loss"), "{e}");
    let wide = t.path().join("wide.onnx");
    write_linear_teacher(
        &wide,
        image_input(),
        vec![0.01; SIDE * SIDE * 12],
        vec![0.0; 12],
    );
    let o = distill(&[
        "train",
        "--data",
        path(&data),
        "--teacher",
        path(&wide),
        "--model",
        "mlp",
        "--test-split",
        "none",
        "--out",
        path(&t.path().join("wide")),
    ]);
    let e = fails(&o);
    assert!(e.contains("has 12 classes, the dataset 10"), "{e}");
}

#[test]
fn a_labelled_split_and_unlabelled_data_make_one_store() {
    let t = tempfile::tempdir().unwrap();
    let (data, extra) = (t.path().join("data"), t.path().join("extra"));
    for (d, salt) in [(&data, 0), (&extra, 5)] {
        std::fs::create_dir_all(d).unwrap();
        write_split(d, "train", 200, salt);
    }
    let teacher = t.path().join("teacher.onnx");
    write_teacher(&teacher, 0.05, 0.0);
    let store = t.path().join("store");
    let list = [
        "--data",
        path(&data),
        "--data",
        path(&extra),
        "--unlabelled",
    ];
    let mut args = vec![
        "label",
        "--json",
        "--teacher",
        path(&teacher),
        "--aug",
        "usi",
    ];
    args.extend_from_slice(&list);
    args.extend_from_slice(&["--out", path(&store)]);
    let summary = ok(&distill(&args));
    assert_eq!(summary["records"], 400, "{summary}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["format_version"], 4);
    assert_eq!(m["dataset"]["format"], "list");
    assert_eq!(m["dataset"]["labelled"], false);
    let parts = m["datasets"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[0].get("labelled"),
        None,
        "the first part keeps its hard labels"
    );
    assert_eq!(parts[1]["labelled"], false);
    // Only the labelled half counts toward the teacher's accuracy.
    assert!(m["quality"]["teacher_accuracy_records"].as_u64().unwrap() <= 200);

    // A loss with a CE term trains on it (over the labelled records).
    let train = |out: &str, data_flags: &[&str]| {
        let mut args = vec![
            "train",
            "--json",
            "--labels",
            path(&store),
            "--model",
            "mlp",
        ];
        args.extend_from_slice(data_flags);
        args.extend_from_slice(&["--loss", "kd", "--kd-weight", "0.5", "--epochs", "1"]);
        args.extend_from_slice(&["--batch", "32", "--test-split", "none"]);
        let out = t.path().join(out);
        args.extend_from_slice(&["--out", path(&out)]);
        (distill(&args), out)
    };
    let (o, run) = train("run", &list);
    ok(&o);
    assert!(metrics(&run)[0]["train_loss"].as_f64().unwrap().is_finite());
    // The list's datasets in another order are refused, naming the one that differs.
    let swapped = [
        "--data",
        path(&extra),
        "--unlabelled",
        "--data",
        path(&data),
    ];
    let (o, _) = train("r1", &swapped);
    let e = fails(&o);
    assert!(
        e.contains("dataset 1 of the list") && e.contains("--unlabelled"),
        "{e}"
    );
    let (o, _) = train("r2", &["--data", path(&data)]);
    let e = fails(&o);
    assert!(e.contains("a list of 2 datasets"), "{e}");
}
