//! A small writer of ONNX model files (protobuf `ModelProto`), enough to export distill's
//! students and to build test teachers without Python.
//!
//! It encodes exactly the fields it models: graph nodes with attributes, float/int64 initializers
//! as raw data, typed inputs and outputs with fixed or symbolic dimensions, opset imports and
//! `metadata_props`. Field
//! numbers follow `onnx.proto` (IR version 8, opset 17 by default).

/// ONNX tensor element types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    Float = 1,
    Uint8 = 2,
    Int64 = 7,
}

/// One dimension of a value's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A named dynamic dimension such as `"batch"`.
    Symbolic(String),
}

/// A node attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
}

/// A graph node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

impl Node {
    /// A node of operator `op` from `inputs` to `outputs`.
    pub fn new(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        Node {
            op: op.into(),
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &str, value: Attr) -> Self {
        self.attrs.push((name.into(), value));
        self
    }
}

/// A constant tensor stored in the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: InitData,
}

/// Data of an initializer.
#[derive(Clone, Debug, PartialEq)]
pub enum InitData {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem: ElemType,
    pub dims: Vec<Dim>,
}

impl ValueInfo {
    /// A float image batch `[batch, channels, height, width]` with a symbolic batch dimension.
    pub fn images(name: &str, channels: i64, height: i64, width: i64) -> Self {
        ValueInfo {
            name: name.into(),
            elem: ElemType::Float,
            dims: vec![
                Dim::Symbolic("batch".into()),
                Dim::Fixed(channels),
                Dim::Fixed(height),
                Dim::Fixed(width),
            ],
        }
    }

    /// Float logits `[batch, classes]` with a symbolic batch dimension.
    pub fn logits(name: &str, classes: i64) -> Self {
        ValueInfo {
            name: name.into(),
            elem: ElemType::Float,
            dims: vec![Dim::Symbolic("batch".into()), Dim::Fixed(classes)],
        }
    }
}

/// A whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub graph_name: String,
    pub producer: String,
    pub opset: i64,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// `metadata_props`: key-value text, e.g. the pre-processing of [`crate::preprocess`].
    pub metadata: Vec<(String, String)>,
}

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn msg(&mut self, field: u32, f: impl FnOnce(&mut Buf)) {
        let mut inner = Buf::default();
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

fn value_info(b: &mut Buf, v: &ValueInfo) {
    b.string(1, &v.name);
    b.msg(2, |t| {
        // TypeProto.tensor_type
        t.msg(1, |tt| {
            tt.int(1, v.elem as i64);
            tt.msg(2, |shape| {
                for d in &v.dims {
                    shape.msg(1, |dim| match d {
                        Dim::Fixed(n) => dim.int(1, *n),
                        Dim::Symbolic(s) => dim.string(2, s),
                    });
                }
            });
        });
    });
}

impl Model {
    /// The serialized `ModelProto`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = Buf::default();
        m.int(1, 8); // ir_version
        m.string(2, &self.producer);
        m.msg(7, |g| {
            for n in &self.nodes {
                g.msg(1, |nb| {
                    for i in &n.inputs {
                        nb.string(1, i);
                    }
                    for o in &n.outputs {
                        nb.string(2, o);
                    }
                    nb.string(3, &n.name);
                    nb.string(4, &n.op);
                    for (name, a) in &n.attrs {
                        nb.msg(5, |ab| {
                            ab.string(1, name);
                            match a {
                                Attr::Float(f) => {
                                    ab.float(2, *f);
                                    ab.int(20, 1);
                                }
                                Attr::Int(i) => {
                                    ab.int(3, *i);
                                    ab.int(20, 2);
                                }
                                Attr::String(s) => {
                                    ab.string(4, s);
                                    ab.int(20, 3);
                                }
                                Attr::Floats(fs) => {
                                    for f in fs {
                                        ab.float(7, *f);
                                    }
                                    ab.int(20, 6);
                                }
                                Attr::Ints(is) => {
                                    for i in is {
                                        ab.int(8, *i);
                                    }
                                    ab.int(20, 7);
                                }
                            }
                        });
                    }
                });
            }
            g.string(2, &self.graph_name);
            for init in &self.initializers {
                g.msg(5, |t| {
                    for d in &init.dims {
                        t.int(1, *d);
                    }
                    let (ty, raw): (i64, Vec<u8>) = match &init.data {
                        InitData::Float(v) => (1, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                        InitData::Int64(v) => (7, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                    };
                    t.int(2, ty);
                    t.string(8, &init.name);
                    t.bytes(9, &raw);
                });
            }
            for v in &self.inputs {
                g.msg(11, |b| value_info(b, v));
            }
            for v in &self.outputs {
                g.msg(12, |b| value_info(b, v));
            }
        });
        m.msg(8, |o| {
            o.string(1, "");
            o.int(2, self.opset);
        });
        for (k, v) in &self.metadata {
            m.msg(14, |e| {
                e.string(1, k);
                e.string(2, v);
            });
        }
        m.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields() {
        let mut b = Buf::default();
        b.int(1, 300);
        assert_eq!(b.0, vec![0x08, 0xac, 0x02]);
        let mut b = Buf::default();
        b.string(2, "hi");
        assert_eq!(b.0, vec![0x12, 2, b'h', b'i']);
        let mut b = Buf::default();
        b.int(3, -1);
        assert_eq!(b.0.len(), 11, "negative int64 is a 10-byte varint");
    }
}
