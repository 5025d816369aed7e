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
    /// A checkpoint or run file is unreadable, truncated or fails its checksum.
    #[error("{}: {what}", file.display())]
    Corrupt { file: PathBuf, what: String },
    /// An I/O error on a file.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The input pipeline failed: a sample, a stream setting, a store that does not fit.
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(transparent)]
    Data(#[from] datasets::DataError),
    #[error(transparent)]
    Store(#[from] label_store::StoreError),
    #[error(transparent)]
    Format(#[from] formats::FormatError),
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
