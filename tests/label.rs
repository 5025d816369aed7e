//! `distill label` end to end on a small IDX dataset with linear teachers written as ONNX.

use replay::apply::apply;

use datasets as dataset;
use formats::Recipe;
use formats::onnx::{Attr, InitData, Initializer, Model, Node};
use formats::view::{Kernel, ViewRule};
use label_store::LabelStore;
use replay::sampler::Sampler;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;
use teacher_infer::{Device, TeacherSession};

struct Setup {
    _t: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    teacher: PathBuf,
    teacher2: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    let teacher = root.join("t1.onnx");
    write_teacher(&teacher, 0.05, 0.0);
    let teacher2 = root.join("t2.onnx");
    write_teacher(&teacher2, 0.03, 1.0);
    Setup {
        _t: t,
        root,
        data,
        teacher,
        teacher2,
    }
}

/// The teacher's input for the record of sample `i` with `aug`: replayed, then normalized with
/// the test's mean 0.5 and std 0.25.
fn replayed_input(
    view: &ViewRule,
    aug: &formats::AugParams,
    data: &dyn dataset::Dataset,
    i: u32,
) -> Vec<f32> {
    let partner = aug.mix.map(|m| data.image(m.partner).unwrap());
    let mut x = vec![0f32; SIDE * SIDE];
    apply(
        view,
        aug,
        &data.image(i).unwrap(),
        partner.as_ref(),
        SIDE as u32,
        SIDE as u32,
        &mut x,
    )
    .unwrap();
    for v in &mut x {
        *v = (*v - 0.5) / 0.25;
    }
    x
}

/// A session of `teacher` reading its `pooled` feature output beside the logits.
fn pooled_session(teacher: &Path) -> TeacherSession {
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let outputs = teacher_infer::Outputs {
        logits: None,
        no_logits: false,
        feature: Some("pooled".into()),
    };
    TeacherSession::open_outputs(env, teacher, Device::Cpu, 1, Default::default(), &outputs)
        .unwrap()
}

/// Record (`e`, `i`) of `store`, and `session`'s logits and features of its replayed view.
fn on_record(
    session: &mut TeacherSession,
    store: &LabelStore,
    view: &ViewRule,
    data: &dyn dataset::Dataset,
    e: u32,
    i: u32,
) -> (formats::Record, Vec<f32>, Vec<f32>) {
    let rec = store.get(e, i).unwrap();
    let x = replayed_input(view, &rec.aug, data, i);
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    session
        .run_with_features(&x, 1, [1, SIDE, SIDE], &mut logits, Some(&mut features))
        .unwrap();
    (rec, logits, features)
}

