//! Writes a label store of realistic synthetic records (see `testkit::store`), so the store
//! can be tried without a teacher:
//!
//! ```text
//! cargo run --release -p testkit --example synth -- --out DIR --samples N --epochs E --classes C --k K [--seed S]
//! ```

use clap::Parser;
use formats::ValueCodec;
use std::path::PathBuf;
use std::time::Instant;
use testkit::store::{Measure, SynthConfig, WriteOptions, write_store};

#[derive(Parser)]
struct Args {
    /// Store directory to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    samples: u32,
    #[arg(long, default_value_t = 2)]
    epochs: u32,
    #[arg(long, default_value_t = 1000)]
    classes: u32,
    #[arg(long, default_value_t = 10)]
    k: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Value codec: q8 or f16.
    #[arg(long, default_value = "q8")]
    codec: ValueCodec,
    #[arg(long, default_value_t = label_store::DEFAULT_CHUNK_RECORDS)]
    chunk_records: u32,
    /// Measure the reconstruction KL of every n-th sample (1 = all).
    #[arg(long, default_value_t = 16)]
    measure_every: u32,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = SynthConfig {
        samples: a.samples,
        classes: a.classes,
        k: a.k,
        seed: a.seed,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let opts = WriteOptions {
        epochs: a.epochs,
        codec: a.codec,
        chunk_records: a.chunk_records,
        measure: Measure::Every(a.measure_every),
        threads,
    };
    let m = write_store(&a.out, &cfg, &opts, |_| {})?;
    let bytes = m.stored_bytes();
    println!(
        "wrote {} records ({} samples × {} epochs) to {} in {:.1}s: {bytes} bytes, {:.2} B/record",
        m.records(),
        a.samples,
        a.epochs,
        a.out.display(),
        t.elapsed().as_secs_f64(),
        bytes as f64 / m.records() as f64
    );
    Ok(())
}
