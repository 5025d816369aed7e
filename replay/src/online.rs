//! Online distillation's interface: a teacher that labels each batch as the stream makes it,
//! instead of a store read back. The replay crate never runs a teacher (it does not depend on
//! ONNX Runtime); the command line wires a teacher session in through [`OnlineTeacher`], so the
//! training crate does not depend on the inference crate either.

use crate::batch::Inputs;
use crate::error::ReplayError;
use formats::SoftLabel;

/// A teacher run on every batch of a stream (online distillation: Beyer et al.'s "patient
/// teacher" on fresh views, or a re-run over a store's replayed views to check the store).
pub trait OnlineTeacher: Send + Sync {
    /// The teacher's class count.
    fn classes(&self) -> u32;

    /// The soft labels of the batch's views, in row order, kept as a store would keep them
    /// (the teacher's top-k through its value codec), so a student learns from what an offline
    /// store of the same settings would hold. `inputs` are the stream's u8 pixels (the teacher
    /// normalizes them its own way); `samples` and `epoch` name the records in errors.
    fn label(
        &self,
        inputs: &Inputs,
        samples: &[u32],
        epoch: u32,
    ) -> Result<Vec<SoftLabel>, ReplayError>;
}
