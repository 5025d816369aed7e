//! Training images/s with soft labels from the store (`kd`: teacher distributions rebuilt from
//! top-k in the loader, KL in the loss) against the same run fed hard labels only (`ce`: same
//! store, same replayed augmentation, no teacher), and the share of time the training thread
//! waits for the loader, on the CPU default backend (burn-flex).
//!
//! Run: `cargo bench -p student-train --bench train`. Interleaved rounds of one epoch each; the
//! table shows the median round. Target: kd at most 3% slower than ce.

use datasets as dataset;
use formats::Recipe;
use label_store::LabelStore;
use std::sync::Arc;
use student_train::models::{InputShape, ModelSpec, NormKind};
use student_train::run::Quiet;
use student_train::{LossKind, RunData, TrainConfig, train};
use testkit::bands::{Bands, write_store};

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\n## soft vs hard labels (burn-flex CPU, {cores} cores, batch 128, usi recipe replayed from the store; median of 3 interleaved rounds)"
    );
    println!(
        "| model | input | hard (ce) images/s | soft (kd) images/s | soft / hard | loader wait ce | loader wait kd |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (family, side, channels, samples) in [("lenet5", 28, 1, 8192), ("resnet20", 32, 3, 1024)] {
        let t = tempfile::tempdir().unwrap();
        let bands = Bands {
            side,
            channels,
            classes: 10,
        };
        bands.write(t.path(), "train", samples, 0).unwrap();
        let data: Arc<dyn dataset::Dataset> =
            Arc::from(dataset::open(t.path(), None, "train").unwrap());
        let store_dir = t.path().join("store");
        write_store(&store_dir, data.as_ref(), 1, 5, &Recipe::usi(), 1, None).unwrap();
        let store = Arc::new(LabelStore::open(&store_dir).unwrap());
        let run_data = RunData {
            train: data.clone(),
            labels: Some(store),
            test: None,
            eval_labels: None,
            teacher: None,
        };
        let cfg = |loss| TrainConfig {
            data: "bands".into(),
            labels: Some("store".into()),
            threads: cores,
            ..TrainConfig::new(
                ModelSpec {
                    family: family.parse().unwrap(),
                    width: 1.0,
                    norm: NormKind::Batch,
                },
                InputShape {
                    channels,
                    height: side,
                    width: side,
                    classes: 10,
                },
                loss,
            )
        };
        let round = |loss, i: usize| {
            let dir = t.path().join(format!("run-{i}"));
            let s = train(&cfg(loss), &run_data, &dir, false, &mut Quiet).unwrap();
            let m = s.students[0].last.clone().unwrap();
            (m.images_per_sec, m.loader_wait_fraction)
        };
        let kd = LossKind::Kd {
            weight: 0.9,
            tau: 4.0,
        };
        let mut rounds: Vec<((f64, f64), (f64, f64))> = (0..3)
            .map(|i| (round(LossKind::Ce, 2 * i), round(kd, 2 * i + 1)))
            .collect();
        rounds.sort_by(|a, b| (a.1.0 / a.0.0).total_cmp(&(b.1.0 / b.0.0)));
        let ((ce, wce), (kds, wkd)) = rounds[1];
        println!(
            "| {family} | {channels}x{side}x{side} | {ce:.0} | {kds:.0} | {:.3} | {:.1}% | {:.1}% |",
            kds / ce,
            100.0 * wce,
            100.0 * wkd
        );
    }
}
