//! ONNX export of trained students: standard opset-17 graphs with a dynamic batch dimension and
//! the student's input normalization inside, so the file takes `[batch, C, H, W]` pixels in
//! [0, 1] (what `distill label` feeds by default) and runs in ONNX Runtime, PyTorch-based tools
//! or any serving stack. Written with the minimal protobuf writer in `formats::onnx`.
//!
//! Layers map one to one: Conv, BatchNormalization (inference form, running statistics),
//! MaxPool, GlobalAveragePool, Gemm, Relu, Flatten, LayerNormalization; the one-group GroupNorm
//! of the `layer` normalization is spelled out with ReduceMean, since GroupNormalization needs
//! opset 18.

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::error::TrainError;
use crate::models::mlp::LAYER_NORM_EPS;
use crate::models::norm::Norm;
use crate::models::resnet::BasicBlock;
use crate::models::{Lenet5, Mlp, Resnet, Student};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, GroupNorm, LayerNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use formats::onnx::{Attr, Dim, ElemType, InitData, Initializer, Model, Node, ValueInfo};

/// Name of the exported graph's input.
pub const INPUT: &str = "input";
/// Name of the exported graph's output.
pub const OUTPUT: &str = "logits";

/// The ONNX model of `student` (built for `meta.input`, normalized with `meta.mean`/`meta.std`).
pub fn to_onnx(student: &Student, meta: &CheckpointMeta) -> Result<Vec<u8>, String> {
    to_onnx_with(student, meta, None)
}

/// [`to_onnx`], with the student's penultimate features (what its classifier reads, `[batch,
/// D]`) as a second output named `feature_output` when given: a student exported so is a
/// feature teacher for `distill label --feature NAME` (born-again feature distillation).
pub fn to_onnx_with(
    student: &Student,
    meta: &CheckpointMeta,
    feature_output: Option<&str>,
) -> Result<Vec<u8>, String> {
    if feature_output.is_some_and(|n| n == OUTPUT || n == INPUT || n.is_empty()) {
        return Err(format!(
            "the feature output needs a name other than {OUTPUT:?} and {INPUT:?}"
        ));
    }
    let i = meta.input;
    if meta.mean.len() != i.channels || meta.std.len() != i.channels {
        return Err(format!(
            "normalization has {} means and {} stds for {} channels",
            meta.mean.len(),
            meta.std.len(),
            i.channels
        ));
    }
    let mut g = Graph::default();
    let c = i.channels as i64;
    let mean = g.init("mean", vec![1, c, 1, 1], meta.mean.clone());
    let std = g.init("std", vec![1, c, 1, 1], meta.std.clone());
    let x = g.node("Sub", &[INPUT, &mean], vec![]);
    let x = g.node("Div", &[&x, &std], vec![]);
    let (features, head) = match student {
        Student::Mlp(m) => (g.mlp(&x, m), &m.head),
        Student::Lenet5(m) => (g.lenet5(&x, m), &m.fc3),
        Student::Resnet(m) => (g.resnet(&x, m), &m.head),
    };
    let logits = g.linear(&features, head);
    g.nodes
        .push(Node::new("Identity", "output", &[&logits], &[OUTPUT]));
    let batch = || Dim::Symbolic("batch".into());
    let mut outputs = vec![ValueInfo {
        name: OUTPUT.into(),
        elem: ElemType::Float,
        dims: vec![batch(), Dim::Fixed(i.classes as i64)],
    }];
    if let Some(name) = feature_output {
        g.nodes
            .push(Node::new("Identity", "feature", &[&features], &[name]));
        outputs.push(ValueInfo {
            name: name.into(),
            elem: ElemType::Float,
            dims: vec![batch(), Dim::Fixed(student.feature_dim() as i64)],
        });
    }
    let model = Model {
        graph_name: format!("distill-{}", meta.model.family),
        producer: concat!("distill ", env!("CARGO_PKG_VERSION")).into(),
        opset: 17,
        nodes: g.nodes,
        initializers: g.inits,
        inputs: vec![ValueInfo {
            name: INPUT.into(),
            elem: ElemType::Float,
            dims: vec![
                batch(),
                Dim::Fixed(c),
                Dim::Fixed(i.height as i64),
                Dim::Fixed(i.width as i64),
            ],
        }],
        outputs,
        // Normalization is inside the graph, so the input it expects is pixel/255 as is.
        metadata: formats::preprocess::Preprocessing {
            mean: Some(vec![0.0; i.channels]),
            std: Some(vec![1.0; i.channels]),
            interpolation: meta.interpolation,
            crop_pct: meta.crop_pct,
        }
        .to_metadata(),
    };
    Ok(model.to_bytes())
}

