use formats::FormatError;
use std::path::PathBuf;
use thiserror::Error;

/// Everything that can be wrong reading a dataset: its files, one of its samples, a setting.
///
/// Messages name the file (and where it applies, the sample or member) they are about.
#[derive(Debug, Error)]
pub enum DataError {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A dataset file (or one sample of it) that does not hold what its format says.
    #[error("{}: {what}", path.display())]
    Data { path: PathBuf, what: String },
    /// A setting or an argument outside its allowed range, naming the field.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A value of the shared vocabulary (a fingerprint, a probe) is invalid.
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl DataError {
    /// A [`DataError::Data`] about `path`.
    pub fn data(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Data {
            path: path.into(),
            what: what.into(),
        }
    }

    /// Maps an I/O error on `path` to a [`DataError::Io`].
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    /// A [`DataError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
