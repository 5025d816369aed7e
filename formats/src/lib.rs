//! distill's shared vocabulary: the soft-label record and its codec, the realized augmentation
//! parameters, and the label-store manifest.
//!
//! This crate owns *what the bytes mean*; it never touches files, ONNX Runtime or burn. Both the
//! labelling and the training stage depend on it, so anything both must agree on lives here.
//! `FORMAT.md` next to this crate is the normative description of the on-disk layout.

pub mod apply;
pub mod aug;
pub mod augment;
pub mod block;
pub mod error;
pub mod loader;
pub mod manifest;
pub mod onnx;
pub mod preprocess;
pub mod record;
pub mod resample;
pub mod soft_label;

pub use aug::{AUG_BYTES, AugParams, Mix, MixKind, PixelBox};
pub use error::FormatError;
pub use manifest::{
    DatasetFingerprint, FORMAT_NAME, FORMAT_VERSION, Manifest, Quality, QualitySums, SampleRange,
    ShardEntry, TeacherInfo, sha256_hex,
};
pub use record::{MAX_CLASSES, Q8_STEP, Record, RecordLayout, ValueCodec};
pub use soft_label::{Reconstruction, SoftLabel, TAIL_TEMPERATURES};
pub mod dataset;
