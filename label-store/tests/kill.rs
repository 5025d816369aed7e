//! A writer process killed with SIGKILL mid-run leaves nothing a reader accepts, and resuming it
//! gives the store an uninterrupted run writes, byte for byte.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable), so the
//! kill hits a real process at an arbitrary point.

use formats::{SampleRange, ValueCodec};
use label_store::{LabelStore, MANIFEST_FILE, OpenMode, RecordQuality, StoreWriter, verify};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::store::{SynthConfig, draft, sample};

const CFG: SynthConfig = SynthConfig {
    samples: 6000,
    classes: 50,
    k: 5,
    seed: 11,
};
const CHILD_ENV: &str = "DISTILL_TEST_WRITER_DIR";

fn sequence() -> Vec<(u32, u32)> {
    // Blocks of 250 samples, each labelled for both epochs.
    (0..CFG.samples / 250)
        .flat_map(|b| (0..2).flat_map(move |e| (b * 250..(b + 1) * 250).map(move |s| (e, s))))
        .collect()
}

fn store_draft() -> formats::Manifest {
    let mut d = draft(&CFG, 2, ValueCodec::Q8, 100);
    d.created = "2026-01-01T00:00:00Z".into();
    d
}

/// Writes the store, `pause` after every block, resuming whatever is there.
fn write(dir: &Path, pause: Duration) {
    let mut w = StoreWriter::open(dir, store_draft(), OpenMode::Resume, 3).unwrap();
    for (i, (e, s)) in sequence().into_iter().enumerate() {
        if s >= w.next_sample(e) {
            let x = sample(&CFG, e, s);
            w.append(e, s, &x.record, &RecordQuality::default())
                .unwrap();
        }
        if i % 250 == 0 {
            std::thread::sleep(pause);
        }
    }
    w.finish().unwrap();
}

#[test]
fn killed_writer_resumes_to_an_identical_store() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        write(Path::new(&dir), Duration::from_millis(20));
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reference = t.path().join("reference");
    write(&reference, Duration::ZERO);

    let dir = t.path().join("killed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_writer_resumes_to_an_identical_store",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir)
        .spawn()
        .unwrap();
    let partial = dir.join(format!(
        "{}.partial",
        label_store::shard_file_name(SampleRange {
            start: 0,
            end: 6000
        })
    ));
    let start = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 40_000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writer never got going"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.join(MANIFEST_FILE).exists(),
        "the writer finished before the kill; the test proves nothing"
    );
    let err = LabelStore::open(&dir).err().unwrap().to_string();
    assert!(err.contains("has not finished"), "{err}");

    write(&dir, Duration::ZERO);
    assert!(verify(&dir).ok);
    let name = label_store::shard_file_name(SampleRange {
        start: 0,
        end: 6000,
    });
    assert_eq!(
        std::fs::read(dir.join(&name)).unwrap(),
        std::fs::read(reference.join(&name)).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap(),
        std::fs::read_to_string(reference.join(MANIFEST_FILE)).unwrap()
    );
}
