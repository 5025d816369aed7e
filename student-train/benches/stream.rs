//! The training stream alone (no model) over a store of an image folder labelled in decode-once
//! blocks (issue 13): records/s and images decoded per record for today's order (all records
//! shuffled, each decoding its image and its mixup/cutmix partner), block windows, and block
//! windows with FKD's multi-crop, in the same run. Driven by `scripts/bench-train-stream.sh`.
//!
//! Environment: `DISTILL_BENCH_JPEGS` (the image folder), `DISTILL_BENCH_STORE` (its store),
//! `DISTILL_BENCH_THREADS` (loader threads, default 2), `DISTILL_BENCH_ONLY` (run the settings
//! whose name starts so), `DISTILL_BENCH_TRAIN=0` (the stream alone). One student epoch per setting, timed from
//! the first batch asked to the last received; the store epochs are decoded before. Prints one
//! JSON line per setting; then one `train` epoch of a small MLP (kd) per setting, records/s and
//! decodes from its metrics.

use datasets as dataset;
use label_store::LabelStore;
use replay::stream::{Source, Stream, StreamConfig, store_input_size};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use student_train::models::{InputShape, ModelSpec, NormKind};
use student_train::run::Quiet;
use student_train::{LossKind, RunData, TrainConfig, train};

fn main() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let folder = PathBuf::from(var(
        "DISTILL_BENCH_JPEGS",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-jpegs"),
    ));
    let store_dir = PathBuf::from(var(
        "DISTILL_BENCH_STORE",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench-label/store-folder-blocks-e8"
        ),
    ));
    let threads: usize = var("DISTILL_BENCH_THREADS", "2").parse().unwrap();
    let data: Arc<dyn dataset::Dataset> = Arc::from(dataset::open(&folder, None, "train").unwrap());
    let store = Arc::new(LabelStore::open(&store_dir).unwrap());
    let size = store_input_size(&store).unwrap();
    let settings = [
        ("all records shuffled (today)", 0, 1),
        ("block windows", replay::stream::DEFAULT_WINDOW, 1),
        (
            "block windows + multi-crop 2",
            replay::stream::DEFAULT_WINDOW,
            2,
        ),
    ];
    let only = var("DISTILL_BENCH_ONLY", "");
    for (name, window, multi_crop) in settings {
        if !only.is_empty() && !name.starts_with(only.as_str()) {
            continue;
        }
        let stream = Arc::new(
            Stream::new(
                Arc::clone(&data),
                Source::Store(Arc::clone(&store)),
                StreamConfig {
                    window,
                    multi_crop,
                    ..StreamConfig::training(
                        128,
                        threads,
                        0,
                        vec![0.485, 0.456, 0.406],
                        vec![0.229, 0.224, 0.225],
                        size,
                    )
                },
            )
            .unwrap(),
        );
        let decoded = stream
            .store_epochs(1)
            .into_iter()
            .map(|e| Arc::new(store.decode_epoch(e).unwrap()))
            .collect();
        let t0 = Instant::now();
        let mut batches = stream.epoch(1, decoded, Some(1.0)).unwrap();
        let mut records = 0u64;
        for b in batches.by_ref() {
            records += b.unwrap().n as u64;
        }
        let seconds = t0.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "what": "stream", "stream": name, "window": window, "multi_crop": multi_crop,
                "block_grouped": stream.block_grouped(), "records": records,
                "seconds": seconds, "records_per_sec": records as f64 / seconds,
                "images_decoded": batches.images_decoded(),
            })
        );
    }
    // A whole training epoch of a small student (an MLP of 2 × 16 hidden units at the store's size,
    // kd loss: cheap enough that the loader matters) for each
    // setting: the loader now shares the cores with the model.
    if var("DISTILL_BENCH_TRAIN", "1") == "0" {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let run_data = RunData {
        train: Arc::clone(&data),
        labels: Some(Arc::clone(&store)),
        test: None,
        eval_labels: None,
        teacher: None,
    };
    for (name, window, multi_crop) in settings {
        let cfg = TrainConfig {
            labels: Some(store_dir.display().to_string()),
            threads,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            shuffle_window: window,
            multi_crop,
            ..TrainConfig::new(
                ModelSpec {
                    family: student_train::models::ModelFamily::Mlp,
                    width: 1.0 / 16.0,
                    norm: NormKind::Batch,
                },
                InputShape {
                    channels: 3,
                    height: size.1 as usize,
                    width: size.0 as usize,
                    classes: data.classes() as usize,
                },
                LossKind::Kd {
                    weight: 0.9,
                    tau: 4.0,
                },
            )
        };
        let dir = t.path().join(format!("run-{window}-{multi_crop}"));
        let s = train(&cfg, &run_data, &dir, false, &mut Quiet).unwrap();
        let m = s.students[0].last.clone().unwrap();
        let records = (data.len() * multi_crop) as f64;
        println!(
            "{}",
            serde_json::json!({
                "what": "train epoch", "stream": name, "window": window, "multi_crop": multi_crop,
                "records": records, "records_per_sec": m.images_per_sec,
                "loader_wait_fraction": m.loader_wait_fraction,
                "images_decoded": m.images_decoded,
            })
        );
    }
}
