//! Teachers built by the test (ONNX written from Rust) run through ONNX Runtime's CPU EP.

use formats::onnx::{Attr, Dim, ElemType, InitData, Initializer, Model, Node, ValueInfo};
use std::path::Path;
use teacher_infer::runtime;
use teacher_infer::{Device, InferError, TeacherSession};

/// `logits = flatten(image) · W + b` for 1×4×4 images and `classes` classes.
fn linear(
    batch: Dim,
    classes: usize,
    extra_input: bool,
    output_rank3: bool,
) -> (Model, Vec<f32>, Vec<f32>) {
    let w: Vec<f32> = (0..16 * classes)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1)
        .collect();
    let b: Vec<f32> = (0..classes).map(|i| i as f32 * 0.05).collect();
    let mut nodes = vec![
        Node::new("Flatten", "flat", &["image"], &["x"]).attr("axis", Attr::Int(1)),
        Node::new("MatMul", "mm", &["x", "W"], &["xw"]),
        Node::new("Add", "add", &["xw", "b"], &["logits"]),
    ];
    let mut out_dims = vec![batch.clone(), Dim::Fixed(classes as i64)];
    if output_rank3 {
        nodes.push(Node::new(
            "Unsqueeze",
            "u",
            &["logits", "axes"],
            &["logits3"],
        ));
        out_dims.push(Dim::Fixed(1));
    }
    let mut inputs = vec![ValueInfo {
        name: "image".into(),
        elem: ElemType::Float,
        dims: vec![batch, Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(4)],
    }];
    if extra_input {
        inputs.push(ValueInfo {
            name: "mask".into(),
            elem: ElemType::Float,
            dims: vec![Dim::Fixed(1)],
        });
    }
    let model = Model {
        graph_name: "linear".into(),
        producer: "distill-tests".into(),
        opset: 17,
        nodes,
        initializers: vec![
            Initializer {
                name: "W".into(),
                dims: vec![16, classes as i64],
                data: InitData::Float(w.clone()),
            },
            Initializer {
                name: "b".into(),
                dims: vec![classes as i64],
                data: InitData::Float(b.clone()),
            },
            Initializer {
                name: "axes".into(),
                dims: vec![1],
                data: InitData::Int64(vec![2]),
            },
        ],
        inputs,
        outputs: vec![ValueInfo {
            name: if output_rank3 { "logits3" } else { "logits" }.into(),
            elem: ElemType::Float,
            dims: out_dims,
        }],
        metadata: vec![
            ("mean".into(), "[0.5]".into()),
            ("interpolation".into(), "bicubic".into()),
        ],
    };
    (model, w, b)
}

fn save(dir: &Path, name: &str, m: &Model) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.to_bytes()).unwrap();
    p
}

fn env() -> &'static ort::environment::Environment {
    &runtime::environment(None)
        .expect("ONNX Runtime: run scripts/fetch-ort.sh")
        .1
}

fn model_err(r: Result<TeacherSession, InferError>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn linear_teacher_matches_direct_computation() {
    let t = tempfile::tempdir().unwrap();
    for batch in [Dim::Symbolic("batch".into()), Dim::Fixed(1), Dim::Fixed(3)] {
        let (m, w, b) = linear(batch.clone(), 5, false, false);
        let p = save(t.path(), "linear.onnx", &m);
        let mut s = TeacherSession::open(env(), &p, Device::Cpu, 1).unwrap();
        assert_eq!(s.classes, 5);
        // ONNX Runtime reads the metadata the writer puts in (distill reads it without a
        // session: formats::preprocess), so exported students carry theirs to any runtime.
        let raw = ort::session::Session::builder(env())
            .unwrap()
            .commit_from_file(&p)
            .unwrap();
        let md = raw.metadata().unwrap();
        assert_eq!(md.custom("mean").as_deref(), Some("[0.5]"));
        assert_eq!(md.custom("interpolation").as_deref(), Some("bicubic"));
        assert_eq!(md.custom("std"), None);
        assert_eq!(s.input_shape[1..], [1, 4, 4]);
        assert_eq!(s.info().sha256.len(), 64);
        s.check_input(1, 4, 4).unwrap();
        let n = 7;
        let x: Vec<f32> = (0..n * 16).map(|i| ((i * 13 % 17) as f32) / 17.0).collect();
        let mut logits = Vec::new();
        s.run(&x, n, [1, 4, 4], &mut logits).unwrap();
        assert_eq!(logits.len(), n * 5);
        for i in 0..n {
            for c in 0..5 {
                let want: f32 = b[c] + (0..16).map(|k| x[i * 16 + k] * w[k * 5 + c]).sum::<f32>();
                assert!(
                    (logits[i * 5 + c] - want).abs() < 1e-5,
                    "{batch:?} sample {i} class {c}"
                );
            }
        }
    }
}

#[test]
fn unusable_models_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let bogus = t.path().join("bogus.onnx");
    std::fs::write(&bogus, b"definitely not protobuf").unwrap();
    let e = model_err(TeacherSession::open(env(), &bogus, Device::Cpu, 1));
    assert!(e.contains("bogus.onnx") && e.contains("not a model"), "{e}");

    let (m, ..) = linear(Dim::Symbolic("n".into()), 5, true, false);
    let e = model_err(TeacherSession::open(
        env(),
        &save(t.path(), "two.onnx", &m),
        Device::Cpu,
        1,
    ));
    assert!(e.contains("2 inputs (image, mask)"), "{e}");

    let (m, ..) = linear(Dim::Symbolic("n".into()), 5, false, true);
    let e = model_err(TeacherSession::open(
        env(),
        &save(t.path(), "rank3.onnx", &m),
        Device::Cpu,
        1,
    ));
    assert!(e.contains("[batch, classes]"), "{e}");

    let (m, ..) = linear(Dim::Symbolic("n".into()), 5, false, false);
    let s = TeacherSession::open(env(), &save(t.path(), "ok.onnx", &m), Device::Cpu, 1).unwrap();
    let e = s.check_input(3, 4, 5).unwrap_err().to_string();
    assert!(
        e.contains("channels 1 (model) vs 3 (images)") && e.contains("width 4 (model) vs 5"),
        "{e}"
    );
    assert!(!e.contains("height"), "{e}");
}

#[test]
fn asking_for_cuda_without_it_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let (m, ..) = linear(Dim::Symbolic("n".into()), 5, false, false);
    let p = save(t.path(), "ok.onnx", &m);
    let e = model_err(TeacherSession::open(env(), &p, Device::Cuda(0), 1));
    assert!(
        e.starts_with("cuda:0") && e.contains("CUDA execution provider"),
        "{e}"
    );
}
