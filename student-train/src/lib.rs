//! The training stage: trains burn students against a label store, streaming stored soft labels
//! through crossbeam channels, with the losses of the KD literature.
//!
//! It depends on `formats` and `label-store` only, never on `teacher-infer`. Models, losses and
//! the training loop arrive with the training issue; until then this crate holds nothing, rather
//! than something fake.
