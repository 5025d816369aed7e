//! One module per command: its flags (`clap::Args`), its call into the libraries, and what it
//! prints. Everything printed goes through `writeln!` on a locked stdout, so a closed pipe comes
//! back as an error that `main` turns into a quiet exit.

pub mod data;
pub mod demo;
pub mod doctor;
pub mod features;
pub mod inspect;
pub mod label;
pub mod merge;
pub mod show;
pub mod train;
