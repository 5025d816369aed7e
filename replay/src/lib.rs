//! The pixel path, from stored (or freshly sampled) augmentation parameters to the batches a
//! teacher or a student sees: the [`sampler`] that draws realized parameters from a recipe,
//! Pillow's resampling ([`resample`]) and [`apply`], the one batch builder ([`batch`]) every
//! stage's inputs come from, the decode-once [`block`] plans and their decode cache, the ordered worker pool ([`loader`]) and the replaying [`stream`] with its
//! ordering, windows, multi-crop and rank parts.
//!
//! Labelling (teacher-infer), training and evaluation (student-train) and the Python module all
//! build their inputs here, so the teacher and every student see the same bytes. It never runs a
//! teacher or a student and never writes a store; datasets are read through the datasets crate.
//! A teacher that labels batches online plugs in through [`online::OnlineTeacher`].

pub mod apply;
pub mod batch;
pub mod block;
pub mod error;
pub mod loader;
pub mod online;
pub mod resample;
pub mod sampler;
pub mod stream;

pub use error::ReplayError;
