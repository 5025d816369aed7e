//! The training stage: trains burn students against a label store, streaming stored soft labels
//! through the replay crate's stream, with the losses of the KD literature; evaluation and the
//! fidelity metrics; checkpoints; ONNX export of students.
//!
//! It depends on `formats`, `datasets`, `replay` and `label-store`, never on `teacher-infer`:
//! the command line wires the stages together.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod input;
pub mod loss;
pub mod models;
pub mod optim;
pub mod run;
pub mod rundir;

pub use config::TrainConfig;
pub use device::DeviceChoice;
pub use error::TrainError;
pub use eval::{EvalReport, Evaluator};
pub use loss::LossKind;
pub use run::{RunData, StudentRun, train};
pub use rundir::EpochMetrics;
