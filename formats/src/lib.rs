//! distill's on-disk vocabulary: the soft-label record and its codec, the realized augmentation
//! parameters, the augmentation recipe, the label-store manifest, and the ONNX bytes distill
//! reads (teacher metadata) and writes (student graphs).
//!
//! This crate owns *what the bytes mean*. It never opens a file, starts a thread or runs a
//! process: datasets, pixels, stores, teachers and students live in the crates above it, which
//! all depend on it, so anything two of them must agree on lives here. `FORMAT.md` next to this
//! crate is the normative description of the on-disk layout.

pub mod aug;
pub mod basis;
pub mod error;
pub mod feature;
pub mod field;
pub mod manifest;
pub mod onnx;
pub mod preprocess;
pub mod recipe;
pub mod record;
pub mod soft_label;
pub mod view;

pub use aug::{AUG_BYTES, AugParams, Mix, MixKind, PixelBox};
pub use error::FormatError;
pub use feature::{FeatureCodec, FeatureHead, FeatureLayout, FeatureQuality, Features};
pub use manifest::{
    BlockConfig, BlockOrder, DatasetFingerprint, DecodeProbe, FORMAT_NAME, FORMAT_VERSION,
    Manifest, Quality, QualitySums, SampleRange, ShardEntry, TeacherInfo, sha256_hex,
};
pub use recipe::{Interpolation, Recipe};
pub use record::{MAX_CLASSES, Q8_STEP, Record, RecordLayout, ValueCodec};
pub use soft_label::{Reconstruction, SoftLabel, TAIL_TEMPERATURES};
