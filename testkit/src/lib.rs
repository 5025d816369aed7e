//! distill's development test kit (never published, never a dependency of a shipped crate):
//! synthetic label stores with realistic records ([`store`]) and learnable synthetic datasets
//! with their stores ([`bands`]), for tests, benchmarks and trying the store without a teacher.
//! Augmentations come from distill's own sampler, so synthetic records are ones `distill label`
//! could have written.

pub mod bands;
pub mod store;
