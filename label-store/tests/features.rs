//! Feature heads beside the labels: written and read back within the codec's error, resumed
//! after a crash to the bytes of an uninterrupted run (files stopped at different points too),
//! staged in groups, merged, verified, and never touched by a reader that does not ask.

use formats::feature::{FeatureHead, Features, feature_file_name};
use formats::{FeatureCodec, FeatureQuality, Manifest, Record, SampleRange, ValueCodec};
use label_store::{
    LabelStore, MANIFEST_FILE, OpenMode, RecordQuality, StoreWriter, merge, shard_file_name, verify,
};
use std::fs;
use std::path::Path;
use testkit::store::{SynthConfig, draft, sample};

const CFG: SynthConfig = SynthConfig {
    samples: 300,
    classes: 20,
    k: 4,
    seed: 5,
};
const EPOCHS: u32 = 2;
const CHUNK: u32 = 32;
/// Dimensions of the two heads: teacher 0's `pooled` and teacher 0's `tokens`.
const DIMS: [u32; 2] = [48, 20];

fn head(output: &str, dim: u32) -> FeatureHead {
    FeatureHead {
        teacher: 0,
        output: output.into(),
        dim,
        stored_dim: dim,
        basis: None,
        shards: vec![],
        quality: FeatureQuality::default(),
    }
}

fn draft_for(range: SampleRange, codec: FeatureCodec) -> Manifest {
    let mut m = draft(&CFG, EPOCHS, ValueCodec::Q8, CHUNK);
    m.samples = range;
    m.created = "2026-01-01T00:00:00Z".into();
    m.teachers = vec![formats::TeacherInfo {
        file: "t.onnx".into(),
        sha256: "0".repeat(64),
        input_shape: vec![-1, 3, 8, 8],
        classes: CFG.classes,
    }];
    m.features = Some(Features {
        codec,
        heads: vec![head("pooled", DIMS[0]), head("tokens", DIMS[1])],
    });
    m.format_version = m.needed_version();
    m
}

/// A feature vector like a trained network's pooled output: mostly small non-negative values
/// (after a ReLU), a few dimensions ten times larger, different for every record.
fn vector(h: usize, e: u32, s: u32) -> Vec<f32> {
    (0..DIMS[h])
        .map(|j| {
            let x = ((s * 31 + e * 17 + j * 7 + h as u32 * 3) % 97) as f32 / 97.0;
            let outlier = if j % 16 == 3 { 10.0 } else { 1.0 };
            (x - 0.3).max(0.0) * outlier
        })
        .collect()
}

fn record(e: u32, s: u32) -> Record {
    sample(&CFG, e, s).record
}

fn whole() -> SampleRange {
    SampleRange {
        start: 0,
        end: CFG.samples,
    }
}

/// Blocks of 50 samples, every epoch of a block before the next.
fn sequence(range: SampleRange) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for start in (range.start..range.end).step_by(50) {
        for e in 0..EPOCHS {
            for s in start..(start + 50).min(range.end) {
                v.push((e, s));
            }
        }
    }
    v
}

fn append(w: &mut StoreWriter, e: u32, s: u32) {
    let (a, b) = (vector(0, e, s), vector(1, e, s));
    w.append_with_features(e, s, &record(e, s), &RecordQuality::default(), &[&a, &b])
        .unwrap();
}

