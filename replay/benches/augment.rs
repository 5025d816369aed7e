//! Decode + augment throughput, the loader's work per record: 224×224 outputs from JPEGs
//! (ImageNet-sized, 500×375) and 32×32 outputs from CIFAR-10 binary, `usi` recipe (every record
//! mixed, so every record decodes two images), on 1 and 2 threads through the ordered loader.
//!
//! Run: `cargo bench -p formats --bench augment`. Prints a table (median of 3 runs; ratios are
//! against the 1-thread figure and against decoding alone, measured in the same run), then
//! criterion's figure for one thread.

use criterion::{Criterion, Throughput};
use datasets::{self as dataset, Dataset};
use formats::Recipe;
use formats::view::ViewRule;
use replay::apply::apply;
use replay::loader::Loader;
use replay::sampler::Sampler;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const JPEGS: u32 = 256;
const CIFAR: u32 = 10_000;

/// Smooth colour fields plus texture, so JPEG decoding costs what it does on photographs.
fn write_jpegs(dir: &Path) {
    for c in 0..4 {
        std::fs::create_dir_all(dir.join(format!("c{c}"))).unwrap();
    }
    for i in 0..JPEGS {
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ i) % 37;
            image::Rgb([
                ((x + i * 3) % 256) as u8 / 2 + n as u8,
                ((y * 2 + i) % 256) as u8 / 2 + n as u8,
                (((x + y) / 3 + i) % 256) as u8 / 2,
            ])
        });
        let path = dir.join(format!("c{}/{i:05}.jpg", i % 4));
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
            .encode_image(&img)
            .unwrap();
    }
}

fn write_cifar(dir: &Path) {
    let mut bytes = Vec::with_capacity(CIFAR as usize * 3073);
    for i in 0..CIFAR {
        bytes.push((i % 10) as u8);
        bytes.extend((0..3072u32).map(|k| ((k * 7 + i * 13) % 256) as u8));
    }
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}

/// Records per second for `n` records through the loader on `threads` threads.
fn run(
    ds: &Arc<dyn Dataset>,
    sampler: &Arc<Sampler>,
    n: u32,
    size: u32,
    threads: usize,
    decode_only: bool,
) -> f64 {
    let t = Instant::now();
    let (ds, sampler) = (Arc::clone(ds), Arc::clone(sampler));
    let len = ds.len();
    let loader = Loader::new(n as usize, threads, 5 * threads, move |i| {
        let index = i as u32 % len;
        let dims = |j: u32| ds.dims(j);
        let p = sampler.sample(0, index, &dims).unwrap();
        let primary = ds.image(index).unwrap();
        let partner = p.mix.map(|m| ds.image(m.partner).unwrap());
        if decode_only {
            return black_box(primary.data.len() + partner.map_or(0, |p| p.data.len())) as f32;
        }
        let mut out = vec![0.0f32; usize::from(primary.channels) * (size * size) as usize];
        let rule = ViewRule::of_recipe(sampler.recipe());
        apply(&rule, &p, &primary, partner.as_ref(), size, size, &mut out).unwrap();
        out[0]
    });
    for x in loader {
        black_box(x);
    }
    f64::from(n) / t.elapsed().as_secs_f64()
}

fn median3(mut f: impl FnMut() -> f64) -> f64 {
    let mut v = [f(), f(), f()];
    v.sort_by(f64::total_cmp);
    v[1]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let jdir = tmp.path().join("jpegs");
    write_jpegs(&jdir);
    write_cifar(tmp.path());
    let jpegs: Arc<dyn Dataset> = Arc::from(dataset::open(&jdir, None, "train").unwrap());
    let cifar: Arc<dyn Dataset> = Arc::from(dataset::open(tmp.path(), None, "test").unwrap());
    let usi = Recipe::usi();
    let cases = [
        ("JPEG 500x375 -> 224x224", &jpegs, 224u32, 256u32),
        ("CIFAR-10 32x32 -> 32x32", &cifar, 32, 20_000),
    ];
    println!(
        "\n## decode + augment (usi: crop, flip, mixup/cutmix on every record; two decodes per record)"
    );
    println!(
        "| input | threads | records/s | vs 1 thread | decode alone, records/s | augment share of the time |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, ds, size, n) in cases {
        let sampler = Arc::new(Sampler::new(&usi, 0, ds.len(), size, size).unwrap());
        let mut one = 0.0;
        for threads in [1usize, 2] {
            let full = median3(|| run(ds, &sampler, n, size, threads, false));
            let dec = median3(|| run(ds, &sampler, n, size, threads, true));
            if threads == 1 {
                one = full;
            }
            println!(
                "| {name} | {threads} | {full:.0} | {:.2}x | {dec:.0} | {:.0}% |",
                full / one,
                100.0 * (1.0 - full / dec)
            );
        }
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut g = c.benchmark_group("augment");
    let s224 = Arc::new(Sampler::new(&usi, 0, jpegs.len(), 224, 224).unwrap());
    g.throughput(Throughput::Elements(64));
    g.bench_function("jpeg_224_one_thread", |b| {
        b.iter(|| run(&jpegs, &s224, 64, 224, 1, false))
    });
    let s32 = Arc::new(Sampler::new(&usi, 0, cifar.len(), 32, 32).unwrap());
    g.throughput(Throughput::Elements(2000));
    g.bench_function("cifar_32_one_thread", |b| {
        b.iter(|| run(&cifar, &s32, 2000, 32, 1, false))
    });
    g.finish();
    c.final_summary();
}
