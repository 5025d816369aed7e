use thiserror::Error;

/// Everything that can be wrong with a value of this crate's vocabulary.
///
/// Each variant names the field (and where it applies, the position) so a caller can
/// prefix it with the file, shard, chunk or sample it came from.
#[derive(Debug, Error)]
pub enum FormatError {
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
    /// An [`FormatError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
