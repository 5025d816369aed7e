//! Stores from strangers: mutations of a small store's manifest, footer, index, chunk headers and
//! payloads, opened and read through every public reading path. Nothing may panic or abort, and
//! no case may allocate more than a fixed bound (a counting global allocator watches).
//!
//! Mutations are of two kinds: raw byte damage (checksums must catch it) and *crafted* changes
//! that rewrite a field and then re-seal every checksum, as a hostile file would, so that the
//! sanity checks behind the checksums are exercised too.
//!
//! `DISTILL_FUZZ_CASES=N` sets the number of cases (default 600, about two seconds);
//! `DISTILL_FUZZ_SEED` the seed. The counts are printed (`--nocapture`) for BENCHMARKS.md.

use label_store::shard::{CHUNK_HEADER_BYTES, FOOTER_BYTES, INDEX_ENTRY_BYTES};
use label_store::{LabelStore, MANIFEST_FILE, StoreError, summarize, verify};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use testkit::store::{Measure, SynthConfig, WriteOptions, write_store};
use xxhash_rust::xxh3::xxh3_64;

/// Counts live bytes and remembers the peak, so a case can be held to a bound.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Tests in this file measure the allocator: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// No case may hold more than this beyond what was live when it started. The store is about
/// 20 KB; its honest reading paths need well under a megabyte.
const BOUND: usize = 64 << 20;

const CFG: SynthConfig = SynthConfig {
    samples: 300,
    classes: 50,
    k: 5,
    seed: 11,
};

struct Pristine {
    _t: tempfile::TempDir,
    manifest: String,
    shard_name: String,
    shard: Vec<u8>,
}

