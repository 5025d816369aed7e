//! The training stage: trains burn students against a label store, streaming stored soft labels
//! through crossbeam channels, with the losses of the KD literature.
//!
//! It depends on `formats` and `label-store` only, never on `teacher-infer`.

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
pub mod stream;
pub mod synth;

pub use config::TrainConfig;
pub use device::DeviceChoice;
pub use error::TrainError;
pub use eval::{EvalReport, Evaluator};
pub use loss::LossKind;
pub use run::{RunData, train};
pub use rundir::EpochMetrics;
