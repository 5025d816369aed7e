//! `distill doctor`: is ONNX Runtime found, does it load, which execution providers work; and
//! which memory allocator the process runs on.

use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Path of libonnxruntime.so to use instead of searching.
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

/// `distill doctor`: exit status 1 when the CPU execution provider does not work (CUDA is
/// optional).
pub fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    let mut checks = teacher_infer::runtime::doctor(a.ort_lib.as_deref());
    // The library names its settings by field (`ort_lib`); this command's user gave flags.
    for c in &mut checks {
        c.detail = crate::flags::name_flags(&c.detail);
        c.fix = c.fix.as_deref().map(crate::flags::name_flags);
    }
    checks.push(teacher_infer::runtime::Check {
        item: "memory allocator".into(),
        ok: true,
        detail: crate::alloc::describe(),
        fix: None,
    });
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&checks)?)?;
    } else {
        for c in &checks {
            writeln!(
                out,
                "[{}] {}: {}",
                if c.ok { " ok " } else { "FAIL" },
                c.item,
                c.detail
            )?;
            if let Some(f) = &c.fix {
                writeln!(out, "       fix: {f}")?;
            }
        }
    }
    let cpu_ok = checks
        .iter()
        .any(|c| c.item == "CPU execution provider" && c.ok);
    Ok(if cpu_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