fn write(dir: &Path, range: SampleRange, codec: FeatureCodec) -> Manifest {
    let mut w = StoreWriter::open(dir, draft_for(range, codec), OpenMode::Create, 3).unwrap();
    for (e, s) in sequence(range) {
        append(&mut w, e, s);
    }
    w.finish().unwrap()
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dls") || n.ends_with(".dlf"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let b = fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

#[test]
fn features_read_back_within_the_codec_error() {
    for codec in [FeatureCodec::Q8, FeatureCodec::F16] {
        let t = tempfile::tempdir().unwrap();
        let m = write(t.path(), whole(), codec);
        assert_eq!(m.format_version, 5);
        let f = m.features.as_ref().unwrap();
        assert_eq!(f.heads[0].shards[0].file, feature_file_name(0, whole()));
        assert_eq!(f.heads[1].shards[0].file, feature_file_name(1, whole()));
        let store = LabelStore::open(t.path()).unwrap();
        assert_eq!(store.feature_heads().len(), 2);
        for (h, &dim) in DIMS.iter().enumerate() {
            let fs_ = store.features(h).unwrap();
            assert_eq!(fs_.dim(), dim as usize);
            let q = &fs_.head.quality;
            assert_eq!(q.records, u64::from(CFG.samples * EPOCHS));
            assert!(q.mean_cosine > 0.9999, "{codec:?} head {h}: {q:?}");
            let mut worst = 1.0f64;
            let mut out = vec![0f32; dim as usize];
            for e in 0..EPOCHS {
                let epoch = fs_.decode_epoch(e).unwrap();
                for s in 0..CFG.samples {
                    let x = vector(h, e, s);
                    epoch.get_into(s, &mut out).unwrap();
                    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in x.iter().zip(&out) {
                        let bound = match codec {
                            FeatureCodec::Q8 => max / 127.0 * 0.5 * 1.0001,
                            FeatureCodec::F16 => a.abs() / 2048.0,
                        };
                        assert!((a - b).abs() <= bound, "{codec:?} {e} {s}: {a} vs {b}");
                    }
                    let (cos, _, _) = formats::feature::reconstruction(&x, &out);
                    worst = worst.min(cos);
                }
            }
            // The writer's figures are the reader's: the same vectors, the same cosines.
            let below = q.cosine_below[0] * f64::from(CFG.samples * EPOCHS);
            assert_eq!(
                below == 0.0,
                worst >= 0.9999,
                "{codec:?} head {h}: worst {worst}"
            );
            let mut one = vec![0f32; dim as usize];
            fs_.get_into(1, 123, &mut one).unwrap();
            fs_.decode_epoch(1)
                .unwrap()
                .get_into(123, &mut out)
                .unwrap();
            assert_eq!(one, out);
        }
        // The labels are those of a store without features.
        let r = store.get(1, 7).unwrap();
        assert_eq!(
            (r.aug, &r.label.indices),
            (record(1, 7).aug, &record(1, 7).label.indices)
        );
        assert!(verify(t.path()).ok, "{:?}", verify(t.path()));
    }
}

#[test]
fn a_reader_of_labels_never_opens_the_feature_files() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), whole(), FeatureCodec::Q8);
    fs::remove_file(t.path().join(feature_file_name(1, whole()))).unwrap();
    let store = LabelStore::open(t.path()).unwrap();
    assert_eq!(store.get(0, 3).unwrap().aug, record(0, 3).aug);
    store.features(0).unwrap();
    let e = store.features(1).err().unwrap().to_string();
    assert!(e.contains("features-1-") && e.contains("missing"), "{e}");
    let e = store.features(2).err().unwrap().to_string();
    assert!(e.contains("no feature head 2"), "{e}");
    let v = verify(t.path());
    assert!(
        !v.ok && v.errors.iter().any(|e| e.contains("features-1-")),
        "{v:?}"
    );
    // A feature file where a label shard belongs (and the reverse) is named for what it is.
    let label = t.path().join(shard_file_name(whole()));
    fs::copy(t.path().join(feature_file_name(0, whole())), &label).unwrap();
    let e = LabelStore::open(t.path()).err().unwrap().to_string();
    assert!(
        e.contains("a feature file where a label shard belongs"),
        "{e}"
    );
}

