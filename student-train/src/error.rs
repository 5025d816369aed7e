//! The training stage's errors: each names the file, field, flag or sample at fault.

use std::path::PathBuf;

/// Why training, evaluation or a checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting or flag is out of range or inconsistent.
    #[error("{0}")]
    Config(String),
    /// A store or run does not match the data or model it is used with.
    #[error("{0}")]
    Mismatch(String),
    /// One sample could not be loaded or augmented.
    #[error("sample {sample}: {what}")]
    Sample { sample: u32, what: String },
    /// A checkpoint or run file is unreadable, truncated or fails its checksum.
    #[error("{}: {what}", file.display())]
    Corrupt { file: PathBuf, what: String },
    /// An I/O error on a file.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] label_store::StoreError),
    #[error(transparent)]
    Format(#[from] formats::FormatError),
}

impl From<label_store::replay::ReplayError> for TrainError {
    fn from(e: label_store::replay::ReplayError) -> Self {
        use label_store::replay::ReplayError as R;
        match e {
            R::Config(m) => TrainError::Config(m),
            R::Mismatch(m) => TrainError::Mismatch(m),
            R::Sample { sample, what } => TrainError::Sample { sample, what },
            R::Store(e) => TrainError::Store(e),
            R::Format(e) => TrainError::Format(e),
        }
    }
}

impl TrainError {
    pub(crate) fn config(what: impl Into<String>) -> Self {
        TrainError::Config(what.into())
    }

    pub(crate) fn io(file: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let file = file.into();
        move |source| TrainError::Io { file, source }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        TrainError::Corrupt {
            file: file.into(),
            what: what.into(),
        }
    }
}