/// The student `ck` holds as an ONNX model ([`to_onnx`]), built on the CPU.
pub fn checkpoint_to_onnx(ck: &Checkpoint) -> Result<Vec<u8>, TrainError> {
    checkpoint_to_onnx_with(ck, None)
}

/// [`checkpoint_to_onnx`] with the penultimate features as output `feature_output`
/// ([`to_onnx_with`]).
pub fn checkpoint_to_onnx_with(
    ck: &Checkpoint,
    feature_output: Option<&str>,
) -> Result<Vec<u8>, TrainError> {
    let student = ck.student(&burn::tensor::Device::flex())?;
    to_onnx_with(&student, &ck.meta, feature_output)
        .map_err(|e| TrainError::corrupt(&ck.path, format!("export: {e}")))
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    inits: Vec<Initializer>,
    count: usize,
}

fn values<const D: usize>(t: Tensor<D>) -> (Vec<i64>, Vec<f32>) {
    let dims = t.dims().iter().map(|&d| d as i64).collect();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("a converted f32 tensor reads as f32");
    (dims, v)
}

fn pads(p: &PaddingConfig2d) -> Vec<i64> {
    match *p {
        // burn: (top, left, bottom, right); ONNX: [top, left, bottom, right].
        PaddingConfig2d::Explicit(t, l, b, r) => vec![t as i64, l as i64, b as i64, r as i64],
        _ => vec![0; 4],
    }
}

