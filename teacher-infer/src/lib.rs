//! The labelling stage: runs ONNX teachers (through ONNX Runtime) over augmented batches and
//! writes their top-k logits into a label store.
//!
//! It depends on `formats` and `label-store` only, never on `student-train`. The runtime
//! discovery, sessions and pipeline arrive with the labelling issue; until then this crate holds
//! nothing, rather than something fake.
