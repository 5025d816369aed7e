//! Writer, reader, resume, corruption and merge, on small synthetic stores.

use formats::{Manifest, Record, RecordLayout, SampleRange, SoftLabel, ValueCodec};
use label_store::{
    DEFAULT_ZSTD_LEVEL, LabelStore, MANIFEST_FILE, OpenMode, RecordQuality, StoreWriter,
    WRITING_FILE, merge, shard_file_name, verify,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use testkit::store::{SynthConfig, draft, sample};

const CFG: SynthConfig = SynthConfig {
    samples: 1000,
    classes: 50,
    k: 5,
    seed: 7,
};
const EPOCHS: u32 = 3;
const CHUNK: u32 = 64;

fn draft_for(range: SampleRange) -> Manifest {
    let mut m = draft(&CFG, EPOCHS, ValueCodec::Q8, CHUNK);
    m.samples = range;
    m.created = "2026-01-01T00:00:00Z".into();
    m
}

/// The record sequence a block-wise labelling pipeline produces: blocks of 100 samples, each
/// labelled for every epoch before the next block.
fn sequence(range: SampleRange) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = (start + 100).min(range.end);
        for e in 0..EPOCHS {
            for s in start..end {
                v.push((e, s));
            }
        }
        start = end;
    }
    v
}

fn quality(e: u32, s: u32) -> RecordQuality {
    RecordQuality {
        reconstruction_kl: Some((f64::from(s) * 1e-3, f64::from(e) * 1e-2)),
        teacher_correct: Some(s.is_multiple_of(3)),
    }
}

fn write(dir: &Path, range: SampleRange) -> Manifest {
    let mut w =
        StoreWriter::open(dir, draft_for(range), OpenMode::Create, DEFAULT_ZSTD_LEVEL).unwrap();
    for (e, s) in sequence(range) {
        w.append(e, s, &sample(&CFG, e, s).record, &quality(e, s))
            .unwrap();
    }
    w.finish().unwrap()
}

fn layout() -> RecordLayout {
    RecordLayout::new(CFG.classes, CFG.k, ValueCodec::Q8).unwrap()
}

fn row(rec: &Record) -> Vec<u8> {
    let l = layout();
    let mut r = vec![0; l.row_bytes()];
    l.encode(rec, &mut r).unwrap();
    r
}

fn whole() -> SampleRange {
    SampleRange {
        start: 0,
        end: CFG.samples,
    }
}

fn shard_path(dir: &Path) -> PathBuf {
    dir.join(shard_file_name(whole()))
}

#[test]
fn every_record_reads_back_by_get_iteration_and_prefetch() {
    let t = tempfile::tempdir().unwrap();
    let m = write(t.path(), whole());
    assert_eq!(m.records(), 3000);
    assert_eq!(m.shards[0].chunks, 3 * 16);
    let q = &m.quality;
    assert_eq!(q.records, 3000);
    assert_eq!(q.teacher_accuracy_records, 3000);
    assert!((q.teacher_top1_accuracy.unwrap() - 334.0 / 1000.0).abs() < 1e-12);
    assert!((q.reconstruction_kl_tau4.unwrap() - 0.01).abs() < 1e-12);
    assert!(q.mean_top_k_mass > 0.3 && q.mean_top_k_mass < 1.0);

    let store = Arc::new(LabelStore::open(t.path()).unwrap());
    for (e, s) in [(0, 0), (2, 999), (1, 64), (1, 63), (0, 500)] {
        assert_eq!(
            row(&store.get(e, s).unwrap()),
            row(&sample(&CFG, e, s).record)
        );
    }
    assert!(store.get(3, 0).is_err());
    assert!(store.get(0, 1000).is_err());
    for e in 0..EPOCHS {
        let mut n = 0;
        for item in store.epoch_iter(e).unwrap() {
            let (s, rec) = item.unwrap();
            assert_eq!(s, n);
            assert_eq!(
                row(&rec),
                row(&sample(&CFG, e, s).record),
                "epoch {e} sample {s}"
            );
            n += 1;
        }
        assert_eq!(n, 1000);
    }
    let p = store.prefetch(vec![2, 0, 1, 2]);
    for want in [2, 0, 1, 2] {
        let ep = p.next_epoch().unwrap().unwrap();
        assert_eq!(ep.epoch, want);
        // A shuffled order, as a training loop reads.
        for s in (0..1000u32).map(|i| (i * 389) % 1000) {
            assert_eq!(row(&ep.get(s).unwrap()), row(&sample(&CFG, want, s).record));
        }
    }
    assert!(p.next_epoch().is_none());
    let r = verify(t.path());
    assert!(r.ok, "{:?}", r.errors);
    assert_eq!(r.chunks_checked, 48);
    assert_eq!(r.records_checked, 3000);
}