impl Graph {
    fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}_{}", self.count)
    }

    fn init(&mut self, prefix: &str, dims: Vec<i64>, data: Vec<f32>) -> String {
        let name = self.fresh(prefix);
        self.inits.push(Initializer {
            name: name.clone(),
            dims,
            data: InitData::Float(data),
        });
        name
    }

    fn param<const D: usize>(&mut self, prefix: &str, t: Tensor<D>) -> String {
        let (dims, v) = values(t);
        self.init(prefix, dims, v)
    }

    /// Adds a node with one output and returns the output's name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        let mut n = Node::new(op, &out, inputs, &[&out]);
        for (k, v) in attrs {
            n = n.attr(k, v);
        }
        self.nodes.push(n);
        out
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    fn conv(&mut self, x: &str, c: &Conv2d) -> String {
        let w = self.param("conv_w", c.weight.val());
        let k = c.kernel_size.map(|v| v as i64).to_vec();
        let attrs = vec![
            ("kernel_shape", Attr::Ints(k)),
            ("strides", Attr::Ints(c.stride.map(|v| v as i64).to_vec())),
            (
                "dilations",
                Attr::Ints(c.dilation.map(|v| v as i64).to_vec()),
            ),
            ("group", Attr::Int(c.groups as i64)),
            ("pads", Attr::Ints(pads(&c.padding))),
        ];
        match &c.bias {
            Some(b) => {
                let b = self.param("conv_b", b.val());
                self.node("Conv", &[x, &w, &b], attrs)
            }
            None => self.node("Conv", &[x, &w], attrs),
        }
    }

    fn linear(&mut self, x: &str, l: &Linear) -> String {
        // burn stores Linear weights as [in, out]: Y = X·W + b is Gemm without transposes.
        let w = self.param("fc_w", l.weight.val());
        match &l.bias {
            Some(b) => {
                let b = self.param("fc_b", b.val());
                self.node("Gemm", &[x, &w, &b], vec![])
            }
            None => self.node("MatMul", &[x, &w], vec![]),
        }
    }

    fn batch_norm(&mut self, x: &str, b: &BatchNorm) -> String {
        let g = self.param("bn_scale", b.gamma.val());
        let be = self.param("bn_bias", b.beta.val());
        let m = self.param("bn_mean", b.running_mean.value());
        let v = self.param("bn_var", b.running_var.value());
        self.node(
            "BatchNormalization",
            &[x, &g, &be, &m, &v],
            vec![("epsilon", Attr::Float(b.epsilon as f32))],
        )
    }

    /// GroupNorm over every channel and pixel of a sample (one group), then per-channel affine.
    fn group_norm(&mut self, x: &str, n: &GroupNorm) -> String {
        let axes = || {
            vec![
                ("axes", Attr::Ints(vec![1, 2, 3])),
                ("keepdims", Attr::Int(1)),
            ]
        };
        let mean = self.node("ReduceMean", &[x], axes());
        let d = self.node("Sub", &[x, &mean], vec![]);
        let sq = self.node("Mul", &[&d, &d], vec![]);
        let var = self.node("ReduceMean", &[&sq], axes());
        let eps = self.init("eps", vec![], vec![n.epsilon as f32]);
        let ve = self.node("Add", &[&var, &eps], vec![]);
        let sd = self.node("Sqrt", &[&ve], vec![]);
        let mut y = self.node("Div", &[&d, &sd], vec![]);
        let c = n.num_channels as i64;
        if let Some(g) = &n.gamma {
            let (_, v) = values(g.val());
            let g = self.init("gn_scale", vec![1, c, 1, 1], v);
            y = self.node("Mul", &[&y, &g], vec![]);
        }
        if let Some(b) = &n.beta {
            let (_, v) = values(b.val());
            let b = self.init("gn_bias", vec![1, c, 1, 1], v);
            y = self.node("Add", &[&y, &b], vec![]);
        }
        y
    }

    fn layer_norm(&mut self, x: &str, n: &LayerNorm) -> String {
        let g = self.param("ln_scale", n.gamma.val());
        let mut inputs = vec![x.to_string(), g];
        if let Some(b) = &n.beta {
            inputs.push(self.param("ln_bias", b.val()));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            "LayerNormalization",
            &refs,
            vec![
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(LAYER_NORM_EPS as f32)),
            ],
        )
    }

    fn norm(&mut self, x: &str, n: &Norm) -> String {
        match (&n.batch, &n.layer) {
            (Some(b), _) => self.batch_norm(x, b),
            (_, Some(l)) => self.group_norm(x, l),
            _ => x.to_string(),
        }
    }

    fn max_pool(&mut self, x: &str, p: &MaxPool2d) -> String {
        self.node(
            "MaxPool",
            &[x],
            vec![
                (
                    "kernel_shape",
                    Attr::Ints(p.kernel_size.map(|v| v as i64).to_vec()),
                ),
                ("strides", Attr::Ints(p.stride.map(|v| v as i64).to_vec())),
                ("pads", Attr::Ints(pads(&p.padding))),
            ],
        )
    }

    fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![("axis", Attr::Int(1))])
    }

    /// LeNet-5 up to its penultimate features (the classifier is added by the caller); so are
    /// the other families'.
    fn lenet5(&mut self, x: &str, m: &Lenet5) -> String {
        let y = self.conv(x, &m.conv1);
        let y = self.norm(&y, &m.norm1);
        let y = self.relu(&y);
        let y = self.max_pool(&y, &m.pool);
        let y = self.conv(&y, &m.conv2);
        let y = self.norm(&y, &m.norm2);
        let y = self.relu(&y);
        let y = self.max_pool(&y, &m.pool);
        let y = self.flatten(&y);
        let y = self.linear(&y, &m.fc1);
        let y = self.relu(&y);
        let y = self.linear(&y, &m.fc2);
        self.relu(&y)
    }

    fn mlp(&mut self, x: &str, m: &Mlp) -> String {
        let mut y = self.flatten(x);
        for (i, l) in m.layers.iter().enumerate() {
            y = self.linear(&y, l);
            if let Some(b) = m.batch.get(i) {
                y = self.batch_norm(&y, b);
            }
            if let Some(n) = m.layer.get(i) {
                y = self.layer_norm(&y, n);
            }
            y = self.relu(&y);
        }
        y
    }

    fn block(&mut self, x: &str, b: &BasicBlock) -> String {
        let y = self.conv(x, &b.conv1);
        let y = self.norm(&y, &b.norm1);
        let y = self.relu(&y);
        let y = self.conv(&y, &b.conv2);
        let y = self.norm(&y, &b.norm2);
        let s = match (&b.shortcut, &b.shortcut_norm) {
            (Some(c), Some(n)) => {
                let s = self.conv(x, c);
                self.norm(&s, n)
            }
            _ => x.to_string(),
        };
        let sum = self.node("Add", &[&y, &s], vec![]);
        self.relu(&sum)
    }

    fn resnet(&mut self, x: &str, m: &Resnet) -> String {
        let y = self.conv(x, &m.stem);
        let y = self.norm(&y, &m.stem_norm);
        let mut y = self.relu(&y);
        if let Some(p) = &m.stem_pool {
            y = self.max_pool(&y, p);
        }
        for b in &m.blocks {
            y = self.block(&y, b);
        }
        let y = self.node("GlobalAveragePool", &[&y], vec![]);
        self.flatten(&y)
    }
}
