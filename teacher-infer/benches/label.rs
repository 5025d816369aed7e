//! The whole labelling stage against the bare ONNX Runtime session, CPU EP, same model and
//! batch size, in the same run: LeNet-5 teachers (random weights, written as ONNX; LeNet-5 itself
//! and two wider ones) over 8,000 synthetic 28×28 digits, `light` recipe, 2 epochs, top-10.
//!
//! Run: `cargo bench -p teacher-infer --bench label` (needs scripts/fetch-ort.sh). Prints a table:
//! five rounds, each measuring the bare session then the stage, and the round with the median
//! ratio stage / bare session; the target is ≥ 0.9.

use datasets::{self as dataset, write_idx};
use formats::Recipe;
use formats::onnx::{Attr, InitData, Initializer, Model, Node, ValueInfo};
use label_store::OpenMode;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use teacher_infer::{Device, LabelConfig, TeacherSession};

const SAMPLES: usize = 8000;
const EPOCHS: u32 = 2;
const BATCH: usize = 256;

fn weights(n: usize, fan_in: usize, seed: u32) -> Vec<f32> {
    let s = (2.0 / fan_in as f32).sqrt();
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(97))
                >> 8;
            ((h % 2001) as f32 / 1000.0 - 1.0) * s
        })
        .collect()
}

/// LeNet-5 (Conv 6@5×5 pad 2, pool, Conv 16@5×5, pool, FC 120, 84, 10) for 1×28×28, with the
/// two conv widths `c1`, `c2` (6 and 16 for LeNet-5 itself).
fn lenet(path: &Path, c1: i64, c2: i64) {
    let init = |name: &str, dims: Vec<i64>, fan_in: usize, seed: u32| Initializer {
        name: name.into(),
        data: InitData::Float(weights(dims.iter().product::<i64>() as usize, fan_in, seed)),
        dims,
    };
    let zeros = |name: &str, n: i64| Initializer {
        name: name.into(),
        dims: vec![n],
        data: InitData::Float(vec![0.0; n as usize]),
    };
    let conv = |name: &str, i: &str, w: &str, b: &str, o: &str, pad: i64| {
        Node::new("Conv", name, &[i, w, b], &[o])
            .attr("kernel_shape", Attr::Ints(vec![5, 5]))
            .attr("pads", Attr::Ints(vec![pad; 4]))
    };
    let pool = |name: &str, i: &str, o: &str| {
        Node::new("MaxPool", name, &[i], &[o])
            .attr("kernel_shape", Attr::Ints(vec![2, 2]))
            .attr("strides", Attr::Ints(vec![2, 2]))
    };
    let gemm = |name: &str, i: &str, w: &str, b: &str, o: &str| {
        Node::new("Gemm", name, &[i, w, b], &[o]).attr("transB", Attr::Int(1))
    };
    let m = Model {
        graph_name: "lenet5".into(),
        producer: "distill-bench".into(),
        opset: 17,
        nodes: vec![
            conv("c1", "image", "w1", "b1", "a1", 2),
            Node::new("Relu", "r1", &["a1"], &["h1"]),
            pool("p1", "h1", "q1"),
            conv("c2", "q1", "w2", "b2", "a2", 0),
            Node::new("Relu", "r2", &["a2"], &["h2"]),
            pool("p2", "h2", "q2"),
            Node::new("Flatten", "f", &["q2"], &["x"]).attr("axis", Attr::Int(1)),
            gemm("g3", "x", "w3", "b3", "a3"),
            Node::new("Relu", "r3", &["a3"], &["h3"]),
            gemm("g4", "h3", "w4", "b4", "a4"),
            Node::new("Relu", "r4", &["a4"], &["h4"]),
            gemm("g5", "h4", "w5", "b5", "logits"),
        ],
        initializers: vec![
            init("w1", vec![c1, 1, 5, 5], 25, 1),
            zeros("b1", c1),
            init("w2", vec![c2, c1, 5, 5], 25 * c1 as usize, 2),
            zeros("b2", c2),
            init("w3", vec![120, c2 * 25], 25 * c2 as usize, 3),
            zeros("b3", 120),
            init("w4", vec![84, 120], 120, 4),
            zeros("b4", 84),
            init("w5", vec![10, 84], 84, 5),
            zeros("b5", 10),
        ],
        inputs: vec![ValueInfo::images("image", 1, 28, 28)],
        outputs: vec![ValueInfo::logits("logits", 10)],
        metadata: vec![],
    };
    std::fs::write(path, m.to_bytes()).unwrap();
}

fn digits(dir: &Path) {
    let images: Vec<u8> = (0..SAMPLES * 784)
        .map(|i| ((i * 2654435761usize) >> 7) as u8 & 0xf0)
        .collect();
    let labels: Vec<u8> = (0..SAMPLES).map(|i| (i % 10) as u8).collect();
    write_idx(
        &dir.join("train-images-idx3-ubyte"),
        &dir.join("train-labels-idx1-ubyte"),
        28,
        28,
        &images,
        &labels,
    )
    .unwrap();
}

fn main() {
    let t = tempfile::tempdir().unwrap();
    digits(t.path());
    let data: Arc<dyn dataset::Dataset> =
        Arc::from(dataset::open(t.path(), None, "train").unwrap());
    let records = SAMPLES as u64 * u64::from(EPOCHS);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env = &teacher_infer::runtime::environment(None).unwrap().1;
    println!(
        "\n## labelling stage vs bare session (CPU EP, 28x28, batch {BATCH}, {records} records per run, {cores} cores; median of 5 interleaved rounds)"
    );
    println!("| teacher | bare session images/s | stage images/s | stage / bare |");
    println!("|---|---|---|---|");
    for (name, c1, c2) in [
        ("LeNet-5 (6, 16 channels)", 6, 16),
        ("wide LeNet (32, 64 channels)", 32, 64),
        ("wider LeNet (64, 128 channels)", 64, 128),
    ] {
        let model = t.path().join(format!("lenet-{c1}-{c2}.onnx"));
        lenet(&model, c1, c2);
        // Bare session: pre-made batches of the same size, same model, nothing else running.
        let mut session = TeacherSession::open(env, &model, Device::Cpu, 0).unwrap();
        let batch: Vec<f32> = (0..BATCH * 784).map(|i| (i % 255) as f32 / 255.0).collect();
        let mut logits = Vec::new();
        session
            .run(&batch, BATCH, [1, 28, 28], &mut logits)
            .unwrap();
        let mut bare = || {
            let runs = records as usize / BATCH;
            let t0 = Instant::now();
            for _ in 0..runs {
                session
                    .run(&batch, BATCH, [1, 28, 28], &mut logits)
                    .unwrap();
            }
            (runs * BATCH) as f64 / t0.elapsed().as_secs_f64()
        };
        let stage = || {
            let cfg = LabelConfig {
                epochs: EPOCHS,
                recipe: Recipe::light(),
                batch: BATCH,
                threads: cores,
                mean: vec![0.1307],
                std: vec![0.3081],
                mode: OpenMode::Overwrite,
                ..LabelConfig::new(vec![model.clone()], data.clone(), t.path().join("store"))
            };
            let s = teacher_infer::label(&cfg, |_| {}).unwrap();
            assert_eq!(s.records, records);
            s.images_per_sec
        };
        let mut rounds: Vec<(f64, f64)> = (0..5).map(|_| (bare(), stage())).collect();
        rounds.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (b, s) = rounds[2];
        println!("| {name} | {b:.0} | {s:.0} | {:.2} |", s / b);
    }
}
