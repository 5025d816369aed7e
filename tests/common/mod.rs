//! Helpers shared by the end-to-end tests: small IDX datasets, linear ONNX teachers, and
//! running the `distill` binary.
#![allow(dead_code)]

use datasets::write_idx;
use formats::onnx::{Attr, InitData, Initializer, Model, Node, ValueInfo};
use std::path::Path;
use std::process::{Command, Output};

pub const N: usize = 400;
pub const SIDE: usize = 12;

/// Ten classes of 12×12 images: class c lights row c and column c, plus noise.
pub fn write_data(dir: &Path) {
    write_split(dir, "train", N, 0);
}

/// `n` images of split `split` (`train` or `test`); `salt` varies the noise.
pub fn write_split(dir: &Path, split: &str, n: usize, salt: usize) {
    let prefix = if split == "test" { "t10k" } else { "train" };
    let mut images = Vec::with_capacity(n * SIDE * SIDE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i * 7 + salt) % 10;
        labels.push(c as u8);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let on = y == c || x == c;
                let noise = ((i * 31 + y * 17 + x * 13 + salt * 5) % 50) as u8;
                images.push(if on { 200 + noise } else { noise });
            }
        }
    }
    write_idx(
        &dir.join(format!("{prefix}-images-idx3-ubyte")),
        &dir.join(format!("{prefix}-labels-idx1-ubyte")),
        SIDE as u32,
        SIDE as u32,
        &images,
        &labels,
    )
    .unwrap();
}

/// The teachers' input: `[batch, 1, SIDE, SIDE]` floats named `image`.
pub fn image_input() -> ValueInfo {
    ValueInfo::images("image", 1, SIDE as i64, SIDE as i64)
}

/// The teachers' output: `[batch, 10]` logits.
pub fn logits_output() -> ValueInfo {
    ValueInfo::logits("logits", 10)
}

/// A linear teacher: logits = scale · (flatten(x) · T) + shift, T[k, c] = 1 on class c's cross.
pub fn write_teacher(path: &Path, scale: f32, shift: f32) {
    let d = SIDE * SIDE;
    let mut w = vec![0f32; d * 10];
    for c in 0..10 {
        for y in 0..SIDE {
            for x in 0..SIDE {
                if y == c || x == c {
                    w[(y * SIDE + x) * 10 + c] = scale;
                }
            }
        }
    }
    let b: Vec<f32> = (0..10).map(|c| shift + c as f32 * 0.01).collect();
    write_linear_teacher(path, image_input(), w, b);
}

/// A linear teacher on `input`: logits = flatten(x) · W + b, W row-major `[features, classes]`.
pub fn write_linear_teacher(path: &Path, input: ValueInfo, w: Vec<f32>, b: Vec<f32>) {
    write_linear_teacher_with(path, input, w, b, &[]);
}

/// [`write_linear_teacher`] with these `metadata_props`.
pub fn write_linear_teacher_with(
    path: &Path,
    input: ValueInfo,
    w: Vec<f32>,
    b: Vec<f32>,
    metadata: &[(&str, &str)],
) {
    let classes = b.len();
    let m = Model {
        graph_name: "linear".into(),
        producer: "distill-tests".into(),
        opset: 17,
        nodes: vec![
            Node::new("Flatten", "flat", &["image"], &["x"]).attr("axis", Attr::Int(1)),
            Node::new("MatMul", "mm", &["x", "W"], &["xw"]),
            Node::new("Add", "add", &["xw", "b"], &["logits"]),
        ],
        initializers: vec![
            Initializer {
                name: "W".into(),
                dims: vec![(w.len() / classes) as i64, classes as i64],
                data: InitData::Float(w),
            },
            Initializer {
                name: "b".into(),
                dims: vec![classes as i64],
                data: InitData::Float(b),
            },
        ],
        inputs: vec![input],
        outputs: vec![ValueInfo::logits("logits", classes as i64)],
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    std::fs::write(path, m.to_bytes()).unwrap();
}

/// Dimensions of [`write_feature_teacher`]'s pooled output.
pub const POOLED: usize = 12;

/// A teacher with a feature output: `pooled = relu(flatten(x) · F + 2)` (`[batch, POOLED]`,
/// listed first; dimension c < 10 responds to class c's cross, 10 and 11 to the rows and
/// columns of the upper half), `logits = pooled · G` (`[batch, 10]`, G = 2 · identity on the
/// first ten), and `tokens`, `pooled` with a third axis (`[batch, POOLED, 1]`, not a pooled
/// embedding).
pub fn write_feature_teacher(path: &Path) {
    write_feature_teacher_scaled(path, 1.0);
}

/// [`write_feature_teacher`] with every weight of its pooled layer times `scale` (another
/// teacher file of the same outputs).
pub fn write_feature_teacher_scaled(path: &Path, scale: f32) {
    std::fs::write(path, feature_model(scale, true).to_bytes()).unwrap();
}

/// [`write_feature_teacher`] without its classifier: an embedding-only teacher whose one
/// output is `pooled`, the same values as the feature teacher's.
pub fn write_embedding_teacher(path: &Path) {
    std::fs::write(path, feature_model(1.0, false).to_bytes()).unwrap();
}

/// The feature teacher's graph; without `head`, only its pooled output.
fn feature_model(scale: f32, head: bool) -> Model {
    let d = SIDE * SIDE;
    let mut f = vec![0f32; d * POOLED];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let k = y * SIDE + x;
            for c in 0..10 {
                if y == c || x == c {
                    f[k * POOLED + c] = 0.05 * scale;
                }
            }
            f[k * POOLED + 10] = if y < SIDE / 2 { 0.01 } else { 0.0 };
            f[k * POOLED + 11] = if x < SIDE / 2 { 0.01 } else { 0.0 };
        }
    }
    let c = vec![2.0f32; POOLED];
    let mut g = vec![0f32; POOLED * 10];
    for j in 0..10 {
        g[j * 10 + j] = 2.0;
    }
    let init = |name: &str, dims: Vec<i64>, v: Vec<f32>| Initializer {
        name: name.into(),
        dims,
        data: InitData::Float(v),
    };
    let mut m = Model {
        graph_name: "features".into(),
        producer: "distill-tests".into(),
        opset: 17,
        nodes: vec![
            Node::new("Flatten", "flat", &["image"], &["x"]).attr("axis", Attr::Int(1)),
            Node::new("MatMul", "mm", &["x", "F"], &["xf"]),
            Node::new("Add", "add", &["xf", "c"], &["pre"]),
            Node::new("Relu", "relu", &["pre"], &["pooled"]),
            Node::new("MatMul", "head", &["pooled", "G"], &["logits"]),
            Node::new("Unsqueeze", "u", &["pooled", "axes"], &["tokens"]),
        ],
        initializers: vec![
            init("F", vec![d as i64, POOLED as i64], f),
            init("c", vec![POOLED as i64], c),
            init("G", vec![POOLED as i64, 10], g),
            Initializer {
                name: "axes".into(),
                dims: vec![1],
                data: InitData::Int64(vec![2]),
            },
        ],
        inputs: vec![image_input()],
        outputs: vec![
            ValueInfo::logits("pooled", POOLED as i64),
            logits_output(),
            ValueInfo {
                name: "tokens".into(),
                elem: formats::onnx::ElemType::Float,
                dims: vec![
                    formats::onnx::Dim::Symbolic("batch".into()),
                    formats::onnx::Dim::Fixed(POOLED as i64),
                    formats::onnx::Dim::Fixed(1),
                ],
            },
        ],
        metadata: vec![],
    };
    if !head {
        m.nodes.truncate(4);
        m.initializers.retain(|i| i.name == "F" || i.name == "c");
        m.outputs.truncate(1);
    }
    m
}