#[test]
fn out_of_order_and_invalid_records_are_refused_without_damage() {
    let t = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(
        t.path(),
        draft_for(whole()),
        OpenMode::Create,
        DEFAULT_ZSTD_LEVEL,
    )
    .unwrap();
    let rec = |e, s| sample(&CFG, e, s).record;
    let q = RecordQuality::default();
    let err = w.append(0, 5, &rec(0, 5), &q).unwrap_err().to_string();
    assert!(
        err.contains("out of order") && err.contains("expected sample 0"),
        "{err}"
    );
    let err = w.append(3, 0, &rec(0, 0), &q).unwrap_err().to_string();
    assert!(err.contains("3 epochs"), "{err}");
    let mut bad = rec(0, 0);
    bad.label.logits[2] = f32::NAN;
    let err = w.append(0, 0, &bad, &q).unwrap_err().to_string();
    assert!(
        err.contains("sample 0") && err.contains("not finite"),
        "{err}"
    );
    let mut bad = rec(0, 0);
    let mut z = [0.0f32; 60];
    z[55] = 1.0;
    bad.label = SoftLabel::from_logits(&z, 5).unwrap();
    let err = w.append(0, 0, &bad, &q).unwrap_err().to_string();
    assert!(err.contains("indices"), "{err}");
    // Nothing above changed the writer: the right record still goes in.
    w.append(0, 0, &rec(0, 0), &q).unwrap();
    assert_eq!(w.next_sample(0), 1);
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("epoch 0 is missing samples 1..1000"), "{err}");
    // An unfinished store is never accepted by a reader.
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("has not finished"), "{err}");
}

#[test]
fn existing_stores_need_resume_or_overwrite() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), whole());
    let e = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Create, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("already holds a finished"), "{e}");
    // Resuming a finished store with the same settings is a success without work: a retried
    // job whose predecessor finished.
    let before = fs::read(t.path().join(MANIFEST_FILE)).unwrap();
    let w = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Resume, 3).unwrap();
    assert!(w.already_complete());
    assert_eq!(w.next_sample(0), whole().end);
    let m = w.finish().unwrap();
    assert_eq!(
        m,
        Manifest::from_json(std::str::from_utf8(&before).unwrap()).unwrap()
    );
    assert_eq!(fs::read(t.path().join(MANIFEST_FILE)).unwrap(), before);
    // With other settings it is an error naming the field.
    let mut other = draft_for(whole());
    other.seed += 1;
    let e = StoreWriter::open(t.path(), other, OpenMode::Resume, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("it is finished, and seed differs"), "{e}");
    let w = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Overwrite, 3).unwrap();
    assert_eq!(w.next_sample(0), 0);
    drop(w);
    let e = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Create, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unfinished"), "{e}");
}

