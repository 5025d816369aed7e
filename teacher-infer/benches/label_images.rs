//! Labelling an image folder: today's per-record path (every record decodes its JPEG and its
//! mixup/cutmix partner's) against decode-once blocks, in the same run, on the same folder,
//! teacher and threads (issue 13). Driven by `scripts/bench-label-images.sh`, which generates the
//! folder and runs the PIL + multiprocessing + onnxruntime peer against the teacher this writes,
//! and by `scripts/bench-wds.sh` (the same images as a folder and as tar shards, issue 16).
//!
//! Environment: `DISTILL_BENCH_JPEGS` (an image folder with `train/`), `DISTILL_BENCH_OUT` (where
//! the teacher and stores go), `DISTILL_BENCH_EPOCHS` (comma-separated, default `1,4,8`),
//! `DISTILL_BENCH_THREADS` (loader threads, default 2), `DISTILL_BENCH_PATHS` (which of
//! `per-record,blocks` to run; for profiling one), `DISTILL_BENCH_DATA` (comma-separated
//! `name=path` datasets to label instead of the folder alone, e.g. `folder=…,wds=…`),
//! `DISTILL_BENCH_CACHE` (`warm`, or `cold,warm`: drop the page cache before each cold run —
//! needs root — and run warm right after, when everything was just read), `DISTILL_BENCH_RECIPE`
//! (default `usi`; `light` does not mix, so its blocks walk the samples in order),
//! `DISTILL_BENCH_FEATURE` (D > 0: the teacher gets a pooled `[batch, D]` output — a 1×1
//! convolution to D channels before the pool, as EfficientNet's head — and the path
//! `blocks+features` labels with `--feature pooled`, beside `blocks` on the same teacher;
//! `scripts/bench-features.sh`). Prints one JSON line per run.

use datasets as dataset;
use formats::onnx::{Attr, InitData, Initializer, Model, Node, ValueInfo};
use label_store::OpenMode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use teacher_infer::LabelConfig;

/// A cheap 224-px teacher: Conv 3→16 (8×8, stride 8), ReLU, global average pool, Gemm 16→10;
/// with `pooled` = D > 0, a 1×1 Conv 16→D and ReLU before the pool, whose output is also the
/// graph's `pooled` `[batch, D]`, and Gemm D→10.
fn teacher(path: &Path, pooled: usize) {
    let w = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 2654435761 + seed * 97) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .map(|v| v * 0.05)
            .collect()
    };
    let d = if pooled > 0 { pooled } else { 16 };
    let mut nodes = vec![
        Node::new("Conv", "c1", &["image", "w1", "b1"], &["a1"])
            .attr("kernel_shape", Attr::Ints(vec![8, 8]))
            .attr("strides", Attr::Ints(vec![8, 8])),
        Node::new("Relu", "r1", &["a1"], &["h1"]),
    ];
    let mut outputs = vec![ValueInfo::logits("logits", 10)];
    let mut extra = Vec::new();
    if pooled > 0 {
        nodes.push(
            Node::new("Conv", "c2", &["h1", "w3"], &["a2"])
                .attr("kernel_shape", Attr::Ints(vec![1, 1])),
        );
        nodes.push(Node::new("Relu", "r2", &["a2"], &["h2"]));
        nodes.push(Node::new("GlobalAveragePool", "gap", &["h2"], &["g"]));
        nodes.push(Node::new("Flatten", "f", &["g"], &["pooled"]).attr("axis", Attr::Int(1)));
        nodes.push(Node::new("Identity", "x", &["pooled"], &["x"]));
        outputs.push(ValueInfo::logits("pooled", d as i64));
        extra.push(Initializer {
            name: "w3".into(),
            dims: vec![d as i64, 16, 1, 1],
            data: InitData::Float(w(d * 16, 3).into_iter().map(|v| v * 20.0).collect()),
        });
    } else {
        nodes.push(Node::new("GlobalAveragePool", "gap", &["h1"], &["g"]));
        nodes.push(Node::new("Flatten", "f", &["g"], &["x"]).attr("axis", Attr::Int(1)));
    }
    nodes.push(
        Node::new("Gemm", "fc", &["x", "w2", "b2"], &["logits"]).attr("transB", Attr::Int(1)),
    );
    let m = Model {
        graph_name: "cheap224".into(),
        producer: "distill-bench".into(),
        opset: 17,
        nodes,
        initializers: vec![
            Initializer {
                name: "w1".into(),
                dims: vec![16, 3, 8, 8],
                data: InitData::Float(w(16 * 3 * 64, 1)),
            },
            Initializer {
                name: "b1".into(),
                dims: vec![16],
                data: InitData::Float(vec![0.0; 16]),
            },
            Initializer {
                name: "w2".into(),
                dims: vec![10, d as i64],
                data: InitData::Float(w(10 * d, 2)),
            },
            Initializer {
                name: "b2".into(),
                dims: vec![10],
                data: InitData::Float(vec![0.0; 10]),
            },
        ],
        inputs: vec![ValueInfo::images("image", 3, 224, 224)],
        outputs,
        metadata: vec![],
    };
    let mut m = m;
    m.initializers.extend(extra);
    std::fs::write(path, m.to_bytes()).unwrap();
}

