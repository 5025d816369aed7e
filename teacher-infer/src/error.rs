use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong finding ONNX Runtime, opening a teacher or labelling.
#[derive(Debug, Error)]
pub enum InferError {
    /// No usable `libonnxruntime.so` was found; `tried` lists where we looked.
    #[error(
        "ONNX Runtime library not found (looked at: {tried}); run scripts/fetch-ort.sh, `pip install onnxruntime==1.31.1`, or set `ort_lib`"
    )]
    RuntimeNotFound { tried: String },
    /// The library was found but could not be loaded or initialized.
    #[error("{}: cannot load ONNX Runtime: {reason}", path.display())]
    RuntimeLoad { path: PathBuf, reason: String },
    /// A teacher model that cannot serve: not ONNX, wrong inputs or outputs, wrong shape.
    #[error("{}: {what}", file.display())]
    Model { file: PathBuf, what: String },
    /// A setting out of range or inconsistent with the teachers or the data; `field` is the
    /// [`crate::LabelConfig`] field (the command line names its flag).
    #[error("`{field}`: {what}")]
    Invalid { field: &'static str, what: String },
    /// An execution provider that was asked for and cannot run.
    #[error("{device}: {reason}")]
    Device { device: String, reason: String },
    /// ONNX Runtime failed during a run.
    #[error("{}: {what}", file.display())]
    Run { file: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