fn pristine() -> Pristine {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    let opts = WriteOptions {
        epochs: 3,
        codec: formats::ValueCodec::Q8,
        chunk_records: 64,
        measure: Measure::All,
        threads: 1,
    };
    let m = write_store(&dir, &CFG, &opts, |_| {}).unwrap();
    let shard_name = m.shards[0].file.clone();
    Pristine {
        manifest: std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap(),
        shard: std::fs::read(dir.join(&shard_name)).unwrap(),
        shard_name,
        _t: t,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the structures of a (well-formed) shard sit.
struct Layout_ {
    index_offset: usize,
    count: usize,
    /// Chunk header offsets and payload lengths, in file order.
    chunks: Vec<(usize, usize)>,
}

fn layout_of(b: &[u8]) -> Layout_ {
    let f = b.len() - FOOTER_BYTES;
    let index_offset = u64_at(b, f) as usize;
    let count = u32_at(b, f + 8) as usize;
    let chunks = (0..count)
        .map(|i| {
            let e = index_offset + i * INDEX_ENTRY_BYTES;
            (u64_at(b, e + 16) as usize, u32_at(b, e + 24) as usize)
        })
        .collect();
    Layout_ {
        index_offset,
        count,
        chunks,
    }
}

/// Recomputes every checksum of a shard from its (possibly altered) fields, as a crafted file
/// would: payload checksums into chunk headers and index entries, chunk header checksums, the
/// index checksum and the footer checksum. Structures that no longer fit are left as they are.
fn reseal(b: &mut [u8], l: &Layout_) {
    for (i, &(at, len)) in l.chunks.iter().enumerate() {
        let Some(p) = b.get(at + CHUNK_HEADER_BYTES..at + CHUNK_HEADER_BYTES + len) else {
            continue;
        };
        let sum = xxh3_64(p).to_le_bytes();
        b[at + 24..at + 32].copy_from_slice(&sum);
        let h = xxh3_64(&b[at..at + 104]).to_le_bytes();
        b[at + 104..at + 112].copy_from_slice(&h);
        let e = l.index_offset + i * INDEX_ENTRY_BYTES;
        if e + INDEX_ENTRY_BYTES <= b.len() - FOOTER_BYTES {
            b[e + 32..e + 40].copy_from_slice(&sum);
        }
    }
    let f = b.len() - FOOTER_BYTES;
    if let Some(index) = b.get(l.index_offset..l.index_offset + l.count * INDEX_ENTRY_BYTES) {
        let s = xxh3_64(index).to_le_bytes();
        b[f + 48..f + 56].copy_from_slice(&s);
    }
    let s = xxh3_64(&b[f..f + 72]).to_le_bytes();
    b[f + 72..f + 80].copy_from_slice(&s);
}

/// A value a crafted field is set to.
fn interesting(rng: &mut ChaCha8Rng, old: u64, max: u64) -> u64 {
    let v = match rng.random_range(0..9) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max / 2 + 1,
        4 => old.wrapping_add(1) & max,
        5 => old.wrapping_sub(1) & max,
        6 => old.wrapping_mul(1 << rng.random_range(1..24)) & max,
        7 => 1 << rng.random_range(0..32),
        _ => rng.random::<u64>() & max,
    };
    v & max
}

fn set_u32(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}
fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Makes the manifest agree with the shard's footer and size, so that a crafted shard reaches
/// the reading paths instead of being refused by the manifest comparison.
fn agree(manifest: &str, shard: &[u8]) -> String {
    let mut m: serde_json::Value = serde_json::from_str(manifest).unwrap();
    if shard.len() >= FOOTER_BYTES {
        let f = shard.len() - FOOTER_BYTES;
        let (start, end) = (u32_at(shard, f + 16), u32_at(shard, f + 20));
        m["epochs"] = u32_at(shard, f + 12).into();
        m["classes"] = u32_at(shard, f + 24).into();
        m["k"] = u32_at(shard, f + 28).into();
        m["chunk_records"] = u32_at(shard, f + 32).into();
        m["samples"] = serde_json::json!({"start": start, "end": end});
        m["dataset"]["samples"] = u64::from(end).into();
        let s = &mut m["shards"][0];
        s["samples"] = serde_json::json!({"start": start, "end": end});
        s["file"] = format!("shard-{start:010}-{end:010}.dls").into();
        s["records"] =
            (u64::from(end.saturating_sub(start)) * u64::from(u32_at(shard, f + 12))).into();
        s["chunks"] = u32_at(shard, f + 8).into();
        s["bytes"] = (shard.len() as u64).into();
        s["checksum"] = format!("xxh3:{:016x}", u64_at(shard, f + 48)).into();
    }
    serde_json::to_string_pretty(&m).unwrap()
}

/// One mutated store: the manifest text and shard bytes, and the kind of mutation.
fn mutate(p: &Pristine, rng: &mut ChaCha8Rng) -> (String, Vec<u8>, &'static str) {
    let mut manifest = p.manifest.clone();
    let mut b = p.shard.clone();
    let l = layout_of(&b);
    let f = b.len() - FOOTER_BYTES;
    let kind = match rng.random_range(0..8) {
        0 => {
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..b.len());
                b[at] ^= 1 << rng.random_range(0..8);
            }
            "raw byte flips in the shard"
        }
        1 => {
            // Crafted footer: one or more fields changed, checksums re-sealed.
            for _ in 0..rng.random_range(1..4) {
                let (off, wide) = [
                    (0, true),
                    (8, false),
                    (12, false),
                    (16, false),
                    (20, false),
                    (24, false),
                    (28, false),
                    (32, false),
                    (36, false),
                    (40, false),
                    (56, false),
                ][rng.random_range(0..11)];
                if wide {
                    let v = interesting(rng, u64_at(&b, f + off), u64::MAX);
                    set_u64(&mut b, f + off, v);
                } else if off == 40 {
                    b[f + 40] = rng.random();
                } else {
                    let v = interesting(rng, u64::from(u32_at(&b, f + off)), u64::from(u32::MAX));
                    set_u32(&mut b, f + off, v);
                }
            }
            reseal(&mut b, &l);
            manifest = agree(&manifest, &b);
            "crafted footer fields (re-sealed)"
        }
        2 => {
            // Crafted index entries.
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..l.count);
                let e = l.index_offset + i * INDEX_ENTRY_BYTES;
                let off = [0, 4, 8, 12, 16, 24][rng.random_range(0..6)];
                if off == 16 {
                    let v = interesting(rng, u64_at(&b, e + off), u64::MAX);
                    set_u64(&mut b, e + off, v);
                } else {
                    let v = interesting(rng, u64::from(u32_at(&b, e + off)), u64::from(u32::MAX));
                    set_u32(&mut b, e + off, v);
                }
            }
            reseal(&mut b, &l);
            manifest = agree(&manifest, &b);
            "crafted index entries (re-sealed)"
        }
        3 => {
            // Crafted chunk headers, index entries changed to match.
            let i = rng.random_range(0..l.count);
            let (at, _) = l.chunks[i];
            let e = l.index_offset + i * INDEX_ENTRY_BYTES;
            let (hoff, ioff) =
                [(4, 0), (8, 4), (12, 8), (16, 12), (20, 24)][rng.random_range(0..5)];
            let v = interesting(rng, u64::from(u32_at(&b, at + hoff)), u64::from(u32::MAX));
            set_u32(&mut b, at + hoff, v);
            if rng.random_bool(0.7) {
                set_u32(&mut b, e + ioff, v);
            }
            reseal(&mut b, &l);
            manifest = agree(&manifest, &b);
            "crafted chunk headers (re-sealed)"
        }
        4 => {
            // Damaged zstd payloads behind valid checksums: the decoder and the record checks.
            let (at, len) = l.chunks[rng.random_range(0..l.count)];
            for _ in 0..rng.random_range(1..8) {
                let j = at + CHUNK_HEADER_BYTES + rng.random_range(0..len);
                b[j] = rng.random();
            }
            reseal(&mut b, &l);
            manifest = agree(&manifest, &b);
            "damaged payloads (re-sealed)"
        }
        5 => {
            let n = rng.random_range(0..b.len());
            if rng.random_bool(0.5) {
                b.truncate(n);
            } else {
                b.extend((0..rng.random_range(1..200)).map(|_| rng.random::<u8>()));
            }
            "truncated or extended shard"
        }
        6 => {
            // Crafted manifest values.
            let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
            let big = |rng: &mut ChaCha8Rng| -> serde_json::Value {
                interesting(rng, 100, u64::from(u32::MAX)).into()
            };
            match rng.random_range(0..9) {
                0 => m["classes"] = big(rng),
                1 => m["k"] = big(rng),
                2 => m["epochs"] = big(rng),
                3 => m["samples"]["end"] = big(rng),
                4 => m["chunk_records"] = big(rng),
                5 => m["shards"][0]["records"] = big(rng),
                6 => m["dataset"]["samples"] = big(rng),
                7 => {
                    let paths = [
                        "/etc/passwd",
                        "../../../../etc/passwd",
                        "sub/../../shard-0000000000-0000000300.dls",
                        "./shard-0000000000-0000000300.dls",
                        "shard-0000000000-0000000299.dls",
                        "",
                        "..",
                        "/tmp/shard-0000000000-0000000300.dls",
                    ];
                    m["shards"][0]["file"] = paths[rng.random_range(0..paths.len())].into();
                }
                _ => {
                    // A second shard entry that claims more samples than exist.
                    let mut extra = m["shards"][0].clone();
                    extra["samples"] = serde_json::json!({"start": 300, "end": u32::MAX});
                    m["shards"].as_array_mut().unwrap().push(extra);
                    m["samples"]["end"] = u32::MAX.into();
                    m["dataset"]["samples"] = u64::from(u32::MAX).into();
                }
            }
            manifest = serde_json::to_string_pretty(&m).unwrap();
            "crafted manifest values"
        }
        _ => {
            let mut t = manifest.into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..t.len());
                t[at] = rng.random_range(b' '..=b'~');
            }
            manifest = String::from_utf8(t).unwrap();
            "raw byte changes in the manifest"
        }
    };
    (manifest, b, kind)
}