/// Kills the writer after `keep` records, tears `cut` bytes off the partial shard, resumes, and
/// checks the result against an uninterrupted store, byte for byte.
fn crash_and_resume(reference: &Path, keep: usize, cut: u64) {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(whole());
    {
        let mut w = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Create, 3).unwrap();
        for &(e, s) in &seq[..keep] {
            w.append(e, s, &sample(&CFG, e, s).record, &quality(e, s))
                .unwrap();
        }
        // Dropped without finish: the process "died".
    }
    let partial = t
        .path()
        .join(format!("{}.partial", shard_file_name(whole())));
    let len = fs::metadata(&partial).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_len(len.saturating_sub(cut))
        .unwrap();
    assert!(LabelStore::open(t.path()).is_err());
    let mut w = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Resume, 3).unwrap();
    for &(e, s) in &seq {
        if s >= w.next_sample(e) {
            w.append(e, s, &sample(&CFG, e, s).record, &quality(e, s))
                .unwrap();
        }
    }
    let m = w.finish().unwrap();
    assert_eq!(
        fs::read(shard_path(t.path())).unwrap(),
        fs::read(shard_path(reference)).unwrap(),
        "keep {keep} cut {cut}"
    );
    let reference_m = fs::read_to_string(reference.join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.to_json(), reference_m);
    assert!(!t.path().join(WRITING_FILE).exists());
    assert!(verify(t.path()).ok);
}

#[test]
fn resumed_store_is_byte_identical() {
    let reference = tempfile::tempdir().unwrap();
    write(reference.path(), whole());
    for (keep, cut) in [
        (0, 0),
        (1, 0),
        (150, 0),
        (1234, 1),
        (1234, 77),
        (2000, 500),
        (2999, 0),
        (3000, 3),
    ] {
        crash_and_resume(reference.path(), keep, cut);
    }
}

#[test]
fn crash_between_shard_rename_and_manifest_is_resumed() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), whole());
    let manifest = fs::read_to_string(t.path().join(MANIFEST_FILE)).unwrap();
    fs::remove_file(t.path().join(MANIFEST_FILE)).unwrap();
    fs::write(t.path().join(WRITING_FILE), draft_for(whole()).to_json()).unwrap();
    let mut w = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Resume, 3).unwrap();
    assert_eq!(w.next_sample(2), 1000);
    assert!(
        w.append(0, 0, &sample(&CFG, 0, 0).record, &RecordQuality::default())
            .is_err()
    );
    let m = w.finish().unwrap();
    assert_eq!(m.to_json(), manifest);
}

#[test]
fn resume_refuses_a_different_run() {
    let t = tempfile::tempdir().unwrap();
    drop(StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Create, 3).unwrap());
    let mut other = draft_for(whole());
    other.dataset.content_xxh3 = "0123".into();
    let e = StoreWriter::open(t.path(), other, OpenMode::Resume, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("dataset.content_xxh3 differs"), "{e}");
    let mut other = draft_for(whole());
    other.seed = 99;
    let e = StoreWriter::open(t.path(), other, OpenMode::Resume, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("seed differs"), "{e}");
}

fn small_store(dir: &Path) -> PathBuf {
    let cfg = SynthConfig {
        samples: 40,
        classes: 10,
        k: 3,
        seed: 1,
    };
    let mut d = draft(&cfg, 2, ValueCodec::Q8, 16);
    d.samples = SampleRange { start: 0, end: 40 };
    let mut w = StoreWriter::open(dir, d, OpenMode::Create, 3).unwrap();
    for e in 0..2 {
        for s in 0..40 {
            w.append(e, s, &sample(&cfg, e, s).record, &RecordQuality::default())
                .unwrap();
        }
    }
    w.finish().unwrap();
    dir.join(shard_file_name(SampleRange { start: 0, end: 40 }))
}

#[test]
fn every_flipped_byte_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let path = small_store(t.path());
    let good = fs::read(&path).unwrap();
    assert!(verify(t.path()).ok);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let r = verify(t.path());
        assert!(!r.ok, "flipping byte {i} of {} went unnoticed", good.len());
        assert!(
            r.errors
                .iter()
                .all(|e| e.contains("shard-0000000000-0000000040.dls")),
            "{:?}",
            r.errors
        );
    }
}