/// `distill label` arguments with the test's defaults; a flag in `extra` replaces its default
/// (`--teacher` adds a teacher).
fn label_args(s: &Setup, out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let defaults = [
        ("--teacher", s.teacher.to_str().unwrap()),
        ("--data", s.data.to_str().unwrap()),
        ("--out", out.to_str().unwrap()),
        ("--epochs", "2"),
        ("--topk", "5"),
        ("--aug", "usi"),
        ("--seed", "3"),
        ("--batch", "32"),
        ("--mean", "0.5"),
        ("--std", "0.25"),
    ];
    let mut args = vec!["label".to_string()];
    for (flag, value) in defaults {
        if flag == "--teacher" || !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// [`label`] with `teachers` instead of the setup's teacher.
fn label_teachers(s: &Setup, teachers: &[&Path], out: &str, extra: &[&str]) -> Output {
    let mut a = label_args(s, &s.root.join(out), extra);
    let at = a.iter().position(|x| x == "--teacher").unwrap();
    a.drain(at..at + 2);
    for t in teachers {
        a.extend(["--teacher".into(), t.to_str().unwrap().into()]);
    }
    a.push("--json".into());
    distill(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `distill label --json` with the test's defaults (see [`label_args`]) into `ROOT/out`.
fn label(s: &Setup, out: &str, extra: &[&str]) -> Output {
    let mut args = label_args(s, &s.root.join(out), extra);
    args.push("--json".into());
    distill(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn records_match_a_direct_session_call_on_the_replayed_input() {
    let s = setup();
    let v = ok(&label(&s, "store", &["--interpolation", "bicubic"]));
    assert_eq!(v["records"], 800);
    assert_eq!(v["labelled"], 800);
    let store = LabelStore::open(&s.root.join("store")).unwrap();
    assert_eq!(store.manifest.format_version, 3);
    assert_eq!(store.manifest.recipe["interpolation"], "bicubic");
    let bicubic = ViewRule {
        kernel: Kernel::Pillow(formats::Interpolation::Bicubic),
        center: None,
    };
    assert_eq!(store.manifest.teachers.len(), 1);
    assert_eq!(store.manifest.teachers[0].classes, 10);
    let data = dataset::open(&s.data, None, "train").unwrap();
    assert_eq!(&store.manifest.dataset, data.fingerprint());

    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let mut session = TeacherSession::open(env, &s.teacher, Device::Cpu, 1).unwrap();
    let sampler = Sampler::new(&Recipe::usi(), 3, N as u32, SIDE as u32, SIDE as u32).unwrap();
    let dims = |j: u32| data.dims(j);
    for (e, i) in [(0u32, 0u32), (0, 5), (1, 77), (1, 399), (0, 250)] {
        let rec = store.get(e, i).unwrap();
        // The stored parameters are the ones the sampler draws for (seed, epoch, sample)…
        assert_eq!(rec.aug, sampler.sample(e, i, &dims).unwrap());
        // …and the stored label is what the teacher says about the replayed input.
        let x = replayed_input(&bicubic, &rec.aug, data.as_ref(), i);
        let mut logits = Vec::new();
        session.run(&x, 1, [1, SIDE, SIDE], &mut logits).unwrap();
        let want = formats::SoftLabel::from_logits(&logits, 5).unwrap();
        assert_eq!(rec.label.indices, want.indices, "epoch {e} sample {i}");
        for (a, b) in rec.label.logits.iter().zip(&want.logits) {
            assert!((a - b).abs() <= formats::Q8_STEP / 2.0 + 1e-4, "{a} vs {b}");
        }
    }
    let q = &store.manifest.quality;
    assert_eq!(q.teacher_accuracy_records, 0, "usi mixes every record");
    assert!(q.reconstruction_kl_tau1.is_some());

    // Without augmentation, the template teacher is right on these easy images.
    let v = ok(&label(&s, "plain", &["--aug", "none"]));
    let plain = LabelStore::open(&s.root.join("plain")).unwrap();
    assert_eq!(
        plain.manifest.recipe["interpolation"], "bilinear",
        "the default"
    );
    let acc = v["quality"]["teacher_top1_accuracy"].as_f64().unwrap();
    assert!(acc > 0.95, "teacher accuracy {acc}");
    assert_eq!(v["quality"]["teacher_accuracy_records"], 800);
}

#[test]
fn ensembles_are_the_mean_of_single_teachers() {
    let s = setup();
    let t2 = s.teacher2.to_str().unwrap().to_string();
    ok(&label(
        &s,
        "both",
        &["--teacher", &t2, "--ensemble", "logits", "--aug", "light"],
    ));
    let both = LabelStore::open(&s.root.join("both")).unwrap();
    assert_eq!(both.manifest.teachers.len(), 2);
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let data = dataset::open(&s.data, None, "train").unwrap();
    let mut s1 = TeacherSession::open(env, &s.teacher, Device::Cpu, 1).unwrap();
    let mut s2 = TeacherSession::open(env, &s.teacher2, Device::Cpu, 1).unwrap();
    for i in [0u32, 9, 123] {
        let rec = both.get(1, i).unwrap();
        let view = ViewRule::of_store(2, &both.manifest.recipe).unwrap();
        let x = replayed_input(&view, &rec.aug, data.as_ref(), i);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s1.run(&x, 1, [1, SIDE, SIDE], &mut a).unwrap();
        s2.run(&x, 1, [1, SIDE, SIDE], &mut b).unwrap();
        let mean: Vec<f32> = a.iter().zip(&b).map(|(p, q)| (p + q) / 2.0).collect();
        let want = formats::SoftLabel::from_logits(&mean, 5).unwrap();
        assert_eq!(rec.label.indices, want.indices);
    }
    let e = distill(&[
        "label",
        "--teacher",
        s.teacher.to_str().unwrap(),
        "--data",
        s.data.to_str().unwrap(),
        "--out",
        s.root.join("both").to_str().unwrap(),
    ]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("already holds a finished"));
}

#[test]
fn shards_merged_equal_one_run() {
    let s = setup();
    ok(&label(&s, "whole", &[]));
    ok(&label(&s, "s0", &["--shard", "0/3"]));
    ok(&label(&s, "s1", &["--shard", "1/3"]));
    ok(&label(&s, "s2", &["--shard", "2/3"]));
    let parts: Vec<String> = ["s2", "s0", "s1"]
        .iter()
        .map(|p| s.root.join(p).to_str().unwrap().to_string())
        .collect();
    let merged = s.root.join("merged");
    let o = distill(&[
        "merge",
        &parts[0],
        &parts[1],
        &parts[2],
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        LabelStore::open(&merged).unwrap(),
        LabelStore::open(&s.root.join("whole")).unwrap(),
    );
    for e in 0..2 {
        let (x, y) = (a.decode_epoch(e).unwrap(), b.decode_epoch(e).unwrap());
        for i in 0..N as u32 {
            assert_eq!(x.row(i), y.row(i), "epoch {e} sample {i}");
        }
    }
}

#[test]
fn bad_inputs_are_named() {
    let s = setup();
    let bad = s.root.join("bad.onnx");
    std::fs::write(&bad, b"nope").unwrap();
    let o = distill(&[
        "label",
        "--teacher",
        bad.to_str().unwrap(),
        "--data",
        s.data.to_str().unwrap(),
        "--out",
        s.root.join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.onnx"));
    let o = label(&s, "y", &["--size", "16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("height 12 (model) vs 16"),
        "{err}"
    );
    let o = label(&s, "z", &["--mean", "0.5,0.5"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 values for 1 channels"));
    // An unknown filter: clap refuses it, listing the ones there are.
    let o = label(&s, "v", &["--interpolation", "lanczos"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("lanczos") && err.contains("bilinear, bicubic"),
        "{err}"
    );
    let o = label(&s, "w", &["--device", "cuda"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cuda:0"), "{err}");
    assert!(!s.root.join("w").join("manifest.json").exists());
}

#[test]
fn killed_run_resumes_to_the_uninterrupted_store() {
    killed_run_resumes(&[], "partial");
}

/// With a feature head (the second teacher of an ensemble has the output): every file, labels
/// and features, resumes to the bytes of the uninterrupted run.
#[test]
fn killed_run_with_features_resumes_to_the_uninterrupted_store() {
    let t = tempfile::tempdir().unwrap();
    let ft = t.path().join("features.onnx");
    write_feature_teacher(&ft);
    killed_run_resumes(
        &["--teacher", ft.to_str().unwrap(), "--feature", "pooled"],
        "partial",
    );
}

/// The teacher's feature output of each record's exact view is stored beside its label,
/// within q8's error; outputs are chosen by name, and a missing or misshapen one is refused
/// naming what the model has.
#[test]
fn features_of_the_exact_view_are_stored_and_outputs_chosen_by_name() {
    let s = setup();
    let ft = s.root.join("features.onnx");
    write_feature_teacher(&ft);
    // This test's teacher alone; `extra[0]` names the store.
    let run = |extra: &[&str]| label_teachers(&s, &[&ft], extra[0], &extra[1..]);
    let v = ok(&run(&["feat", "--feature", "pooled"]));
    assert_eq!(v["records"], 800);
    let store = LabelStore::open(&s.root.join("feat")).unwrap();
    assert_eq!(store.manifest.format_version, 5);
    assert_eq!(
        store.manifest.classes, 10,
        "the logits output, found by name"
    );
    let heads = store.feature_heads();
    assert_eq!((heads.len(), heads[0].output.as_str()), (1, "pooled"));
    assert_eq!(
        (heads[0].dim, heads[0].stored_dim),
        (POOLED as u32, POOLED as u32)
    );
    let feats = store.features(0).unwrap();
    assert!(
        feats.head.quality.mean_cosine > 0.999,
        "{:?}",
        feats.head.quality
    );

    let mut session = pooled_session(&ft);
    let data = dataset::open(&s.data, None, "train").unwrap();
    let view = store.view_rule().unwrap();
    let mut got = vec![0f32; POOLED];
    for (e, i) in [(0u32, 0u32), (1, 77), (1, 399), (0, 250)] {
        let (rec, logits, want) = on_record(&mut session, &store, &view, data.as_ref(), e, i);
        feats.get_into(e, i, &mut got).unwrap();
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max > 1.0,
            "the teacher's features carry something: {want:?}"
        );
        for (a, b) in want.iter().zip(&got) {
            assert!(
                (a - b).abs() <= max / 254.0 + 1e-6,
                "epoch {e} sample {i}: {a} vs {b}"
            );
        }
        let label = formats::SoftLabel::from_logits(&logits, 5).unwrap();
        assert_eq!(rec.label.indices, label.indices);
    }
    // inspect reports the head: bytes per record and the reconstruction.
    let o = distill(&["inspect", s.root.join("feat").to_str().unwrap(), "--json"]);
    let v = ok(&o);
    let f = &v["features"][0];
    assert_eq!(f["output"], "pooled");
    assert_eq!(f["codec"], "q8");
    assert!(f["bytes_per_record"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["quality"]["mean_cosine"].as_f64().unwrap() > 0.999, "{f}");
    let o = distill(&["inspect", s.root.join("feat").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("features") && text.contains("pooled"),
        "{text}"
    );

    // Refusals name the outputs the model has, or the shape that is not a pooled embedding.
    let o = run(&["a", "--feature", "nope"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("\"nope\""), "{err}");
    assert!(
        err.contains("pooled") && err.contains("logits") && err.contains("tokens"),
        "{err}"
    );
    let o = run(&["b", "--feature", "tokens"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("[batch, D]") && err.contains("tokens"),
        "{err}"
    );
    let o = run(&["c", "--logits", "nope"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--logits") && err.contains("pooled"),
        "{err}"
    );
    // The pooled output named as the logits: a 12-class teacher, which the 10-class data refuses.
    let o = run(&["d", "--logits", "pooled"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("has 12 classes"),
        "{err}"
    );
}

/// An embedding-only teacher (its one output the feature) or `--logits none` labels a store of
/// views and features without soft labels (version 6): the same views and the same feature
/// bytes as a store with soft labels, inspect and verify read it, and what cannot be done with
/// it is refused naming why.
#[test]
fn embedding_only_teachers_store_views_and_features_without_soft_labels() {
    let s = setup();
    let (ft, et) = (s.root.join("features.onnx"), s.root.join("embed.onnx"));
    write_feature_teacher(&ft);
    write_embedding_teacher(&et);
    let run =
        |teachers: &[&Path], out: &str, extra: &[&str]| label_teachers(&s, teachers, out, extra);
    ok(&run(&[&ft], "labelled", &["--feature", "pooled"]));
    let v = ok(&run(&[&et], "embed", &["--feature", "pooled"]));
    assert_eq!(v["records"], 800);
    ok(&run(
        &[&ft],
        "none",
        &["--feature", "pooled", "--logits", "none"],
    ));
    let labelled = LabelStore::open(&s.root.join("labelled")).unwrap();
    for dir in ["embed", "none"] {
        let store = LabelStore::open(&s.root.join(dir)).unwrap();
        let m = &store.manifest;
        assert_eq!((m.format_version, m.classes, m.k), (6, 0, 0), "{dir}");
        assert!(!store.layout.has_labels());
        assert_eq!(m.teachers[0].classes, 0);
        // The views are the labelled store's, record for record.
        for (e, i) in [(0u32, 0u32), (1, 77), (1, 399), (0, 250)] {
            let (a, b) = (store.get(e, i).unwrap(), labelled.get(e, i).unwrap());
            assert_eq!(a.aug, b.aug, "{dir}: epoch {e} sample {i}");
            assert_eq!(a.label.k(), 0);
        }
        // The stored features are the labelled store's, bit for bit (the files differ only in
        // their version fields and checksums).
        let (fa, fb) = (store.features(0).unwrap(), labelled.features(0).unwrap());
        let (mut a, mut b) = (vec![0f32; POOLED], vec![0f32; POOLED]);
        for e in 0..2 {
            for i in 0..400 {
                fa.get_into(e, i, &mut a).unwrap();
                fb.get_into(e, i, &mut b).unwrap();
                assert!(a == b, "{dir}: epoch {e} sample {i}: {a:?} vs {b:?}");
            }
        }
        // Rows of the view alone: far smaller shards than the labelled store's.
        assert!(m.stored_bytes() < labelled.manifest.stored_bytes(), "{dir}");
    }
    let dir = s.root.join("embed");
    let o = distill(&[
        "inspect",
        dir.to_str().unwrap(),
        "--verify",
        "--json",
        "--records",
        "0..2",
    ]);
    let v = ok(&o);
    assert_eq!(v["verify"]["ok"], true, "{v}");
    assert_eq!((v["k"].as_u64(), v["classes"].as_u64()), (Some(0), Some(0)));
    assert!(v["top1_histogram"].as_array().unwrap().is_empty());
    assert_eq!(v["features"][0]["output"], "pooled");
    let rec = &v["dump"][1];
    assert_eq!(rec["sample"], 1);
    assert!(
        rec["aug"].is_object() && rec.get("probabilities").is_none(),
        "{rec}"
    );
    let o = distill(&["inspect", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("labels       none: an embedding-only teacher"),
        "{text}"
    );
    assert!(
        !text.contains("top-1 accuracy") && text.contains("no logits (embedding-only)"),
        "{text}"
    );
    let o = distill(&["inspect", dir.to_str().unwrap(), "--records", "1..2"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("epoch 0 sample 1: ") && !text.contains("tail"),
        "{text}"
    );

    // An ensemble of embedding-only teachers: a head each (here the same network twice).
    let v = ok(&run(
        &[&ft, &et],
        "pair",
        &["--feature", "pooled", "--logits", "none"],
    ));
    assert_eq!(v["records"], 800);
    let pair = LabelStore::open(&s.root.join("pair")).unwrap();
    assert_eq!((pair.feature_heads().len(), pair.manifest.k), (2, 0));
    let (h0, h1) = (pair.features(0).unwrap(), pair.features(1).unwrap());
    let (mut a, mut b) = (vec![0f32; POOLED], vec![0f32; POOLED]);
    h0.get_into(1, 123, &mut a).unwrap();
    h1.get_into(1, 123, &mut b).unwrap();
    assert!(a == b && a.iter().any(|&x| x != 0.0), "{a:?} vs {b:?}");

    // Refused: nothing to store, and an ensemble of teachers with and without logits.
    let o = run(&[&ft], "a", &["--logits", "none"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("gives nothing to store"),
        "{err}"
    );
    // Without --feature, the one output is taken for the logits (the default), here refused
    // for its 12 "classes".
    let o = run(&[&et], "b", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("has 12 classes"),
        "{err}"
    );
    let o = run(&[&ft, &et], "c", &["--feature", "pooled"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("all give logits or none"),
        "{err}"
    );
}

/// Decode-once blocks over a permutation (usi mixes) stage whole blocks in a log until the end:
/// killed while staging, the run resumes after its last complete block to the same bytes.
#[test]
fn killed_staged_run_resumes_to_the_uninterrupted_store() {
    killed_run_resumes(&["--block", "50"], "staging");
}

fn killed_run_resumes(extra: &[&str], watch: &str) {
    let s = setup();
    let mut flags = vec!["--epochs", "60", "--chunk-records", "50", "--batch", "16"];
    flags.extend(extra);
    ok(&label(&s, "reference", &flags));
    let out = s.root.join("killed");
    let mut args = long_run(&s, &out);
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = out.join(format!("shard-0000000000-0000000400.dls.{watch}"));
    // A file grows page by page while a write is under way, so its size can pass a threshold in
    // the middle of a write: for the staging log, wait until its first group (a 40-byte log
    // header, a 40-byte group header with the payload length at bytes 20..24, the payload) is
    // whole, so that the kill lands after a complete block. Chunk files hold many small chunks.
    let written = |p: &std::path::Path| -> bool {
        if watch != "staging" {
            return std::fs::metadata(p).map_or(0, |m| m.len()) >= 20_000;
        }
        let bytes = std::fs::read(p).unwrap_or_default();
        bytes
            .get(60..64)
            .is_some_and(|l| bytes.len() >= 80 + u32::from_le_bytes(l.try_into().unwrap()) as usize)
    };
    let t0 = std::time::Instant::now();
    while !written(&partial) {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the labeller never wrote a chunk"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let dead = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.join("manifest.json").exists(),
        "finished before the kill"
    );
    let o = distill(&["inspect", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("has not finished") && err.contains(&format!("pid {dead} on host")),
        "{err}"
    );
    // Resuming against changed data is refused, naming the field.
    let other = s.root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_data(&other);
    let mut img = std::fs::read(other.join("train-images-idx3-ubyte")).unwrap();
    img[100] ^= 1;
    std::fs::write(other.join("train-images-idx3-ubyte"), img).unwrap();
    let mut changed = args.clone();
    let at = changed.iter().position(|a| a == "--data").unwrap();
    changed[at + 1] = other.to_str().unwrap().into();
    changed.push("--resume".into());
    let o = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(&changed)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("dataset.content_xxh3 differs"),
        "{err}"
    );
    // The real resume.
    args.push("--resume".into());
    let o = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    let v = ok(&o);
    assert!(
        v["labelled"].as_u64().unwrap() < 24_000,
        "resume relabelled everything: {v}"
    );
    // Every file: the label shard and, with --feature, the feature file.
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dls") || n.ends_with(".dlf"))
            .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
            .collect();
        v.sort();
        v
    };
    let want = files(&s.root.join("reference"));
    let feature = extra.contains(&"--feature");
    assert_eq!(want.len(), 1 + usize::from(feature));
    assert_eq!(files(&out), want);
    let strip = |p: PathBuf| {
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap())
                .unwrap();
        m["created"] = serde_json::Value::Null;
        m
    };
    assert_eq!(strip(out), strip(s.root.join("reference")));
}

#[test]
fn nan_logits_stop_with_the_sample() {
    let s = setup();
    // log of a normalized input is NaN wherever the input is negative.
    let d = (SIDE * SIDE) as i64;
    let m = Model {
        graph_name: "nan".into(),
        producer: "distill-tests".into(),
        opset: 17,
        nodes: vec![
            Node::new("Flatten", "flat", &["image"], &["x"]).attr("axis", Attr::Int(1)),
            Node::new("Log", "log", &["x"], &["lx"]),
            Node::new("MatMul", "mm", &["lx", "W"], &["logits"]),
        ],
        initializers: vec![Initializer {
            name: "W".into(),
            dims: vec![d, 10],
            data: InitData::Float(vec![0.01; (d * 10) as usize]),
        }],
        inputs: vec![image_input()],
        outputs: vec![logits_output()],
        metadata: vec![],
    };
    let nan = s.root.join("nan.onnx");
    std::fs::write(&nan, m.to_bytes()).unwrap();
    // In an ensemble (the helper's teacher plus this one), under both ensemble modes.
    for how in ["probs", "logits"] {
        let o = label(
            &s,
            how,
            &["--teacher", nan.to_str().unwrap(), "--ensemble", how],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "NaN logits were stored");
        assert!(
            err.contains("nan.onnx") && err.contains("sample 0 (epoch 0)") && err.contains("NaN"),
            "{err}"
        );
        assert!(!s.root.join(how).join("manifest.json").exists());
    }
}

#[test]
fn show_renders_the_replayed_inputs() {
    let s = setup();
    ok(&label(&s, "store", &[]));
    let store_dir = s.root.join("store");
    let png = s.root.join("grid.png");
    let o = distill(&[
        "inspect",
        store_dir.to_str().unwrap(),
        "--data",
        s.data.to_str().unwrap(),
        "--show",
        "398..404",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 records"));
    let grid = image::open(&png).unwrap().to_rgb8();
    // 12 px inputs are enlarged 10× (to 120 px), tiles are 128 wide, three to a row.
    assert_eq!(grid.width(), 3 * 128);
    // The first tile shows record 398 = (epoch 0, sample 398), replayed.
    let store = LabelStore::open(&store_dir).unwrap();
    let data = dataset::open(&s.data, None, "train").unwrap();
    let rec = store.get(0, 398).unwrap();
    let partner = rec.aug.mix.map(|m| data.image(m.partner).unwrap());
    let mut x = vec![0f32; SIDE * SIDE];
    apply(
        &ViewRule::of_store(2, &store.manifest.recipe).unwrap(),
        &rec.aug,
        &data.image(398).unwrap(),
        partner.as_ref(),
        SIDE as u32,
        SIDE as u32,
        &mut x,
    )
    .unwrap();
    for (px, py) in [(0usize, 0usize), (5, 7), (11, 11)] {
        let want = (x[py * SIDE + px] * 255.0).round() as u8;
        let got = grid.get_pixel(4 + px as u32 * 10 + 5, 4 + py as u32 * 10 + 5);
        assert_eq!(got.0, [want; 3], "pixel ({px}, {py})");
    }
    // The third record is (epoch 1, sample 0): its tile is not blank.
    let tile = (2 * 128 + 4..2 * 128 + 124).flat_map(|x| (4..124).map(move |y| (x, y)));
    assert!(
        tile.clone()
            .any(|(x, y)| grid.get_pixel(x, y).0 != [255; 3])
    );
    // Data that is not what the store was labelled from is refused.
    let other = s.root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_data(&other);
    let mut lab = std::fs::read(other.join("train-labels-idx1-ubyte")).unwrap();
    lab[8] = (lab[8] + 1) % 10;
    std::fs::write(other.join("train-labels-idx1-ubyte"), lab).unwrap();
    let o = distill(&[
        "inspect",
        store_dir.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
        "--show",
        "0..2",
        "--out",
        png.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("dataset.labels_xxh3 differs"),
        "{err}"
    );
}

/// The IoBinding path CUDA runs (reused host buffers bound once per shape) gives the plain
/// path's logits bit for bit, across batch sizes that rebind and reuse the buffers.
#[test]
fn the_binding_path_equals_the_plain_path() {
    let s = setup();
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    let mut plain = TeacherSession::open(env, &s.teacher, Device::Cpu, 1).unwrap();
    let mut bound = TeacherSession::open(env, &s.teacher, Device::Cpu, 1).unwrap();
    bound.set_binding(true);
    let per = SIDE * SIDE;
    for (round, n) in [7usize, 7, 32, 3, 7].into_iter().enumerate() {
        let x: Vec<f32> = (0..n * per)
            .map(|i| ((i * 7919 + round * 131) % 255) as f32 / 255.0)
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plain.run(&x, n, [1, SIDE, SIDE], &mut a).unwrap();
        bound.run(&x, n, [1, SIDE, SIDE], &mut b).unwrap();
        assert_eq!(a.len(), n * 10);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "batch of {n}"
        );
    }
    // With a feature output both outputs are bound, and features asked for or not (the
    // binding follows) the two paths agree on both.
    let ft = s.root.join("features.onnx");
    write_feature_teacher(&ft);
    let (mut plain, mut bound) = (pooled_session(&ft), pooled_session(&ft));
    bound.set_binding(true);
    for (round, (n, with)) in [(7usize, true), (7, false), (32, true), (3, true)]
        .into_iter()
        .enumerate()
    {
        let x: Vec<f32> = (0..n * per)
            .map(|i| ((i * 7919 + round * 131) % 255) as f32 / 255.0)
            .collect();
        let (mut a, mut b, mut fa, mut fb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        plain
            .run_with_features(&x, n, [1, SIDE, SIDE], &mut a, with.then_some(&mut fa))
            .unwrap();
        bound
            .run_with_features(&x, n, [1, SIDE, SIDE], &mut b, with.then_some(&mut fb))
            .unwrap();
        assert_eq!(
            (a.len(), fa.len()),
            (n * 10, if with { n * POOLED } else { 0 })
        );
        let same = |p: &[f32], q: &[f32]| {
            p.len() == q.len() && p.iter().zip(q).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        assert!(
            same(&a, &b) && same(&fa, &fb),
            "batch of {n}, features {with}"
        );
        assert!(
            !with || fa.iter().any(|&v| v > 0.0),
            "features carry something"
        );
    }
}

/// The arguments of a labelling run long enough (about a second or more) that a second
/// process started with it overlaps it.
fn long_run(s: &Setup, out: &std::path::Path) -> Vec<String> {
    let flags = [
        "--threads",
        "1",
        "--epochs",
        "60",
        "--chunk-records",
        "50",
        "--batch",
        "16",
    ];
    label_args(s, out, &flags)
}

#[test]
fn two_writers_on_one_directory_never_both_write() {
    let s = setup();
    let reference = s.root.join("reference");
    let o = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(long_run(&s, &reference))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = "shard-0000000000-0000000400.dls";
    let want = std::fs::read(reference.join(name)).unwrap();
    let modes: [(&str, &[&str]); 3] = [
        ("plain", &[]),
        ("resume", &["--resume"]),
        ("force", &["--force"]),
    ];
    for i in 0..modes.len() {
        for j in i..modes.len() {
            let (a, b) = (modes[i], modes[j]);
            let out = s.root.join(format!("{}-{}", a.0, b.0));
            let spawn = |extra: &[&str]| {
                Command::new(env!("CARGO_BIN_EXE_distill"))
                    .args(long_run(&s, &out))
                    .args(extra)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            };
            let mut children = [spawn(a.1), spawn(b.1)];
            let pids = [children[0].id(), children[1].id()];
            // Wait for both, remembering which ended first.
            let mut ended: Vec<(usize, std::process::ExitStatus)> = Vec::new();
            let t0 = std::time::Instant::now();
            while ended.len() < 2 {
                for (k, c) in children.iter_mut().enumerate() {
                    if ended.iter().all(|(e, _)| *e != k)
                        && let Some(st) = c.try_wait().unwrap()
                    {
                        ended.push((k, st));
                    }
                }
                assert!(t0.elapsed().as_secs() < 120, "{} + {}: no end", a.0, b.0);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let (loser, lost) = ended[0];
            let (winner, won) = ended[1];
            let mut err = String::new();
            use std::io::Read;
            children[loser]
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let pair = format!("{} + {}", a.0, b.0);
            assert!(!lost.success(), "{pair}: the first to end succeeded: {err}");
            assert!(won.success(), "{pair}: the writer failed");
            assert!(
                err.contains(&format!("is being written by pid {}", pids[winner])),
                "{pair}: {err}"
            );
            assert_eq!(std::fs::read(out.join(name)).unwrap(), want, "{pair}");
            let v = ok(&distill(&[
                "inspect",
                out.to_str().unwrap(),
                "--verify",
                "--json",
            ]));
            assert_eq!(v["verify"]["ok"], true, "{pair}: {v}");
        }
    }
}

#[test]
fn resuming_a_finished_store_is_a_success_without_work() {
    let s = setup();
    ok(&label(&s, "done", &[]));
    let dir = s.root.join("done");
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "writer.lock")
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot();
    for _ in 0..2 {
        let v = ok(&label(&s, "done", &["--resume"]));
        assert_eq!(v["labelled"], 0, "{v}");
        assert_eq!(v["already_complete"], true, "{v}");
        assert_eq!(v["records"], 800, "{v}");
        assert_eq!(snapshot(), before);
    }
    let o = label(&s, "done", &["--resume", "--seed", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("it is finished, and seed differs"),
        "{err}"
    );
    let o = label(&s, "done", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already holds a finished label store"),
        "{err}"
    );
    assert_eq!(snapshot(), before);
    // The human form says so too.
    let args = label_args(&s, &dir, &["--resume"]);
    let o = distill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to do"));
}

#[test]
fn image_folders_decode_each_image_once_for_all_epochs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let data = root.join("data");
    jpeg_folder(&data, 3, 10);
    let teacher = root.join("rgb.onnx");
    write_rgb_teacher(&teacher);
    let run = |out: &str, extra: &[&str]| -> Output {
        let mut args = vec![
            "label",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "3",
            "--topk",
            "2",
            "--seed",
            "1",
            "--batch",
            "4",
            "--json",
        ];
        let out = root.join(out);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(extra);
        distill(&args)
    };
    let shard = "shard-0000000000-0000000030.dls";
    let ds = datasets::open(&data, None, "train").unwrap();

    // Default for image folders: one block of ≤ 1024 images over a permutation (usi mixes).
    let v = ok(&run("usi", &["--aug", "usi"]));
    assert_eq!(v["labelled"], 90);
    assert_eq!(v["images_decoded"], 30, "{v}");
    assert_eq!(v["blocks"]["order"], "permuted");
    assert_eq!(v["blocks"]["images"], 1024);
    // Today's path for comparison: every record decodes itself and its partner.
    let v = ok(&run("usi-per-record", &["--aug", "usi", "--block", "0"]));
    assert_eq!(v["images_decoded"], 180, "{v}");
    assert!(v["blocks"].is_null());

    // Small blocks, by count and by bytes (a 40×30 RGB image is 3,600 bytes): every partner is
    // in its primary's block, and each image is still decoded once.
    for (name, extra, most) in [
        ("by-count", ["--block", "8", "--block-mem", "1G"], 8),
        ("by-bytes", ["--block", "1024", "--block-mem", "10K"], 2),
    ] {
        let mut flags = vec!["--aug", "usi"];
        flags.extend(extra);
        let v = ok(&run(name, &flags));
        assert_eq!(v["images_decoded"], 30, "{name}: {v}");
        let store = LabelStore::open(&root.join(name)).unwrap();
        let cfg = store.manifest.blocks.unwrap();
        let plan = replay::block::BlockPlan::new(cfg, 1, store.manifest.samples, &|s| {
            datasets::Dataset::dims(ds.as_ref(), s).map(|(w, h)| u64::from(w * h * 3))
        })
        .unwrap();
        assert!(
            (0..plan.len()).all(|b| plan.block(b).len() <= most),
            "{name}"
        );
        assert!(plan.len() > 1, "{name}");
        for e in 0..3 {
            for s in 0..30 {
                let rec = store.get(e, s).unwrap();
                let m = rec.aug.mix.expect("usi mixes every record");
                assert_eq!(
                    plan.locate(m.partner).unwrap().0,
                    plan.locate(s).unwrap().0,
                    "{name}: sample {s} epoch {e} mixed outside its block"
                );
            }
        }
    }

    // Without mixing, blocks run in sample order and change nothing but the decode count: the
    // shard has the bytes of the per-record run.
    let v = ok(&run("light", &["--aug", "light"]));
    assert_eq!(v["images_decoded"], 30);
    assert_eq!(v["blocks"]["order"], "sequential");
    let v = ok(&run(
        "light-per-record",
        &["--aug", "light", "--block", "0"],
    ));
    assert_eq!(v["images_decoded"], 90);
    assert_eq!(
        std::fs::read(root.join("light").join(shard)).unwrap(),
        std::fs::read(root.join("light-per-record").join(shard)).unwrap()
    );

    // A student trains from the block store on ImageNet's layout (train/ and val/, no test/):
    // the stream follows the blocks (one decode per image per epoch), and the per-epoch test
    // pass and `eval` use val/ on centre crops.
    let val = data.join("val");
    for c in 0..3 {
        std::fs::create_dir_all(val.join(format!("c{c}"))).unwrap();
        for i in 0..2 {
            let name = format!("c{c}/{i:03}.jpg");
            std::fs::copy(data.join("train").join(&name), val.join(&name)).unwrap();
        }
    }
    let student = root.join("student");
    let v = ok(&train_mlp_kd(&data, &root.join("usi"), &student));
    let last = &v["students"][0]["last"];
    assert_eq!(last["images_decoded"], 30, "{v}");
    let acc = last["test_accuracy"].as_f64().expect("a test pass on val/");
    let e = ok(&distill(&[
        "eval",
        "--json",
        "--run",
        student.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]));
    assert_eq!(e["samples"], 6);
    assert_eq!(e["accuracy"].as_f64().unwrap(), acc);

    // The allocator changes no result: the same student on the system allocator
    // (DISTILL_ALLOCATOR=system; mimalloc is the default, src/alloc.rs) trains to the same
    // losses and accuracies, bit for bit.
    let system = root.join("student-system-alloc");
    ok(&train_mlp_kd_env(
        &[("DISTILL_ALLOCATOR", "system")],
        &data,
        &root.join("usi"),
        &system,
    ));
    let results = |run: &std::path::Path| -> Vec<(f64, Option<f64>)> {
        metrics(run)
            .iter()
            .map(|v| {
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["test_accuracy"].as_f64(),
                )
            })
            .collect()
    };
    assert_eq!(results(&student).len(), 2);
    assert_eq!(results(&system), results(&student));

    // A truncated JPEG stops the run naming the file, keeping what it labelled: a resume on
    // the same data stops at the same file again. Repairing the file changes the dataset (its
    // index entry), so the store must then be redone; it equals an undamaged run's.
    let victim = data.join("train/c1/004.jpg");
    let good = std::fs::read(&victim).unwrap();
    // Truncated: the header (and the size the dataset index reads from it) is intact.
    std::fs::write(&victim, &good[..good.len() / 2]).unwrap();
    for extra in [&[][..], &["--resume"][..]] {
        let mut flags = vec!["--aug", "usi", "--block", "8"];
        flags.extend(extra);
        let o = run("damaged", &flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a truncated JPEG was labelled");
        assert!(
            err.contains("c1/004.jpg") && err.contains("truncated"),
            "{err}"
        );
    }
    assert!(
        root.join("damaged")
            .join(format!("{shard}.staging"))
            .exists()
    );
    std::fs::write(&victim, &good).unwrap();
    let o = run("damaged", &["--aug", "usi", "--block", "8", "--resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("dataset.content_xxh3 differs"), "{err}");
    ok(&run(
        "damaged",
        &["--aug", "usi", "--block", "8", "--force"],
    ));
    ok(&run("clean", &["--aug", "usi", "--block", "8"]));
    assert_eq!(
        std::fs::read(root.join("damaged").join(shard)).unwrap(),
        std::fs::read(root.join("clean").join(shard)).unwrap()
    );
}

/// `distill doctor` names the allocator the process runs on: mimalloc with distill's purge delay
/// unless mimalloc's own variable or `DISTILL_ALLOCATOR=system` says otherwise; a value naming
/// no allocator is refused before any work.
#[test]
fn doctor_reports_the_allocator() {
    let allocator = |env: &[(&str, &str)]| -> String {
        // The doctor's exit status says whether ONNX Runtime works, which is not this test's.
        let o = distill_env(env, &["doctor", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["item"] == "memory allocator")
            .unwrap_or_else(|| panic!("no allocator check in {v}"))["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let default = allocator(&[]);
    assert!(
        default.starts_with("mimalloc 3.") && default.ends_with("purge delay 10000 ms"),
        "{default}"
    );
    let own = allocator(&[("MIMALLOC_PURGE_DELAY", "250")]);
    assert!(own.ends_with("purge delay 250 ms"), "{own}");
    assert_eq!(
        allocator(&[("DISTILL_ALLOCATOR", "system")]),
        "system allocator (DISTILL_ALLOCATOR=system)"
    );
    let o = distill_env(&[("DISTILL_ALLOCATOR", "jemalloc")], &["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("DISTILL_ALLOCATOR=\"jemalloc\" is not an allocator"),
        "{err}"
    );
}

/// `distill label --json` of the image folder `data` with `teachers` at 16 px into `out`, and
/// `extra` flags.
fn label_jpegs(data: &Path, teachers: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "label",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "16",
        "--json",
    ];
    for t in teachers {
        args.extend(["--teacher", t.to_str().unwrap()]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    distill(&args)
}

/// Stores are replayed with the decoder that made their inputs: a format version 2 store (its
/// probe made by `image` with zune-jpeg) trains on this build because its data are read with
/// that decoder again; the same probe under this build's decoder's name is refused, and a
/// decoder this build lacks is named.
#[test]
fn stores_replay_with_the_decoder_they_were_labelled_with() {
    use datasets::{ImageDecoder, OpenOptions, probe};
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let data = root.join("data");
    jpeg_folder(&data, 3, 6);
    copy_split(&data, "train", "val"); // a test split for the students
    let teacher = root.join("rgb.onnx");
    write_rgb_teacher(&teacher);
    let store = root.join("store");
    ok(&label_jpegs(
        &data,
        &[&teacher],
        &store,
        &["--aug", "light", "--topk", "2"],
    ));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["format_version"], 3);
    assert_eq!(m["decode_probe"]["decoder"], ImageDecoder::Pillow.name());

    let open = |d: ImageDecoder| {
        let opts = OpenOptions {
            decoder: d,
            ..OpenOptions::default()
        };
        dataset::open_with(&data, None, "train", &opts).unwrap()
    };
    let legacy = probe::decode_probe(open(ImageDecoder::Legacy).as_ref()).unwrap();
    assert_eq!(legacy.decoder, ImageDecoder::Legacy.name());
    let (old, new) = (open(ImageDecoder::Legacy), open(ImageDecoder::Pillow));
    let differ = (0..18)
        .filter(|&i| old.image(i).unwrap() != new.image(i).unwrap())
        .count();
    assert!(differ > 0, "the two decoders agree on every test JPEG");
    assert_ne!(
        serde_json::to_value(&legacy).unwrap(),
        m["decode_probe"],
        "the probe cannot tell the decoders apart"
    );

    // A copy marked as a version 2 store whose probe the legacy decoder made.
    let as_store = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let dir = root.join(name);
        copy_dir(&store, &dir);
        let mut m = m.clone();
        m["format_version"] = 2.into();
        m["decode_probe"] = serde_json::to_value(&legacy).unwrap();
        edit(&mut m);
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        dir
    };
    let train = |labels: &Path, out: &str| train_mlp_kd(&data, labels, &root.join(out));
    ok(&train(&store, "run-v3"));
    let v2 = as_store("store-v2", &|_| {});
    ok(&train(&v2, "run-v2"));
    let o = distill(&["inspect", v2.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("zune-jpeg 0.5.15"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The legacy probe under this build's decoder's name: the pixels differ, and it says so.
    let renamed = as_store("store-renamed", &|m| {
        m["format_version"] = 3.into();
        m["decode_probe"]["decoder"] = ImageDecoder::Pillow.name().into();
    });
    let o = train(&renamed, "run-renamed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "trained on pixels the teacher never saw"
    );
    assert!(err.contains("decodes to other pixels"), "{err}");

    let unknown = as_store("store-unknown", &|m| {
        m["decode_probe"]["decoder"] = "libjpeg 9f".into();
    });
    let o = train(&unknown, "run-unknown");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("decode_probe.decoder") && err.contains("libjpeg 9f"),
        "{err}"
    );
}

/// `label` takes mean, std, interpolation and crop_pct from the teacher file's metadata when no
/// flag gives them, records where each came from, and `inspect` shows it; `export` writes them
/// into a student, which then labels as a teacher with nothing to flag. Bad, short and
/// disagreeing metadata is refused naming the key and the file.
#[test]
fn teacher_metadata_sets_the_preprocessing_unless_a_flag_does() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let data = root.join("data");
    jpeg_folder(&data, 3, 6);
    copy_split(&data, "train", "val");
    let timm = [
        ("mean", "(0.485, 0.456, 0.406)"),
        ("std", "(0.229, 0.224, 0.225)"),
        ("interpolation", "bicubic"),
        ("crop_pct", "0.95"),
    ];
    let teacher = root.join("timm.onnx");
    write_rgb_teacher_with(&teacher, &timm);
    let label = |teachers: &[&Path], out: &str, extra: &[&str]| -> Output {
        let mut args = vec!["--aug", "center", "--topk", "3"];
        args.extend(extra);
        label_jpegs(&data, teachers, &root.join(out), &args)
    };
    let manifest = |store: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(root.join(store).join("manifest.json")).unwrap(),
        )
        .unwrap()
    };

    ok(&label(&[&teacher], "from-model", &[]));
    let m = manifest("from-model");
    let ti = &m["teacher_input"];
    assert_eq!(ti["mean"], serde_json::json!([0.485, 0.456, 0.406]));
    assert_eq!(ti["std"], serde_json::json!([0.229, 0.224, 0.225]));
    assert_eq!(m["recipe"]["interpolation"], "bicubic");
    assert_eq!(m["recipe"]["center"]["crop_pct"], 0.95);
    let all = |s: &str| serde_json::json!({"mean": s, "std": s, "interpolation": s, "crop_pct": s});
    assert_eq!(ti["sources"], all("model"));
    let o = distill(&["inspect", root.join("from-model").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("mean [0.485, 0.456, 0.406] (model)")
            && text.contains("interpolation from model"),
        "{text}"
    );

    // Flags win, key by key.
    ok(&label(
        &[&teacher],
        "from-flags",
        &[
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.5,0.5,0.5",
            "--interpolation",
            "bilinear",
            "--crop-pct",
            "0.8",
        ],
    ));
    let m = manifest("from-flags");
    assert_eq!(
        m["teacher_input"]["mean"],
        serde_json::json!([0.5, 0.5, 0.5])
    );
    assert_eq!(m["recipe"]["interpolation"], "bilinear");
    assert_eq!(m["recipe"]["center"]["crop_pct"], 0.8);
    assert_eq!(m["teacher_input"]["sources"], all("flag"));
    // A teacher without metadata: the defaults, said so.
    let plain = root.join("plain.onnx");
    write_rgb_teacher(&plain);
    ok(&label(&[&plain], "defaults", &[]));
    let m = manifest("defaults");
    assert_eq!(m["teacher_input"]["sources"], all("default"));
    assert_eq!(m["recipe"]["interpolation"], "bilinear");

    // An ensemble takes what its teachers declare; two that disagree must be settled by a flag.
    ok(&label(&[&teacher, &plain], "ensemble", &[]));
    assert_eq!(
        manifest("ensemble")["teacher_input"]["sources"],
        all("model")
    );
    let other = root.join("other.onnx");
    write_rgb_teacher_with(&other, &[("interpolation", "bilinear")]);
    let o = label(&[&teacher, &other], "disagree", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("disagree on interpolation")
            && err.contains("other.onnx")
            && err.contains("--interpolation"),
        "{err}"
    );
    ok(&label(
        &[&teacher, &other],
        "settled",
        &["--interpolation", "bicubic"],
    ));

    for (meta, needle) in [
        (("std", "[0.2, zero, 0.2]"), "std"),
        (("interpolation", "lanczos"), "interpolation"),
        (
            ("mean", "[0.5]"),
            "metadata mean has 1 values for 3-channel images",
        ),
    ] {
        let bad = root.join("bad.onnx");
        write_rgb_teacher_with(&bad, &[meta]);
        let o = label(&[&bad], "bad", &["--force"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{meta:?} accepted");
        assert!(
            err.contains(needle) && err.contains("bad.onnx"),
            "{meta:?}: {err}"
        );
        // The same teacher run online names train's flag for it.
        if meta.0 == "mean" {
            let run = root.join("online");
            let o = distill(&[
                "train",
                "--data",
                data.to_str().unwrap(),
                "--teacher",
                bad.to_str().unwrap(),
                "--aug",
                "light",
                "--size",
                "16",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--out",
                run.to_str().unwrap(),
            ]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.contains("give --teacher-mean"),
                "{err}"
            );
        }
    }

    // A student trained from the bicubic store exports its pre-processing: the normalization
    // is inside the graph, so its input is pixel/255 as is.
    let run = root.join("student");
    ok(&train_mlp_kd(&data, &root.join("from-model"), &run));
    let onnx = root.join("student.onnx");
    ok(&distill(&[
        "export",
        run.to_str().unwrap(),
        "--onnx",
        onnx.to_str().unwrap(),
        "--json",
    ]));
    let p = teacher_infer::session::model_preprocessing(&onnx).unwrap();
    assert_eq!(p.mean, Some(vec![0.0; 3]));
    assert_eq!(p.std, Some(vec![1.0; 3]));
    assert_eq!(p.interpolation, Some(formats::Interpolation::Bicubic));
    assert_eq!(p.crop_pct, Some(formats::recipe::DEFAULT_CROP_PCT));
    ok(&label(&[&onnx], "born-again", &[]));
    let m = manifest("born-again");
    assert_eq!(m["teacher_input"]["sources"], all("model"));
    assert_eq!(m["recipe"]["interpolation"], "bicubic");
}

/// `distill features fit` fits a PCA basis on the teacher's features of the views `label`
/// makes; `label --feature-basis` stores d coefficients per record that reconstruct the
/// teacher's vector through the file's basis; shard stores of one basis merge, of two are
/// refused, and a resume with another basis is refused.
#[test]
fn a_fitted_basis_stores_d_coefficients_and_guards_merge_and_resume() {
    let s = setup();
    let ft = s.root.join("features.onnx");
    write_feature_teacher(&ft);
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let base = |out: &Path| -> Vec<String> {
        [
            "--teacher",
            &p(&ft),
            "--data",
            &p(&s.data),
            "--aug",
            "usi",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--topk",
            "5",
            "--mean",
            "0.5",
            "--std",
            "0.25",
            "--feature",
            "pooled",
            "--json",
            "--out",
            &p(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |cmd: &[&str], out: &Path, extra: &[&str]| {
        let mut a: Vec<String> = cmd.iter().map(|c| c.to_string()).collect();
        a.extend(base(out));
        a.extend(extra.iter().map(|x| x.to_string()));
        distill(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fit = |name: &str, dim: &str| -> (PathBuf, serde_json::Value) {
        let out = s.root.join(name);
        let v = ok(&run(
            &["features", "fit"],
            &out,
            &["--dim", dim, "--samples", "200"],
        ));
        (out, v)
    };
    let (b4, v) = fit("b4.dlb", "4");
    let head = &v["heads"][0];
    assert_eq!(
        (head["dim"].as_u64(), head["stored_dim"].as_u64()),
        (Some(12), Some(4))
    );
    assert!(head["cosine_mean"].as_f64().unwrap() > 0.9, "{v}");
    let kept = head["variance_kept"].as_f64().unwrap();
    assert!(kept > 0.5 && kept <= 1.0 + 1e-9, "{v}");
    assert!(
        !s.root.join("b4.dlb.fit-scratch").exists(),
        "the scratch store is removed"
    );
    let (b3, _) = fit("b3.dlb", "3");

    let shard = |name: &str, basis: &Path, i: &str| {
        let out = s.root.join(name);
        ok(&run(
            &["label"],
            &out,
            &["--feature-basis", &p(basis), "--shard", i],
        ));
        out
    };
    let (a, b) = (shard("a", &b4, "0/2"), shard("b", &b4, "1/2"));
    let store = LabelStore::open(&a).unwrap();
    let h = &store.feature_heads()[0];
    let file = formats::basis::BasisFile::from_bytes(&std::fs::read(&b4).unwrap()).unwrap();
    assert_eq!((h.dim, h.stored_dim), (12, 4));
    assert_eq!(h.basis.as_ref().unwrap().checksum, file.checksum());
    assert!(h.quality.mean_cosine > 0.9, "{:?}", h.quality);
    // The stored coefficients, through the file's basis, give the teacher's vector back.
    let mut session = pooled_session(&ft);
    let data = dataset::open(&s.data, None, "train").unwrap();
    let view = store.view_rule().unwrap();
    let feats = store.features(0).unwrap();
    let (mut y, mut r) = (vec![0f32; 4], vec![0f32; 12]);
    for (e, i) in [(0u32, 3u32), (1, 150)] {
        let (_, _, want) = on_record(&mut session, &store, &view, data.as_ref(), e, i);
        feats.get_into(e, i, &mut y).unwrap();
        file.bases[0].reconstruct(&y, &mut r);
        let (cos, _, _) = formats::feature::reconstruction(&want, &r);
        assert!(cos > 0.8, "epoch {e} sample {i}: cosine {cos}");
    }
    let text = String::from_utf8_lossy(&distill(&["inspect", &p(&a)]).stdout).into_owned();
    assert!(text.contains("4 of 12 dims"), "{text}");
    // One basis: the shards merge. Two: refused.
    ok(&distill(&[
        "merge",
        &p(&a),
        &p(&b),
        "--out",
        &p(&s.root.join("ab")),
        "--json",
    ]));
    let c = shard("c", &b3, "1/2");
    let o = distill(&["merge", &p(&a), &p(&c), "--out", &p(&s.root.join("ac"))]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("features differs"), "{e}");
    // A resume with another basis is refused, naming the field.
    let o = run(
        &["label"],
        &a,
        &["--feature-basis", &p(&b3), "--shard", "0/2", "--resume"],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("features differs"), "{e}");
    // A basis file without the head's basis is refused, naming the output.
    let other = s.root.join("other.onnx");
    write_feature_teacher_scaled(&other, 2.0);
    let mut a2 = vec!["label".to_string()];
    a2.extend(base(&s.root.join("d")));
    let at = a2.iter().position(|x| x == "--teacher").unwrap();
    a2[at + 1] = p(&other);
    a2.extend(["--feature-basis".into(), p(&b4)]);
    let o = distill(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("has no basis for output \"pooled\""),
        "{e}"
    );
}
