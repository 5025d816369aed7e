//! The demo's text summary.

use super::DemoReport;
use std::io::Write;

pub(super) fn print_table(out: &mut impl Write, r: &DemoReport) -> std::io::Result<()> {
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    writeln!(out)?;
    writeln!(
        out,
        "MNIST (8,000 train / 2,000 test digits), LeNet-5 teacher → LeNet-5 students"
    )?;
    writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>9}",
        "", "accuracy", "agreement", "KL(t‖s)"
    )?;
    writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>9}",
        "teacher",
        pct(r.teacher_accuracy),
        "-",
        "-"
    )?;
    for (name, s) in [
        ("student kd", &r.student_kd),
        ("student ce (baseline)", &r.student_ce),
    ] {
        writeln!(
            out,
            "{name:<22} {:>9} {:>10} {:>9.4}",
            pct(s.accuracy),
            pct(s.agreement),
            s.kl
        )?;
    }
    if r.generations.len() > 1 {
        writeln!(
            out,
            "born-again generations (each student learns from the one before):"
        )?;
        for g in &r.generations {
            writeln!(
                out,
                "  gen {:<3} teacher {:>8}  student {:>8}  agreement {:>8}  KL {:.4}",
                g.generation,
                pct(g.teacher_accuracy),
                pct(g.student_kd.accuracy),
                pct(g.student_kd.agreement),
                g.student_kd.kl
            )?;
        }
    }
    if !r.sweep.is_empty() {
        writeln!(
            out,
            "fidelity against stored epochs E (kd student, {} seeds each, same student epochs):",
            r.sweep[0].runs.len()
        )?;
        writeln!(
            out,
            "  {:>4} {:>13} {:>17} {:>17} {:>17}",
            "E", "bytes/sample", "agreement", "KL(t‖s)", "accuracy"
        )?;
        for p in &r.sweep {
            writeln!(
                out,
                "  {:>4} {:>13.1} {:>17} {:>17} {:>17}",
                p.label_epochs,
                p.bytes_per_sample,
                format!(
                    "{:.2} ± {:.2}%",
                    100.0 * p.agreement.mean,
                    100.0 * p.agreement.sd
                ),
                format!("{:.4} ± {:.4}", p.kl.mean, p.kl.sd),
                format!(
                    "{:.2} ± {:.2}%",
                    100.0 * p.accuracy.mean,
                    100.0 * p.accuracy.sd
                )
            )?;
        }
    }
    writeln!(
        out,
        "label store: {} records, {:.1} bytes/record",
        r.store_records, r.bytes_per_record
    )?;
    // In pipeline order (the JSON map is sorted by name).
    const ORDER: [&str; 8] = [
        "fetch", "teacher", "export", "label", "train kd", "train ce", "sweep", "total",
    ];
    let rank = |k: &str| {
        ORDER
            .iter()
            .position(|s| k.starts_with(s))
            .unwrap_or(ORDER.len())
    };
    let mut stages: Vec<(&String, f64)> = r
        .seconds
        .iter()
        .map(|(k, v)| (k, v.as_f64().unwrap_or(0.0)))
        .collect();
    stages.sort_by_key(|(k, _)| (rank(k), k.to_string()));
    let stages: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v:.1}s")).collect();
    writeln!(out, "time: {}", stages.join(", "))?;
    writeln!(out, "report: {}", r.report.display())?;
    Ok(())
}