fn main() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let folder = PathBuf::from(var(
        "DISTILL_BENCH_JPEGS",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-jpegs"),
    ));
    let out = PathBuf::from(var(
        "DISTILL_BENCH_OUT",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-label"),
    ));
    let threads: usize = var("DISTILL_BENCH_THREADS", "2").parse().unwrap();
    let epochs: Vec<u32> = var("DISTILL_BENCH_EPOCHS", "1,4,8")
        .split(',')
        .map(|e| e.trim().parse().unwrap())
        .collect();
    let paths = var("DISTILL_BENCH_PATHS", "per-record,blocks");
    std::fs::create_dir_all(&out).unwrap();
    let feature: usize = var("DISTILL_BENCH_FEATURE", "0").parse().unwrap();
    let model = out.join(if feature > 0 {
        format!("teacher-pooled{feature}.onnx")
    } else {
        "teacher.onnx".into()
    });
    teacher(&model, feature);
    let sets = var(
        "DISTILL_BENCH_DATA",
        &format!("folder={}", folder.display()),
    );
    let caches = var("DISTILL_BENCH_CACHE", "warm");
    let recipe = replay::sampler::load_recipe(&var("DISTILL_BENCH_RECIPE", "usi")).unwrap();
    for set in sets.split(',') {
        let (name, path) = set
            .split_once('=')
            .expect("DISTILL_BENCH_DATA: name=path,…");
        let data: Arc<dyn dataset::Dataset> =
            Arc::from(dataset::open(Path::new(path), None, "train").unwrap());
        for &e in &epochs {
            let blocks = teacher_infer::default_blocks(data.as_ref(), &recipe);
            for (path, blocks) in [
                ("per-record", None),
                ("blocks", blocks),
                ("blocks+features", blocks),
            ] {
                if path == "blocks+features" && feature == 0 {
                    continue;
                }
                if !paths.split(',').any(|p| p == path) {
                    continue;
                }
                for cache in caches.split(',') {
                    if cache == "cold" {
                        drop_page_cache();
                    }
                    let cfg = LabelConfig {
                        epochs: e,
                        recipe: recipe.clone(),
                        threads,
                        session_threads: 1,
                        size: Some((224, 224)),
                        mean: vec![0.485, 0.456, 0.406],
                        std: vec![0.229, 0.224, 0.225],
                        mode: OpenMode::Overwrite,
                        blocks,
                        outputs: teacher_infer::Outputs {
                            logits: None,
                            no_logits: false,
                            feature: (path == "blocks+features").then(|| "pooled".into()),
                        },
                        ..LabelConfig::new(
                            vec![model.clone()],
                            Arc::clone(&data),
                            out.join(format!("store-{name}-{path}-e{e}")),
                        )
                    };
                    let s = teacher_infer::label(&cfg, |_| {}).unwrap();
                    let store = label_store::LabelStore::open(&cfg.out).unwrap();
                    println!(
                        "{}",
                        serde_json::json!({
                            "tool": "distill", "path": path, "epochs": e, "samples": data.len(),
                            "data": name, "format": data.format(), "cache": cache,
                            "recipe": recipe.name,
                            "records": s.labelled, "seconds": s.seconds,
                            "records_per_sec": s.labelled as f64 / s.seconds,
                            "images_decoded": s.images_decoded,
                            "label_bytes": store.manifest.stored_bytes(),
                            "feature_bytes": store.manifest.feature_bytes(),
                            "feature_dim": feature,
                        })
                    );
                }
            }
        }
    }
}

/// Empties the page cache (root only), so the next run reads its images from the disk.
fn drop_page_cache() {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .expect("cold runs drop the page cache: run as root (or DISTILL_BENCH_CACHE=warm)");
}