#[test]
fn wrong_vectors_are_refused_without_damage() {
    let t = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(
        t.path(),
        draft_for(whole(), FeatureCodec::Q8),
        OpenMode::Create,
        3,
    )
    .unwrap();
    let q = RecordQuality::default();
    let a = vector(0, 0, 0);
    let e = w.append(0, 0, &record(0, 0), &q).unwrap_err().to_string();
    assert!(
        e.contains("0 feature vectors") && e.contains("2 feature heads"),
        "{e}"
    );
    let short = vec![1.0f32; 5];
    let e = w
        .append_with_features(0, 0, &record(0, 0), &q, &[&a, &short])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 0") && e.contains("5 values"), "{e}");
    let mut nan = vector(1, 0, 0);
    nan[3] = f32::NAN;
    let e = w
        .append_with_features(0, 0, &record(0, 0), &q, &[&a, &nan])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not finite"), "{e}");
    // The label shard took record 0 before head 1 refused it; the next call skips it there.
    assert_eq!(w.next_sample(0), 0);
    append(&mut w, 0, 0);
    assert_eq!(w.next_sample(0), 1);
}

/// Kills the writer after `keep` records, then cuts each file's partial back to `cuts[i]` of
/// its bytes (0: only its header), resumes and compares every file with an uninterrupted run.
fn crash_and_resume(reference: &Path, keep: usize, cuts: [u64; 3]) {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(whole());
    let draft = || draft_for(whole(), FeatureCodec::Q8);
    {
        let mut w = StoreWriter::open(t.path(), draft(), OpenMode::Create, 3).unwrap();
        for &(e, s) in &seq[..keep] {
            append(&mut w, e, s);
        }
    }
    let names = [
        shard_file_name(whole()),
        feature_file_name(0, whole()),
        feature_file_name(1, whole()),
    ];
    for (name, cut) in names.iter().zip(cuts) {
        let p = t.path().join(format!("{name}.partial"));
        let len = fs::metadata(&p).unwrap().len();
        let keep_bytes = if cut == 0 {
            16
        } else {
            len.saturating_sub(cut)
        };
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(keep_bytes)
            .unwrap();
    }
    let mut w = StoreWriter::open(t.path(), draft(), OpenMode::Resume, 3).unwrap();
    for &(e, s) in &seq {
        if s >= w.next_sample(e) {
            append(&mut w, e, s);
        }
    }
    let m = w.finish().unwrap();
    assert_eq!(
        file_bytes(t.path()),
        file_bytes(reference),
        "keep {keep} cuts {cuts:?}"
    );
    assert_eq!(
        m.to_json(),
        fs::read_to_string(reference.join(MANIFEST_FILE)).unwrap()
    );
}

