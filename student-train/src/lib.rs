//! The training stage: trains burn students against a label store, streaming stored soft labels
//! through crossbeam channels, with the losses of the KD literature.
//!
//! It depends on `formats` and `label-store` only, never on `teacher-infer`. Built so far: the
//! losses and the mlp and lenet5 models; the other families, the loader and the training loop come next (issue 6).

pub mod loss;
pub mod models;

pub use loss::LossKind;
