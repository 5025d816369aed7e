use std::path::PathBuf;
use thiserror::Error;

/// Everything that can be wrong with a value of this crate's vocabulary.
///
/// Each variant names the field (and where it applies, the position) so a caller can
/// prefix it with the file, shard, chunk or sample it came from.
#[derive(Debug, Error)]
pub enum FormatError {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A dataset file (or one sample of it) that does not hold what its format says.
    #[error("{}: {what}", path.display())]
    Data { path: PathBuf, what: String },
    /// A field holds a value outside its allowed range or combination.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A NaN or infinite number where a finite one is required.
    #[error("{field}[{index}] is not finite ({value})")]
    NonFinite {
        field: &'static str,
        index: usize,
        value: f32,
    },
    /// A byte slice is shorter than the fixed size it must have.
    #[error("{what} needs {expected} bytes, got {got}")]
    Truncated {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl FormatError {
    pub(crate) fn data(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        FormatError::Data {
            path: path.into(),
            what: what.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| FormatError::Io { path, source }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