#[test]
fn corruption_is_named_precisely() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), whole());
    let path = shard_path(t.path());
    let good = fs::read(&path).unwrap();
    let store = LabelStore::open(t.path()).unwrap();
    let e = &store.shards[0].footer.index[5];
    let (epoch, first, at) = (e.epoch, e.first, e.offset as usize + 112 + 10);
    drop(store);

    // A flipped byte inside chunk 5's payload.
    let mut bad = good.clone();
    bad[at] ^= 1;
    fs::write(&path, &bad).unwrap();
    let r = verify(t.path());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let want = format!("chunk 5 (epoch {epoch}, samples {first}..{})", first + 64);
    assert!(
        r.errors[0].contains(&want) && r.errors[0].contains("payload checksum"),
        "{}",
        r.errors[0]
    );
    let store = LabelStore::open(t.path()).unwrap();
    let err = store.get(epoch, first + 3).unwrap_err().to_string();
    assert!(err.contains(&want), "{err}");
    assert!(
        store.get(epoch, first + 64).is_ok(),
        "other chunks still read"
    );
    drop(store);

    // Truncated.
    fs::write(&path, &good[..good.len() - 7]).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(
        err.contains("shard-0000000000-0000001000.dls") && err.contains("truncated"),
        "{err}"
    );
    assert!(!verify(t.path()).ok);

    // Wrong magic.
    let mut bad = good.clone();
    bad[0] = b'X';
    fs::write(&path, &bad).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("wrong magic"), "{err}");

    // A newer format version, with a valid footer checksum.
    let mut bad = good.clone();
    let f = bad.len() - 80;
    let newer = formats::FORMAT_VERSION + 1;
    bad[f + 56..f + 60].copy_from_slice(&newer.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&bad[f..f + 72]);
    bad[f + 72..].copy_from_slice(&sum.to_le_bytes());
    fs::write(&path, &bad).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains(&format!("version {newer} is newer")), "{err}");

    // Missing shard.
    fs::remove_file(&path).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("is missing"), "{err}");
    let r = verify(t.path());
    assert!(!r.ok && r.errors[0].contains("is missing"));

    // A manifest that disagrees with its shard.
    fs::write(&path, &good).unwrap();
    let mpath = t.path().join(MANIFEST_FILE);
    let text = fs::read_to_string(&mpath).unwrap();
    let mut m: Manifest = serde_json::from_str(&text).unwrap();
    m.shards[0].bytes += 1;
    fs::write(&mpath, m.to_json()).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("disagree on bytes"), "{err}");
    let mut m: Manifest = serde_json::from_str(&text).unwrap();
    m.chunk_records = 32;
    fs::write(&mpath, m.to_json()).unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("disagree on chunk_records"), "{err}");
    fs::write(&mpath, "{ not json").unwrap();
    let err = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(err.contains("manifest.json"), "{err}");
}