/// Opens and reads the store every way a user can; `Err` is the first refusal.
fn read_all(dir: &Path) -> Result<(), StoreError> {
    let report = verify(dir);
    let store = LabelStore::open(dir)?;
    for e in 0..store.epochs() {
        let d = store.decode_epoch(e)?;
        let s = store.samples();
        for x in [s.start, s.end - 1, s.start + s.len() / 2] {
            d.get(x)?;
            store.get(e, x)?;
        }
        for r in store.epoch_iter(e)? {
            r?;
        }
    }
    summarize(&store)?;
    assert!(
        report.ok,
        "verify found faults in a store every reader accepts: {:?}",
        report.errors
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    cases: u64,
    rejected: u64,
    accepted: u64,
    by_kind: BTreeMap<&'static str, (u64, u64)>,
    panics: Vec<String>,
    peak: usize,
}

fn run_case(dir: &Path, manifest: &str, shard_name: &str, shard: &[u8]) -> (bool, usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
    std::fs::write(dir.join(shard_name), shard).unwrap();
    // The crafted manifest may rename the shard: put it under that name too.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(manifest)
        && let Some(name) = v["shards"][0]["file"].as_str()
        && name.starts_with("shard-")
        && !name.contains('/')
        && name != shard_name
    {
        std::fs::write(dir.join(name), shard).unwrap();
    }
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let ok = read_all(dir).is_ok();
    (ok, PEAK.load(Ordering::Relaxed) - base)
}

#[test]
fn mutated_stores_never_panic_and_stay_in_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cases: u64 = std::env::var("DISTILL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("DISTILL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let p = pristine();
    let t = tempfile::tempdir().unwrap();
    let dir: PathBuf = t.path().join("case");
    // The untouched store reads cleanly: the harness itself is sound.
    assert!(run_case(&dir, &p.manifest, &p.shard_name, &p.shard).0);
    let mut tally = Tally::default();
    let quiet = std::panic::take_hook();
    // Panics are caught per case; their messages go into the report instead of stderr.
    static LAST_PANIC: Mutex<String> = Mutex::new(String::new());
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = info.to_string();
    }));
    for case in 0..cases {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(case);
        let (manifest, shard, kind) = mutate(&p, &mut rng);
        let outcome = std::panic::catch_unwind(|| run_case(&dir, &manifest, &p.shard_name, &shard));
        tally.cases += 1;
        let slot = tally.by_kind.entry(kind).or_default();
        match outcome {
            Ok((ok, peak)) => {
                tally.peak = tally.peak.max(peak);
                if ok {
                    tally.accepted += 1;
                    slot.1 += 1;
                } else {
                    tally.rejected += 1;
                    slot.0 += 1;
                }
                assert!(
                    peak <= BOUND,
                    "case {case} (seed {seed}, {kind}) allocated {peak} bytes"
                );
            }
            Err(_) => tally.panics.push(format!(
                "case {case} (seed {seed}, {kind}): {}",
                LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner())
            )),
        }
    }
    std::panic::set_hook(quiet);
    println!(
        "fuzz: {} cases, {} rejected with an error, {} accepted, {} panics, peak {} KiB",
        tally.cases,
        tally.rejected,
        tally.accepted,
        tally.panics.len(),
        tally.peak / 1024
    );
    for (kind, (rej, acc)) in &tally.by_kind {
        println!("  {kind}: {rej} rejected, {acc} accepted");
    }
    assert!(tally.panics.is_empty(), "panics: {:?}", tally.panics);
    // Nearly every mutation must be caught; the few accepted are changes that keep the store
    // valid (a manifest value made to agree, a field set to what it was).
    assert!(
        tally.rejected * 10 >= tally.cases * 8,
        "only {} of {} mutations were refused",
        tally.rejected,
        tally.cases
    );
}

