//! Label-store benchmarks: size, reconstruction error, write and read throughput, for 1,000
//! classes, k = 10 and one million records (`DISTILL_BENCH_RECORDS` overrides the count).
//!
//! Run: `cargo bench -p label-store --bench store`. It first prints a table of its own
//! measurements (median of 5 runs, each ratio against a baseline measured in the same run), then
//! runs the same operations under criterion.

use criterion::{Criterion, Throughput};
use formats::{Record, RecordLayout, SampleRange, ValueCodec};
use label_store::{DEFAULT_CHUNK_RECORDS, LabelStore, OpenMode, RecordQuality, StoreWriter};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::store::{SynthConfig, draft, sample};

const CLASSES: u32 = 1000;
const K: u32 = 10;

fn count() -> u32 {
    std::env::var("DISTILL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn cfg(n: u32) -> SynthConfig {
    SynthConfig {
        samples: n,
        classes: CLASSES,
        k: K,
        seed: 42,
    }
}

/// One epoch of `n` synthetic records, generated on all cores.
fn records(n: u32) -> Vec<Record> {
    let c = cfg(n);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u32;
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| sample(&c, 0, i).record)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn write(dir: &Path, recs: &[Record], codec: ValueCodec, level: i32, chunk: u32) -> u64 {
    let n = recs.len() as u32;
    let mut d = draft(&cfg(n), 1, codec, chunk);
    d.samples = SampleRange { start: 0, end: n };
    let mut w = StoreWriter::open(dir, d, OpenMode::Overwrite, level).unwrap();
    let q = RecordQuality::default();
    for (i, r) in recs.iter().enumerate() {
        w.append(0, i as u32, r, &q).unwrap();
    }
    let m = w.finish().unwrap();
    m.stored_bytes() + std::fs::metadata(dir.join("manifest.json")).unwrap().len()
}

/// Baseline for writing: the same rows encoded and written uncompressed, no chunks or checksums.
fn write_raw(path: &Path, recs: &[Record], layout: &RecordLayout) {
    use std::io::Write;
    let r = layout.row_bytes();
    let mut buf = vec![0u8; r * 4096];
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for block in recs.chunks(4096) {
        for (i, rec) in block.iter().enumerate() {
            layout.encode(rec, &mut buf[i * r..(i + 1) * r]).unwrap();
        }
        f.write_all(&buf[..block.len() * r]).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

fn shuffled(n: u32) -> Vec<u32> {
    // A fixed full-period permutation (multiplicative step coprime with n).
    let step = (0..)
        .map(|i| 1_000_003 + 2 * i)
        .find(|s| gcd(*s, n) == 1)
        .unwrap();
    (0..n)
        .map(|i| ((u64::from(i) * u64::from(step)) % u64::from(n)) as u32)
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..5).map(|_| f()).collect();
    v.sort();
    v[2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn rate(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64()
}

fn main() {
    let n = count();
    let tmp = tempfile::tempdir().unwrap();
    eprintln!("generating {n} synthetic records ({CLASSES} classes, k = {K}) …");
    let recs = records(n);

    // ---- size per codec and chunking --------------------------------------------------
    println!("\n## size ({n} records, {CLASSES} classes, k = {K}, aug params included)");
    println!(
        "| codec | chunk records | zstd level | bytes/record | vs dense f32 (4,000 B) | vs TinyViT (44 B) |"
    );
    println!("|---|---|---|---|---|---|");
    for (codec, chunk, level) in [
        (ValueCodec::Q8, DEFAULT_CHUNK_RECORDS, 3),
        (ValueCodec::Q8, 4096, 3),
        (ValueCodec::Q8, DEFAULT_CHUNK_RECORDS, 9),
        (ValueCodec::F16, DEFAULT_CHUNK_RECORDS, 3),
    ] {
        let bytes = write(&tmp.path().join("size"), &recs, codec, level, chunk);
        let bpr = bytes as f64 / f64::from(n);
        println!(
            "| {} | {chunk} | {level} | {bpr:.2} | {:.1}x smaller | {:.2}x |",
            codec.name(),
            4.0 * f64::from(CLASSES) / bpr,
            44.0 / bpr
        );
    }

    // ---- reconstruction error ------------------------------------------------------------
    let probe = 20_000.min(n);
    let c = cfg(n);
    let mut sums = [[0.0f64; 2]; 3];
    for i in 0..probe {
        let s = sample(&c, 0, (u64::from(i) * 7919 % u64::from(n)) as u32);
        for (row, codec) in [None, Some(ValueCodec::F16), Some(ValueCodec::Q8)]
            .into_iter()
            .enumerate()
        {
            let label = match codec {
                None => s.record.label.clone(),
                Some(codec) => {
                    let l = RecordLayout::new(CLASSES, K, codec).unwrap();
                    let mut b = vec![0; l.row_bytes()];
                    l.encode(&s.record, &mut b).unwrap();
                    l.decode(&b).unwrap().label
                }
            };
            sums[row][0] += label.kl_from_full(&s.logits, 1.0);
            sums[row][1] += label.kl_from_full(&s.logits, 4.0);
        }
    }
    println!("\n## reconstruction error: mean KL(full softmax ‖ rebuilt), nats, {probe} records");
    println!("| values | τ = 1 | τ = 4 |");
    println!("|---|---|---|");
    for (name, s) in ["exact top-k (f32, no codec)", "f16", "q8"]
        .iter()
        .zip(sums)
    {
        println!(
            "| {name} | {:.6} | {:.6} |",
            s[0] / f64::from(probe),
            s[1] / f64::from(probe)
        );
    }

    // ---- throughput ----------------------------------------------------------------------
    let layout = RecordLayout::new(CLASSES, K, ValueCodec::Q8).unwrap();
    let dir = tmp.path().join("store");
    let raw = tmp.path().join("raw.bin");
    let t_write = median(|| {
        timed(|| {
            write(&dir, &recs, ValueCodec::Q8, 3, DEFAULT_CHUNK_RECORDS);
        })
    });
    let t_raw = median(|| timed(|| write_raw(&raw, &recs, &layout)));

    let store = Arc::new(LabelStore::open(&dir).unwrap());
    let order = shuffled(n);
    let t_seq = median(|| {
        timed(|| {
            for r in store.epoch_iter(0).unwrap() {
                black_box(r.unwrap());
            }
        })
    });
    // Shuffled order, one thread doing everything: decompress the epoch, then read.
    let t_shuf_one = median(|| {
        timed(|| {
            let ep = store.decode_epoch(0).unwrap();
            let mut rec = Record::empty(K as usize);
            for &s in &order {
                ep.get_into(s, &mut rec).unwrap();
                black_box(&rec);
            }
        })
    });
    // Shuffled order with the prefetcher: the consumer's view of the second of two epochs
    // (the first includes the one wait a training run has, at its very start).
    let t_shuf_pf = median(|| {
        let p = store.prefetch(vec![0, 0]);
        let first = p.next_epoch().unwrap().unwrap();
        let mut rec = Record::empty(K as usize);
        for &s in &order {
            first.get_into(s, &mut rec).unwrap();
        }
        timed(|| {
            let ep = p.next_epoch().unwrap().unwrap();
            for &s in &order {
                ep.get_into(s, &mut rec).unwrap();
                black_box(&rec);
            }
        })
    });
    // Baseline for reading: the same rows, already uncompressed in memory (no zstd, no
    // checksums), decoded in the same shuffled order.
    let r = layout.row_bytes();
    let mut plain = vec![0u8; recs.len() * r];
    for (i, rec) in recs.iter().enumerate() {
        layout.encode(rec, &mut plain[i * r..(i + 1) * r]).unwrap();
    }
    let t_mem = median(|| {
        timed(|| {
            let mut rec = Record::empty(K as usize);
            for &s in &order {
                let at = s as usize * r;
                layout.decode_into(&plain[at..at + r], &mut rec).unwrap();
                black_box(&rec);
            }
        })
    });
    println!(
        "\n## throughput ({n} records, q8, zstd 3, chunk {DEFAULT_CHUNK_RECORDS}; median of 5)"
    );
    println!("| operation | records/s | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| write (encode, stats, zstd, checksums, fsync) | {:.0} | raw rows, no compression: {:.0} | {:.2} |",
        rate(n, t_write),
        rate(n, t_raw),
        t_raw.as_secs_f64() / t_write.as_secs_f64()
    );
    println!(
        "| sequential read (epoch_iter, decode) | {:.0} | uncompressed rows in memory: {:.0} | {:.2} |",
        rate(n, t_seq),
        rate(n, t_mem),
        t_mem.as_secs_f64() / t_seq.as_secs_f64()
    );
    println!(
        "| shuffled read, one thread incl. decompression | {:.0} | uncompressed rows in memory: {:.0} | {:.2} |",
        rate(n, t_shuf_one),
        rate(n, t_mem),
        t_mem.as_secs_f64() / t_shuf_one.as_secs_f64()
    );
    println!(
        "| shuffled read with prefetch (consumer thread) | {:.0} | uncompressed rows in memory: {:.0} | {:.2} |",
        rate(n, t_shuf_pf),
        rate(n, t_mem),
        t_mem.as_secs_f64() / t_shuf_pf.as_secs_f64()
    );

    // ---- criterion -----------------------------------------------------------------------
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut g = c.benchmark_group("label_store");
    g.throughput(Throughput::Elements(u64::from(n)));
    g.bench_function("write_q8", |b| {
        b.iter(|| {
            write(
                &dir.with_extension("w"),
                &recs,
                ValueCodec::Q8,
                3,
                DEFAULT_CHUNK_RECORDS,
            )
        })
    });
    g.bench_function("write_raw_baseline", |b| {
        b.iter(|| write_raw(&raw, &recs, &layout))
    });
    g.bench_function("read_sequential", |b| {
        b.iter(|| {
            for r in store.epoch_iter(0).unwrap() {
                black_box(r.unwrap());
            }
        })
    });
    g.bench_function("read_shuffled_one_thread", |b| {
        b.iter(|| {
            let ep = store.decode_epoch(0).unwrap();
            let mut rec = Record::empty(K as usize);
            for &s in &order {
                ep.get_into(s, &mut rec).unwrap();
                black_box(&rec);
            }
        })
    });
    g.finish();
    c.final_summary();
}