#[test]
fn merged_shards_equal_one_store() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let whole_dir = t.path().join("whole");
    write(&whole_dir, whole());
    let ranges = [(0, 300), (300, 700), (700, 1000)];
    let dirs: Vec<PathBuf> = ranges
        .iter()
        .map(|&(a, b)| {
            let d = t.path().join(format!("shard-{a}"));
            write(&d, SampleRange { start: a, end: b });
            d
        })
        .collect();
    let out = t.path().join("merged");
    let inputs = vec![dirs[2].clone(), dirs[0].clone(), dirs[1].clone()];
    // A merge into a directory another writer holds is refused, and writes nothing.
    let held = label_store::WriterLock::acquire(&out).unwrap();
    let e = merge(&inputs, &out).unwrap_err().to_string();
    assert!(e.contains("is being written by pid"), "{e}");
    assert!(!out.join(MANIFEST_FILE).exists());
    drop(held);
    let m = merge(&inputs, &out).unwrap();
    assert_eq!(m.shards.len(), 3);
    assert!(verify(&out).ok);
    let merged = LabelStore::open(&out).unwrap();
    let single = LabelStore::open(&whole_dir).unwrap();
    for e in 0..EPOCHS {
        let (a, b) = (
            merged.decode_epoch(e).unwrap(),
            single.decode_epoch(e).unwrap(),
        );
        for s in 0..1000 {
            assert_eq!(a.row(s), b.row(s));
        }
    }
    let (qa, qb) = (&m.quality, &single.manifest.quality);
    assert_eq!(qa.records, qb.records);
    assert!((qa.mean_entropy - qb.mean_entropy).abs() < 1e-9);
    assert_eq!(qa.teacher_top1_accuracy, qb.teacher_top1_accuracy);
    // No record bytes were copied: the shards are hard links.
    for s in &m.shards {
        assert!(fs::metadata(out.join(&s.file)).unwrap().nlink() >= 2);
    }

    let err = merge(&dirs[..2], &t.path().join("m2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gap: samples 700..1000"), "{err}");
    let err = merge(&[dirs[0].clone(), dirs[2].clone()], &t.path().join("m3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gap: samples 300..700"), "{err}");
    let wide = t.path().join("wide");
    write(
        &wide,
        SampleRange {
            start: 200,
            end: 700,
        },
    );
    let err = merge(
        &[dirs[0].clone(), wide, dirs[2].clone()],
        &t.path().join("m4"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("overlap"), "{err}");
    let other = t.path().join("other");
    let mut d = draft_for(SampleRange {
        start: 300,
        end: 700,
    });
    d.seed = 8;
    let mut w = StoreWriter::open(&other, d, OpenMode::Create, 3).unwrap();
    for (e, s) in sequence(SampleRange {
        start: 300,
        end: 700,
    }) {
        w.append(e, s, &sample(&CFG, e, s).record, &quality(e, s))
            .unwrap();
    }
    w.finish().unwrap();
    let err = merge(
        &[dirs[0].clone(), other, dirs[2].clone()],
        &t.path().join("m5"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("seed differs"), "{err}");
}

/// A store labelled in blocks over a permutation: its draft, and its record groups (one per
/// block of 100 samples, every epoch of the block).
fn staged_draft() -> Manifest {
    let mut m = draft_for(whole());
    m.blocks = Some(BLOCKS);
    m
}

const BLOCKS: formats::BlockConfig = formats::BlockConfig {
    images: 100,
    bytes: u64::MAX,
    order: formats::BlockOrder::Permuted,
};

fn staged_groups() -> Vec<Vec<(u32, u32, Record, RecordQuality)>> {
    let plan = replay::block::BlockPlan::new(BLOCKS, 7, whole(), &|_| Ok(1)).unwrap();
    (0..plan.len())
        .map(|b| {
            let mut g = Vec::new();
            for e in 0..EPOCHS {
                for &s in plan.block(b) {
                    g.push((e, s, sample(&CFG, e, s).record, quality(e, s)));
                }
            }
            g
        })
        .collect()
}

fn staging_path(dir: &Path) -> PathBuf {
    dir.join(format!("{}.staging", shard_file_name(whole())))
}

#[test]
fn a_staged_store_has_the_bytes_of_the_same_records_written_in_order() {
    // In order, block by block with blocks of one chunk: the order staged chunks are laid out in.
    let reference = tempfile::tempdir().unwrap();
    let mut w =
        StoreWriter::open(reference.path(), draft_for(whole()), OpenMode::Create, 3).unwrap();
    for start in (0..CFG.samples).step_by(CHUNK as usize) {
        for e in 0..EPOCHS {
            for s in start..(start + CHUNK).min(CFG.samples) {
                w.append(e, s, &sample(&CFG, e, s).record, &quality(e, s))
                    .unwrap();
            }
        }
    }
    let want = w.finish().unwrap();

    let t = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(t.path(), staged_draft(), OpenMode::Create, 3).unwrap();
    assert_eq!(w.staged_groups(), Some(0));
    let e = w
        .append(0, 0, &sample(&CFG, 0, 0).record, &quality(0, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("staged in groups"), "{e}");
    for g in staged_groups() {
        w.append_group(&g).unwrap();
    }
    assert!(staging_path(t.path()).exists());
    let m = w.finish().unwrap();
    assert_eq!(
        fs::read(shard_path(t.path())).unwrap(),
        fs::read(shard_path(reference.path())).unwrap()
    );
    assert_eq!(m.shards, want.shards);
    assert_eq!(m.quality, want.quality);
    assert_eq!(m.blocks, Some(BLOCKS));
    assert!(!staging_path(t.path()).exists());
    assert!(!t.path().join(WRITING_FILE).exists());
    assert!(verify(t.path()).ok);

    // Groups only go to staged stores.
    let o = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(o.path(), draft_for(whole()), OpenMode::Create, 3).unwrap();
    assert_eq!(w.staged_groups(), None);
    assert!(w.append_group(&staged_groups()[0]).is_err());
}

#[test]
fn a_killed_staged_writer_resumes_to_an_identical_store() {
    let groups = staged_groups();
    let reference = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(reference.path(), staged_draft(), OpenMode::Create, 3).unwrap();
    for g in &groups {
        w.append_group(g).unwrap();
    }
    w.finish().unwrap();
    let want = fs::read(shard_path(reference.path())).unwrap();
    let want_m = fs::read_to_string(reference.path().join(MANIFEST_FILE)).unwrap();

    // (groups staged before the "kill", bytes torn off the log, junk in the partial shard)
    for (keep, cut, junk) in [
        (0, 0, false),
        (1, 0, false),
        (4, 1, false),
        (6, 0, true),
        (10, 9, true),
    ] {
        let t = tempfile::tempdir().unwrap();
        {
            let mut w = StoreWriter::open(t.path(), staged_draft(), OpenMode::Create, 3).unwrap();
            for g in &groups[..keep] {
                w.append_group(g).unwrap();
            }
        }
        let log = staging_path(t.path());
        let len = fs::metadata(&log).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        if junk {
            // A finish that died while laying out chunks left some behind.
            let partial = t
                .path()
                .join(format!("{}.partial", shard_file_name(whole())));
            let mut bytes = fs::read(&partial).unwrap();
            bytes.extend_from_slice(&[0xAB; 999]);
            fs::write(&partial, bytes).unwrap();
        }
        assert!(LabelStore::open(t.path()).is_err());
        let mut w = StoreWriter::open(t.path(), staged_draft(), OpenMode::Resume, 3).unwrap();
        let have = w.staged_groups().unwrap() as usize;
        assert_eq!(
            have,
            if cut > 0 { keep - 1 } else { keep },
            "keep {keep} cut {cut}"
        );
        // Finishing too early names a record that is missing and keeps what was staged.
        if have < groups.len() {
            let e = w.finish().unwrap_err().to_string();
            assert!(e.contains("was never labelled"), "{e}");
            w = StoreWriter::open(t.path(), staged_draft(), OpenMode::Resume, 3).unwrap();
            assert_eq!(w.staged_groups(), Some(have as u64));
        }
        for g in &groups[have..] {
            w.append_group(g).unwrap();
        }
        let m = w.finish().unwrap();
        assert_eq!(
            fs::read(shard_path(t.path())).unwrap(),
            want,
            "keep {keep} cut {cut}"
        );
        assert_eq!(m.to_json(), want_m);
    }

    // A group staged twice is named at finish.
    let t = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(t.path(), staged_draft(), OpenMode::Create, 3).unwrap();
    w.append_group(&groups[0]).unwrap();
    w.append_group(&groups[0]).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("staged twice"), "{e}");
    // And resuming a staged store as an ordered one is a different run.
    fs::remove_dir_all(t.path()).unwrap();
    let t = tempfile::tempdir().unwrap();
    drop(StoreWriter::open(t.path(), staged_draft(), OpenMode::Create, 3).unwrap());
    let e = StoreWriter::open(t.path(), draft_for(whole()), OpenMode::Resume, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("blocks differs"), "{e}");
}