/// A crafted shard (checksums re-sealed, manifest agreeing) that claims 2³² − 1 samples, in
/// the largest chunks a u32 raw length can describe, each backed by a real 1–2 KB payload: a
/// clean error, in bounded memory.
#[test]
fn a_shard_claiming_four_billion_samples_is_refused_in_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = pristine();
    let b = &p.shard;
    let l = layout_of(b);
    let f = b.len() - FOOTER_BYTES;
    let row = u32_at(b, f + 36);
    let per_chunk = u32::MAX / row;
    let chunks = u32::MAX.div_ceil(per_chunk);
    // File header, then chunk 0 repeated once per claimed chunk with its fields rewritten.
    let (at0, len0) = l.chunks[0];
    let mut crafted = b[..label_store::shard::FILE_HEADER_BYTES].to_vec();
    let mut index = Vec::new();
    let mut placed = Vec::new();
    for j in 0..chunks {
        let first = j * per_chunk;
        let count = (u32::MAX - first).min(per_chunk);
        let at = crafted.len();
        crafted.extend_from_slice(&b[at0..at0 + CHUNK_HEADER_BYTES + len0]);
        for (off, v) in [(4, 0), (8, first), (12, count), (16, count * row)] {
            set_u32(&mut crafted, at + off, u64::from(v));
        }
        let e = &b[l.index_offset..l.index_offset + INDEX_ENTRY_BYTES];
        let mut e = e.to_vec();
        for (off, v) in [(0, 0), (4, first), (8, count), (12, count * row)] {
            set_u32(&mut e, off, u64::from(v));
        }
        set_u64(&mut e, 16, at as u64);
        index.extend_from_slice(&e);
        placed.push((at, len0));
    }
    let index_offset = crafted.len();
    crafted.extend_from_slice(&index);
    crafted.extend_from_slice(&b[f..]);
    let g = crafted.len() - FOOTER_BYTES;
    set_u64(&mut crafted, g, index_offset as u64);
    for (off, v) in [
        (8, chunks),
        (12, 1),
        (16, 0),
        (20, u32::MAX),
        (32, per_chunk),
    ] {
        set_u32(&mut crafted, g + off, u64::from(v));
    }
    let l2 = Layout_ {
        index_offset,
        count: chunks as usize,
        chunks: placed,
    };
    reseal(&mut crafted, &l2);
    let manifest = agree(&p.manifest, &crafted);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("crafted");
    let name = format!("shard-{:010}-{:010}.dls", 0, u32::MAX);
    let (ok, peak) = run_case(&dir, &manifest, &name, &crafted);
    assert!(!ok);
    let err = LabelStore::open(&dir).err().expect("refused").to_string();
    assert!(
        err.contains("cannot come from a") && err.contains("zstd payload"),
        "{err}"
    );
    println!(
        "crafted: {} bytes, {chunks} chunks claiming {} records; refused with {peak} bytes: {err}",
        crafted.len(),
        u32::MAX
    );
    assert!(
        crafted.len() < 1 << 20 && peak <= 4 << 20,
        "refusing a {}-byte file allocated {peak} bytes",
        crafted.len()
    );
}