/// `distill label --json` of split `split` of `data` with `teacher`, recipe `aug`, `epochs`
/// epochs, top-5 and the tests' normalization (mean 0.5, std 0.25) into `out`, then `extra`;
/// checked to succeed.
pub fn label_split(
    teacher: &Path,
    data: &Path,
    (split, aug, epochs): (&str, &str, &str),
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut args: Vec<String> = [
        "label",
        "--json",
        "--teacher",
        &s(teacher),
        "--data",
        &s(data),
        "--split",
        split,
        "--aug",
        aug,
        "--epochs",
        epochs,
        "--topk",
        "5",
        "--out",
        &s(out),
        "--mean",
        "0.5",
        "--std",
        "0.25",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    ok(&distill(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ))
}

pub fn distill(args: &[&str]) -> Output {
    distill_env(&[], args)
}

/// `distill` with these environment variables set.
pub fn distill_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `classes` folders of `per` JPEGs (quality 90) of 40×30 or 30×40, under `root/train/cC/`.
pub fn jpeg_folder(root: &Path, classes: usize, per: usize) {
    for c in 0..classes {
        let dir = root.join("train").join(format!("c{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per {
            let (w, h) = if i % 2 == 0 { (40, 30) } else { (30, 40) };
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = ((x * 7 + y * 3 + i as u32 * 11) % 64) as u8;
                image::Rgb([v * 2 + (c as u8) * 40, v, 255 - v])
            });
            let f = std::fs::File::create(dir.join(format!("{i:03}.jpg"))).unwrap();
            image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90)
                .encode_image(&img)
                .unwrap();
        }
    }
}

/// Copies the files of directory `from` into `to` (made if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Copies split `from` of an image folder to split `to` (a test split made of the same files).
pub fn copy_split(root: &Path, from: &str, to: &str) {
    for class in std::fs::read_dir(root.join(from)).unwrap() {
        let class = class.unwrap();
        copy_dir(&class.path(), &root.join(to).join(class.file_name()));
    }
}

/// A linear teacher on `[batch, 3, 16, 16]` inputs with 3 classes.
pub fn write_rgb_teacher(path: &Path) {
    write_rgb_teacher_with(path, &[]);
}

/// [`write_rgb_teacher`] with these `metadata_props`.
pub fn write_rgb_teacher_with(path: &Path, metadata: &[(&str, &str)]) {
    let d = 3 * 16 * 16;
    let w: Vec<f32> = (0..d * 3)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
        .collect();
    write_linear_teacher_with(
        path,
        formats::onnx::ValueInfo::images("image", 3, 16, 16),
        w,
        vec![0.0; 3],
        metadata,
    );
}

/// A run directory's `metrics.jsonl`, a value per epoch.
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `distill train --json`: an mlp `kd` student, 2 epochs of batches of 8, from `labels` on `data`.
pub fn train_mlp_kd(data: &Path, labels: &Path, out: &Path) -> Output {
    train_mlp_kd_env(&[], data, labels, out)
}

/// [`train_mlp_kd`] with these environment variables set.
pub fn train_mlp_kd_env(env: &[(&str, &str)], data: &Path, labels: &Path, out: &Path) -> Output {
    distill_env(
        env,
        &[
            "train",
            "--json",
            "--data",
            data.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--model",
            "mlp",
            "--loss",
            "kd",
            "--epochs",
            "2",
            "--batch",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
    )
}
