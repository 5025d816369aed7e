//! End to end: `distill inspect` and `distill merge` run as a user runs them.

use formats::{SampleRange, ValueCodec};
use label_store::{LabelStore, OpenMode, RecordQuality, StoreWriter, shard_file_name};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use testkit::store::{Measure, SynthConfig, WriteOptions, draft, sample, write_store};

const CFG: SynthConfig = SynthConfig {
    samples: 500,
    classes: 100,
    k: 10,
    seed: 3,
};

fn distill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(args)
        .output()
        .expect("run distill")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn make(dir: &Path) {
    let opts = WriteOptions {
        epochs: 2,
        codec: ValueCodec::Q8,
        chunk_records: 128,
        measure: Measure::All,
        threads: 2,
    };
    write_store(dir, &CFG, &opts, |_| {}).unwrap();
}

#[test]
fn inspect_summarizes_and_verifies() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("s");
    make(&store);
    let dir = store.to_str().unwrap();

    let out = distill(&["inspect", dir, "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["records"], 1000);
    assert_eq!(v["epochs"], 2);
    assert_eq!(v["samples"], 500);
    assert_eq!(v["classes"], 100);
    assert_eq!(v["k"], 10);
    // The synthetic store names bilinear: Pillow's kernel (format version 2).
    assert_eq!(v["resampling"], "bilinear (Pillow)");
    // Every file of the store but the writer lock, which holds no store data.
    let on_disk: u64 = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != label_store::LOCK_FILE)
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(v["bytes_on_disk"], on_disk);
    let bpr = v["bytes_per_record"].as_f64().unwrap();
    assert!((bpr - on_disk as f64 / 1000.0).abs() < 1e-9);
    let hist: Vec<u64> = serde_json::from_value(v["top1_histogram"].clone()).unwrap();
    assert_eq!(hist.len(), 100);
    assert_eq!(hist.iter().sum::<u64>(), 1000);
    assert!(v["quality"]["reconstruction_kl_tau1"].as_f64().unwrap() > 0.0);

    let text = distill(&["inspect", dir]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("1000 = 2 epochs × 500 samples"), "{text}");
    assert!(
        text.contains("smaller than dense f32 logits (400 B/record)"),
        "{text}"
    );

    let out = distill(&["inspect", dir, "--verify", "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["verify"]["ok"], true);
    assert_eq!(v["verify"]["chunks_checked"], 8);
    assert_eq!(v["verify"]["errors"].as_array().unwrap().len(), 0);

    // Damage one chunk: --verify exits 1 and names shard and chunk.
    let shard = store.join(shard_file_name(SampleRange { start: 0, end: 500 }));
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[16 + 112 + 5] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    let out = distill(&["inspect", dir, "--verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["verify"]["ok"], false);
    let errors = v["verify"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    let e = errors[0].as_str().unwrap();
    assert!(
        e.contains("shard-0000000000-0000000500.dls")
            && e.contains("chunk 0 (epoch 0, samples 0..128)"),
        "{e}"
    );
    let out = distill(&["inspect", dir, "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 fault"));

    // Not a store at all.
    let out = distill(&["inspect", t.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a label store"));
}

#[test]
fn records_dump_matches_the_store() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("s");
    make(&store);
    let dir = store.to_str().unwrap();
    let opened = LabelStore::open(&store).unwrap();

    // Records 498..502 in (epoch, sample) order cross from epoch 0 into epoch 1.
    let out = distill(&["inspect", dir, "--records", "498..502", "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    let dump = v["dump"].as_array().unwrap();
    let keys: Vec<(u64, u64)> = dump
        .iter()
        .map(|r| (r["epoch"].as_u64().unwrap(), r["sample"].as_u64().unwrap()))
        .collect();
    assert_eq!(keys, vec![(0, 498), (0, 499), (1, 0), (1, 1)]);
    for r in dump {
        let rec = opened
            .get(
                r["epoch"].as_u64().unwrap() as u32,
                r["sample"].as_u64().unwrap() as u32,
            )
            .unwrap();
        let classes: Vec<u32> = serde_json::from_value(r["classes"].clone()).unwrap();
        assert_eq!(classes, rec.label.indices);
        let p: Vec<f32> = serde_json::from_value(r["probabilities"].clone()).unwrap();
        let want = rec.label.probabilities(100, 1.0);
        assert_eq!(p, want.top);
        let aug: formats::AugParams = serde_json::from_value(r["aug"].clone()).unwrap();
        assert_eq!(aug, rec.aug);
    }

    let out = distill(&[
        "inspect",
        dir,
        "--records",
        "10..12",
        "--epoch",
        "1",
        "--temperature",
        "4",
        "--json",
    ]);
    let v = json(&out);
    let r = &v["dump"][0];
    assert_eq!(
        (r["epoch"].as_u64(), r["sample"].as_u64()),
        (Some(1), Some(10))
    );
    let p: Vec<f32> = serde_json::from_value(r["probabilities"].clone()).unwrap();
    let want = opened.get(1, 10).unwrap().label.probabilities(100, 4.0);
    assert_eq!(p, want.top);

    let text = distill(&["inspect", dir, "--records", "0..1"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("epoch 0 sample 0 (τ = 1)") && text.contains("with sample"),
        "{text}"
    );

    for bad in [
        vec!["--records", "0..1001"],
        vec!["--records", "5..2"],
        vec!["--records", "0..501", "--epoch", "0"],
        vec!["--records", "0..1", "--epoch", "2"],
        vec!["--epoch", "0"],
        vec!["--records", "0..1", "--temperature", "0"],
    ] {
        let mut args = vec!["inspect", dir];
        args.extend(bad.iter().copied());
        let out = distill(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn merge_joins_shard_stores() {
    let t = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (a, b) in [(0, 200), (200, 500)] {
        let d = t.path().join(format!("part{a}"));
        let mut m = draft(&CFG, 2, ValueCodec::Q8, 64);
        m.samples = SampleRange { start: a, end: b };
        let mut w = StoreWriter::open(&d, m, OpenMode::Create, 3).unwrap();
        for e in 0..2 {
            for s in a..b {
                w.append(e, s, &sample(&CFG, e, s).record, &RecordQuality::default())
                    .unwrap();
            }
        }
        w.finish().unwrap();
        dirs.push(d.to_str().unwrap().to_string());
    }
    let out_dir = t.path().join("merged");
    let out = distill(&[
        "merge",
        &dirs[1],
        &dirs[0],
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("merged 2 shards"));
    let v = json(&distill(&[
        "inspect",
        out_dir.to_str().unwrap(),
        "--verify",
        "--json",
    ]));
    assert_eq!(v["records"], 1000);
    assert_eq!(v["verify"]["ok"], true);
    let out = distill(&[
        "merge",
        &dirs[1],
        "--out",
        t.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gap: samples 0..200"));
}

#[test]
fn a_closed_pipe_ends_a_long_dump_quietly() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("s");
    make(&store);
    // `distill inspect S --records 0..1000 | head -2`: about 150 KB, more than a pipe holds.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["inspect", store.to_str().unwrap(), "--records", "0..1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("epoch 0 sample 0 "), "{first}");
    lines.next().unwrap().unwrap();
    drop(lines); // head exits: the pipe closes
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.is_empty(), "{err}");
}
