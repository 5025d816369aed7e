//! The labelling stage: finds ONNX Runtime, opens ONNX teachers on the CPU or CUDA execution
//! provider, and runs them over augmented batches into a label store, or on a student's batches
//! as they come ([`online::OnlineLabeller`], online distillation).
//!
//! It depends on `formats`, `datasets`, `replay` and `label-store`, never on `student-train`.

pub mod bank;
pub mod basis;
pub mod error;
pub mod online;
pub mod pipeline;
pub mod runtime;
pub mod session;
pub(crate) mod sink;

pub use error::InferError;
pub use online::OnlineLabeller;
pub use pipeline::{
    Ensemble, LabelConfig, LabelSummary, Progress, block_config, default_blocks, label,
    label_locked,
};
pub use session::{CudaOptions, Device, Outputs, TeacherSession};