#[test]
fn a_killed_writer_resumes_every_file_to_the_same_bytes() {
    let reference = tempfile::tempdir().unwrap();
    write(reference.path(), whole(), FeatureCodec::Q8);
    // Files cut at the same point, at different points, one back to its header.
    crash_and_resume(reference.path(), 250, [10, 10, 10]);
    crash_and_resume(reference.path(), 400, [0, 50, 1]);
    crash_and_resume(reference.path(), 599, [1, 0, 300]);
    // A crash after the feature files were renamed into place, before the label shard was.
    let t = tempfile::tempdir().unwrap();
    write(t.path(), whole(), FeatureCodec::Q8);
    fs::remove_file(t.path().join(MANIFEST_FILE)).unwrap();
    let shard = t.path().join(shard_file_name(whole()));
    fs::rename(
        &shard,
        t.path()
            .join(format!("{}.partial", shard_file_name(whole()))),
    )
    .unwrap();
    fs::write(
        t.path().join(label_store::WRITING_FILE),
        draft_for(whole(), FeatureCodec::Q8).to_json(),
    )
    .unwrap();
    let mut w = StoreWriter::open(
        t.path(),
        draft_for(whole(), FeatureCodec::Q8),
        OpenMode::Resume,
        3,
    )
    .unwrap();
    // The label shard lacks its footer only: every record is there, nothing is to be appended.
    assert_eq!(w.next_sample(1), CFG.samples);
    let e = w
        .append_with_features(0, 0, &record(0, 0), &RecordQuality::default(), &[&[], &[]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("complete"), "{e}");
    w.finish().unwrap();
    assert_eq!(file_bytes(t.path()), file_bytes(reference.path()));
}

#[test]
fn staged_groups_with_features_resume_to_the_same_bytes() {
    const BLOCKS: formats::BlockConfig = formats::BlockConfig {
        images: 50,
        bytes: u64::MAX,
        order: formats::BlockOrder::Permuted,
    };
    let plan = replay::block::BlockPlan::new(BLOCKS, 3, whole(), &|_| Ok(1)).unwrap();
    let groups: Vec<Vec<(u32, u32)>> = (0..plan.len())
        .map(|b| {
            (0..EPOCHS)
                .flat_map(|e| plan.block(b).iter().map(move |&s| (e, s)))
                .collect()
        })
        .collect();
    let draft = || {
        let mut d = draft_for(whole(), FeatureCodec::F16);
        d.blocks = Some(BLOCKS);
        d
    };
    let stage = |w: &mut StoreWriter, g: &[(u32, u32)]| {
        let recs: Vec<_> = g
            .iter()
            .map(|&(e, s)| (e, s, record(e, s), RecordQuality::default()))
            .collect();
        let vecs: Vec<Vec<Vec<f32>>> = (0..2)
            .map(|h| g.iter().map(|&(e, s)| vector(h, e, s)).collect())
            .collect();
        let refs: Vec<Vec<&[f32]>> = vecs
            .iter()
            .map(|v| v.iter().map(Vec::as_slice).collect())
            .collect();
        w.append_group_with_features(&recs, &refs).unwrap();
    };
    let reference = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::open(reference.path(), draft(), OpenMode::Create, 3).unwrap();
    for g in &groups {
        stage(&mut w, g);
    }
    let want = w.finish().unwrap();
    // Stopped after 3 groups, with head 1's log cut back into its third group.
    let t = tempfile::tempdir().unwrap();
    {
        let mut w = StoreWriter::open(t.path(), draft(), OpenMode::Create, 3).unwrap();
        for g in &groups[..3] {
            stage(&mut w, g);
        }
    }
    let log = t
        .path()
        .join(format!("{}.staging", feature_file_name(1, whole())));
    let len = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let mut w = StoreWriter::open(t.path(), draft(), OpenMode::Resume, 3).unwrap();
    assert_eq!(w.staged_groups(), Some(2));
    for g in &groups[2..] {
        stage(&mut w, g);
    }
    let m = w.finish().unwrap();
    assert_eq!(m.to_json(), want.to_json());
    assert_eq!(file_bytes(t.path()), file_bytes(reference.path()));
    let names: Vec<String> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".staging")), "{names:?}");
}

#[test]
fn shards_with_features_merge_and_differing_heads_are_refused() {
    let whole_store = tempfile::tempdir().unwrap();
    let want = write(whole_store.path(), whole(), FeatureCodec::Q8);
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write(&a, SampleRange { start: 0, end: 128 }, FeatureCodec::Q8);
    write(
        &b,
        SampleRange {
            start: 128,
            end: 300,
        },
        FeatureCodec::Q8,
    );
    let out = t.path().join("merged");
    let m = merge(&[a.clone(), b.clone()], &out).unwrap();
    let f = m.features.as_ref().unwrap();
    assert_eq!(f.heads[0].shards.len(), 2);
    let wq = &want.features.as_ref().unwrap().heads[0].quality;
    assert_eq!(f.heads[0].quality.records, wq.records);
    assert!((f.heads[0].quality.mean_cosine - wq.mean_cosine).abs() < 1e-12);
    let merged = LabelStore::open(&out).unwrap();
    let whole_ = LabelStore::open(whole_store.path()).unwrap();
    let (mut x, mut y) = (vec![0f32; 20], vec![0f32; 20]);
    for s in [0, 127, 128, 299] {
        merged.features(1).unwrap().get_into(1, s, &mut x).unwrap();
        whole_.features(1).unwrap().get_into(1, s, &mut y).unwrap();
        assert_eq!(x, y);
    }
    assert!(verify(&out).ok);
    // Another codec is another store.
    let c = t.path().join("c");
    write(
        &c,
        SampleRange {
            start: 128,
            end: 300,
        },
        FeatureCodec::F16,
    );
    let e = merge(&[a, c], &t.path().join("m2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("features differs"), "{e}");
}
