//! Stored features (issue 29): bytes per record and reconstruction of each codec on real teacher
//! features, written and read back through the store itself (feature files, zstd, checksums).
//!
//! `DISTILL_FEATURES` names the inputs: comma-separated `name=path.npy`, each a float32 `[N, D]`
//! array of one teacher output over N augmented views (`scripts/feature-sample.py` writes
//! EfficientNet-Lite0's; `scripts/bench-features.sh` runs this). Without it, the bench runs on a
//! small synthetic array so that it always runs. Prints a markdown table: per input and codec,
//! bytes per record (the feature file's, over N records in one chunk), the ImageNet × 8 epochs
//! size, the reconstruction cosine (mean and exact 1st percentile, against the float32 input),
//! and the per-dimension relative error (‖x̂_j − x_j‖ / ‖x_j‖ over the records, mean and worst
//! over dimensions with any energy), beside the writer's own figures from the manifest. PCA rows
//! (q8 coefficients in a basis of D/4 or D/8 directions, `teacher_infer::basis::fit_pca`) fit on
//! nine views in ten and report their figures on the tenth (held out of the fit); their bytes
//! are over all records.

use formats::basis::{Basis, BasisRef};
use formats::feature::{FeatureHead, Features};
use formats::{FeatureCodec, FeatureQuality, ValueCodec};
use label_store::{LabelStore, OpenMode, RecordQuality, StoreWriter};
use std::sync::Arc;
use testkit::store::{SynthConfig, draft, sample};

const IMAGENET: f64 = 1_281_167.0;

/// `N`, `D` and the `N × D` values of one input.
type Sample = (usize, usize, Vec<f32>);

fn load(path: &str) -> Sample {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    assert_eq!(shape.len(), 2, "{path}: a [N, D] array");
    let v: Vec<f32> = npy.into_vec().unwrap();
    (shape[0] as usize, shape[1] as usize, v)
}

/// A stand-in when no input is named: ReLU'd values with a few strong channels.
fn synthetic() -> Sample {
    let (n, d) = (2000usize, 256usize);
    let v = (0..n * d)
        .map(|i| {
            let (r, j) = (i / d, i % d);
            let x = (((r * 2654435761 + j * 40503) >> 7) % 1000) as f32 / 1000.0 - 0.4;
            x.max(0.0) * if j % 37 == 0 { 8.0 } else { 1.0 }
        })
        .collect();
    (n, d, v)
}

fn main() {
    let inputs: Vec<(String, Sample)> = match std::env::var("DISTILL_FEATURES") {
        Ok(list) => list
            .split(',')
            .map(|kv| {
                let (name, path) = kv.split_once('=').expect("name=path.npy");
                (name.to_string(), load(path))
            })
            .collect(),
        Err(_) => vec![("synthetic".into(), synthetic())],
    };
    println!(
        "| input | D | codec | B/record | ImageNet × 8 | vs f32 | cosine mean | cosine p1 | \
         per-dim rel. error mean / max | writer's mean cosine |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, (n, d, x)) in &inputs {
        let held = |s: usize| s % 10 == 9;
        let fit_on: Vec<f32> = (0..*n)
            .filter(|&s| !held(s))
            .flat_map(|s| x[s * d..(s + 1) * d].iter().copied())
            .collect();
        let basis = |k: usize| {
            let pca = teacher_infer::basis::fit_pca(&fit_on, *d, k);
            Arc::new(Basis {
                teacher_sha256: "0".repeat(64),
                output: name.clone(),
                dim: *d as u32,
                mean: pca.mean,
                components: pca.components,
                variance: pca.variance,
            })
        };
        let runs = [
            (FeatureCodec::Q8, None),
            (FeatureCodec::F16, None),
            (FeatureCodec::Q8, Some(basis(d / 4))),
            (FeatureCodec::Q8, Some(basis(d / 8))),
        ];
        for (codec, pca) in runs {
            let t = tempfile::tempdir().unwrap();
            let cfg = SynthConfig {
                samples: *n as u32,
                classes: 10,
                k: 1,
                seed: 1,
            };
            let mut m = draft(&cfg, 1, ValueCodec::Q8, label_store::DEFAULT_CHUNK_RECORDS);
            m.teachers = vec![formats::TeacherInfo {
                file: "teacher.onnx".into(),
                sha256: "0".repeat(64),
                input_shape: vec![-1, 3, 224, 224],
                classes: 10,
            }];
            let stored = pca.as_ref().map_or(*d, |b| b.stored_dim());
            m.features = Some(Features {
                codec,
                heads: vec![FeatureHead {
                    teacher: 0,
                    output: name.clone(),
                    dim: *d as u32,
                    stored_dim: stored as u32,
                    basis: pca.as_ref().map(|_| BasisRef {
                        file: "bench".into(),
                        checksum: "xxh3:0".into(),
                    }),
                    shards: vec![],
                    quality: FeatureQuality::default(),
                }],
            });
            m.format_version = m.needed_version();
            let lock = label_store::WriterLock::acquire(t.path()).unwrap();
            let mut w =
                StoreWriter::open_with_bases(lock, m, OpenMode::Create, 3, vec![pca.clone()])
                    .unwrap();
            for s in 0..*n {
                let rec = sample(&cfg, 0, s as u32).record;
                let v = &x[s * d..(s + 1) * d];
                w.append_with_features(0, s as u32, &rec, &RecordQuality::default(), &[v])
                    .unwrap();
            }
            let m = w.finish().unwrap();
            let store = LabelStore::open(t.path()).unwrap();
            let fs = store.features(0).unwrap();
            let epoch = fs.decode_epoch(0).unwrap();
            let (mut y, mut r) = (vec![0f32; stored], vec![0f32; *d]);
            let mut cos = Vec::with_capacity(*n);
            let (mut err, mut energy) = (vec![0f64; *d], vec![0f64; *d]);
            for s in 0..*n {
                if pca.is_some() && !held(s) {
                    continue;
                }
                epoch.get_into(s as u32, &mut y).unwrap();
                match &pca {
                    Some(b) => b.reconstruct(&y, &mut r),
                    None => r.copy_from_slice(&y),
                }
                let v = &x[s * d..(s + 1) * d];
                cos.push(formats::feature::reconstruction(v, &r).0);
                for j in 0..*d {
                    err[j] += f64::from(r[j] - v[j]).powi(2);
                    energy[j] += f64::from(v[j]).powi(2);
                }
            }
            cos.sort_by(f64::total_cmp);
            let mean = cos.iter().sum::<f64>() / cos.len() as f64;
            let p1 = cos[(cos.len() as f64 * 0.01) as usize];
            let rel: Vec<f64> = err
                .iter()
                .zip(&energy)
                .filter(|(_, e)| **e > 0.0)
                .map(|(a, e)| (a / e).sqrt())
                .collect();
            let rel_mean = rel.iter().sum::<f64>() / rel.len().max(1) as f64;
            let rel_max = rel.iter().copied().fold(0f64, f64::max);
            let b = fs.stored_bytes() as f64 / *n as f64;
            let writer = &m.features.as_ref().unwrap().heads[0].quality;
            let how = match &pca {
                Some(b) => format!("q8, PCA d = {}", b.stored_dim()),
                None => codec.name().to_string(),
            };
            println!(
                "| {name} | {d} | {how} | {b:.1} | {:.1} GB | {:.2}x | {mean:.6} | {p1:.6} | \
                 {rel_mean:.2e} / {rel_max:.2e} | {:.6} |",
                b * IMAGENET * 8.0 / 1e9,
                4.0 * *d as f64 / b,
                writer.mean_cosine
            );
        }
    }
}
