use formats::FormatError;
use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong opening, writing, reading or checking a label store.
///
/// Messages name the file and, where it applies, the chunk, epoch and samples involved.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bytes on disk that do not hold what the format says they must.
    #[error("{}: {what}", file.display())]
    Corrupt { file: PathBuf, what: String },
    /// A value of the shared vocabulary is invalid; `context` says where it came from.
    #[error("{context}: {source}")]
    Format {
        context: String,
        source: FormatError,
    },
    /// Another process holds the store directory's writer lock.
    #[error(
        "{} is being written by {}: a store has one writer at a time; wait for it to finish, or stop it first",
        dir.display(),
        holder.as_ref().map_or_else(|| "another process".to_string(), |h| h.to_string())
    )]
    Locked {
        dir: PathBuf,
        holder: Option<crate::lock::LockHolder>,
    },
    /// A request the store cannot honour: records out of order, incompatible shards, an
    /// existing store without `resume` or `overwrite`, a mismatch between a resume and its run.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

pub(crate) fn corrupt(file: impl Into<PathBuf>, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: file.into(),
        what: what.into(),
    }
}

pub(crate) fn format(context: impl Into<String>) -> impl FnOnce(FormatError) -> StoreError {
    let context = context.into();
    move |source| StoreError::Format { context, source }
}
