//! WebDataset shards end to end: `data pack-wds` turns an image folder into tar shards, and the
//! shards label to the folder's records sample key for sample key, split into whole-file jobs
//! for `merge`, and train a student to the folder's accuracy; a store of the folder is refused on
//! the shards, and a damaged shard stops labelling naming shard and key.

mod common;
use common::*;
use datasets::{Dataset, ImageFolder, OpenOptions, WebDataset};
use label_store::LabelStore;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `distill label` of `teacher` over `data` into `out`.
fn label_args<'a>(teacher: &'a Path, data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "label",
        "--teacher",
        s(teacher),
        "--data",
        s(data),
        "--out",
        s(out),
    ]
}

fn label(teacher: &Path, data: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = label_args(teacher, data, out);
    args.extend([
        "--epochs", "2", "--topk", "3", "--seed", "1", "--batch", "4", "--aug", "usi", "--size",
        "16", "--json",
    ]);
    args.extend(extra);
    ok(&distill(&args))
}

/// `distill label` on `data` that must fail; its stderr.
fn label_fails(teacher: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = label_args(teacher, data, out);
    args.extend(extra);
    let o = distill(&args);
    assert!(!o.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shards_label_and_train_like_their_folder() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let (folder, shards) = (root.join("folder"), root.join("shards"));
    jpeg_folder(&folder, 3, 10);
    // val/: two images per class (the per-epoch test pass).
    for c in 0..3 {
        let dir = folder.join("val").join(format!("c{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2 {
            let name = format!("{i:03}.jpg");
            std::fs::copy(folder.join(format!("train/c{c}/{name}")), dir.join(&name)).unwrap();
        }
    }
    let teacher = root.join("rgb.onnx");
    write_rgb_teacher(&teacher);

    // 30 JPEGs of ~1.5 KB in shards of at most 12 KB: several shards.
    let v = ok(&distill(&[
        "data",
        "pack-wds",
        s(&folder),
        s(&shards),
        "--shard-size",
        "12K",
        "--json",
    ]));
    assert_eq!(v["train"]["samples"], 30);
    assert_eq!(v["val"]["samples"], 6);
    let files = v["train"]["shards"].as_array().unwrap().len();
    assert!(files >= 3, "{v}");
    // A label at or above --classes is refused naming the flag (the reader names its field).
    let bad = root.join("bad");
    let o = distill(&[
        "label",
        "--teacher",
        s(&teacher),
        "--data",
        s(&shards),
        "--classes",
        "2",
        "--out",
        s(&bad),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not below --classes 2"),
        "{e}"
    );

    // The same records per sample key: the packed order keeps sample i = the same image.
    let (a, b) = (root.join("from-folder"), root.join("from-shards"));
    let va = label(&teacher, &folder, &a, &[]);
    let vb = label(&teacher, &shards, &b, &[]);
    assert_eq!(va["labelled"], 60);
    assert_eq!(vb["labelled"], 60);
    assert_eq!(vb["images_decoded"], 30, "decoded once per block: {vb}");
    let (sa, sb) = (LabelStore::open(&a).unwrap(), LabelStore::open(&b).unwrap());
    assert_eq!(sb.manifest.dataset.format, "wds");
    let f = ImageFolder::open(&folder, "train").unwrap();
    let w = WebDataset::open(&shards, "train", &OpenOptions::default()).unwrap();
    for i in 0..30 {
        let rel = f.path(i).strip_prefix(folder.join("train")).unwrap();
        assert_eq!(
            w.key(i),
            rel.with_extension("").to_str().unwrap(),
            "sample {i}"
        );
        for e in 0..2 {
            assert_eq!(sa.get(e, i).unwrap(), sb.get(e, i).unwrap(), "{e}/{i}");
        }
    }

    // Jobs on whole files: `--shard I/2` cuts on a shard boundary, and the parts merge (each job
    // draws mix partners from its own range, so the parts are not the one-job store).
    let starts = w.file_starts().unwrap().to_vec();
    let mut parts = Vec::new();
    for i in 0..2 {
        let out = root.join(format!("part{i}"));
        let shard = format!("{i}/2");
        let v = label(&teacher, &shards, &out, &["--shard", &shard]);
        let (lo, hi) = (
            v["samples"]["start"].as_u64().unwrap() as u32,
            v["samples"]["end"].as_u64().unwrap() as u32,
        );
        assert!(starts.contains(&lo), "{lo} is no shard start: {starts:?}");
        assert!(hi == 30 || starts.contains(&hi), "{hi}: {starts:?}");
        parts.push(out);
    }
    let merged = root.join("merged");
    let o = distill(&["merge", s(&parts[0]), s(&parts[1]), "--out", s(&merged)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = LabelStore::open(&merged).unwrap();
    assert_eq!(m.records(), 60);
    let part1 = LabelStore::open(&parts[1]).unwrap();
    let lo = part1.samples().start;
    assert!(lo > 0 && lo < 30);
    for i in lo..30 {
        assert_eq!(m.get(1, i).unwrap(), part1.get(1, i).unwrap(), "sample {i}");
    }

    // A store of the folder is refused on the shards.
    let o = train_mlp_kd(&shards, &a, &root.join("wrong"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("dataset.format"), "{e}");

    // The same student from either: identical batches, so the same losses and test accuracy
    // (the shards' val split stands in for test, as the folder's val/ does).
    let vf = ok(&train_mlp_kd(&folder, &a, &root.join("student-folder")));
    let vs = ok(&train_mlp_kd(&shards, &b, &root.join("student-shards")));
    let (lf, ls) = (&vf["students"][0]["last"], &vs["students"][0]["last"]);
    assert!(lf["test_accuracy"].as_f64().is_some(), "{vf}");
    assert_eq!(lf["test_accuracy"], ls["test_accuracy"]);
    assert_eq!(lf["train_loss"], ls["train_loss"]);
    let e = ok(&distill(&[
        "eval",
        "--json",
        "--run",
        s(&root.join("student-shards")),
        "--data",
        s(&shards),
    ]));
    assert_eq!(e["samples"], 6);
    assert_eq!(e["accuracy"], ls["test_accuracy"]);

    // A shard cut short stops labelling, naming the shard and the member.
    let first = shards.join("train-000000.tar");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    let e = label_fails(&teacher, &shards, &root.join("cut"), &["--size", "16"]);
    assert!(
        e.contains("train-000000.tar") && e.contains("truncated"),
        "{e}"
    );
}
