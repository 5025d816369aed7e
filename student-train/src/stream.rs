//! The training loader: the replaying stream of `label_store::replay` (stored parameters →
//! `formats::apply` → normalized batch, teacher distribution at τ, mixed hard labels), which lives
//! in `label-store` so that the Python package can use it without burn.

pub use label_store::replay::*;
