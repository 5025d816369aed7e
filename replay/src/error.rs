use datasets::DataError;
use formats::FormatError;
use label_store::StoreError;
use std::path::PathBuf;

/// Everything that can go wrong on the pixel path: a setting, a view, a sample, a store that
/// does not fit its data. Each names the field, sample or file at fault; the faces (the CLI's
/// flags, the Python module's keyword arguments) put their own names on fields.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A setting is out of range or inconsistent.
    #[error("{0}")]
    Config(String),
    /// A field holds a value outside its allowed range or combination.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The store does not match the data or input size it is used with.
    #[error("{0}")]
    Mismatch(String),
    /// The online teacher could not label a batch (its message names the model and record).
    #[error("online teacher: {0}")]
    Teacher(String),
    /// One sample could not be loaded or augmented.
    #[error("sample {sample}: {what}")]
    Sample { sample: u32, what: String },
    /// An operating-system error on a file (a recipe file).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl ReplayError {
    pub(crate) fn config(what: impl Into<String>) -> Self {
        ReplayError::Config(what.into())
    }

    pub(crate) fn sample(sample: u32, what: impl Into<String>) -> Self {
        ReplayError::Sample {
            sample,
            what: what.into(),
        }
    }

    /// A [`ReplayError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ReplayError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
