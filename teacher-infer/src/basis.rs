//! Fitting a feature basis (`distill features fit`): the teachers' feature outputs on a
//! spread-out sample of the views labelling would make, and their principal directions, so that
//! a store can keep `d < D` coefficients per record (FORMAT.md §6.3).

use crate::error::InferError;
use crate::pipeline::LabelConfig;
use formats::basis::{Basis, BasisFile};
use label_store::{LabelStore, OpenMode};
use nalgebra::{DMatrix, SymmetricEigen};
use std::path::PathBuf;
use std::sync::Arc;

/// The principal directions of a sample of vectors.
pub struct Pca {
    pub mean: Vec<f32>,
    /// The `d` directions of largest variance, rows of `d × dim`, orthonormal.
    pub components: Vec<f32>,
    /// The variance along each, largest first.
    pub variance: Vec<f32>,
    /// The sample's variance over all `dim` dimensions (the covariance's trace), of which
    /// `variance` keeps a share.
    pub total_variance: f64,
}

/// The principal directions of `vectors` (`n × dim`, row-major), `d` of them.
pub fn fit_pca(vectors: &[f32], dim: usize, d: usize) -> Pca {
    let n = vectors.len() / dim.max(1);
    let mut mean = vec![0f64; dim];
    for row in vectors.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let centred = DMatrix::from_fn(n, dim, |i, j| f64::from(vectors[i * dim + j]) - mean[j]);
    let cov = centred.tr_mul(&centred) / n.max(1) as f64;
    let total_variance = cov.trace();
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let mut components = Vec::with_capacity(d * dim);
    let mut variance = Vec::with_capacity(d);
    for &k in order.iter().take(d) {
        let col = eig.eigenvectors.column(k);
        components.extend(col.iter().map(|&v| v as f32));
        variance.push(eig.eigenvalues[k].max(0.0) as f32);
    }
    Pca {
        mean: mean.iter().map(|&m| m as f32).collect(),
        components,
        variance,
        total_variance,
    }
}

/// How well a fitted basis reconstructs vectors it was not fitted on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FitReport {
    pub head: usize,
    pub output: String,
    pub dim: u32,
    pub stored_dim: u32,
    /// Vectors fitted on and held out.
    pub fitted: usize,
    pub held_out: usize,
    /// Share of the sample's variance the `d` directions keep.
    pub variance_kept: f64,
    /// Reconstruction cosine on the held-out vectors: mean and 1st percentile.
    pub cosine_mean: f64,
    pub cosine_p1: f64,
}

/// Fits a basis of `d` directions for every feature head `cfg` labels (`cfg.outputs.feature`):
/// labels every `stride`-th sample (about `samples` of them, `cfg.epochs` views each, `cfg`'s
/// recipe and seed) into a scratch store next to `cfg.out` with f16 features, fits on every
/// vector but each tenth, and measures the reconstruction on those it held out.
pub fn fit_basis(
    cfg: &LabelConfig,
    samples: u32,
    d: u32,
    progress: impl FnMut(crate::Progress),
) -> Result<(BasisFile, Vec<FitReport>), InferError> {
    if cfg.outputs.feature.is_none() {
        return Err(InferError::Invalid {
            field: "feature",
            what: "a basis is fitted on a feature output: name it".into(),
        });
    }
    let stride = cfg.data.len().div_ceil(samples.max(1)).max(1);
    let scratch = PathBuf::from(format!("{}.fit-scratch", cfg.out.display()));
    let data: Arc<dyn datasets::Dataset> =
        Arc::new(datasets::Strided::new(Arc::clone(&cfg.data), stride));
    let fit = LabelConfig {
        teachers: cfg.teachers.clone(),
        data: Arc::clone(&data),
        out: scratch.clone(),
        k: 1,
        shard: None,
        mode: OpenMode::Overwrite,
        feature_codec: formats::FeatureCodec::F16,
        feature_basis: None,
        blocks: crate::default_blocks(data.as_ref(), &cfg.recipe),
        outputs: cfg.outputs.clone(),
        recipe: cfg.recipe.clone(),
        mean: cfg.mean.clone(),
        std: cfg.std.clone(),
        sources: cfg.sources.clone(),
        ort_lib: cfg.ort_lib.clone(),
        ..*cfg
    };
    crate::label(&fit, progress)?;
    let store = LabelStore::open(&scratch).map_err(|e| crate::sink::store_err(&scratch, e))?;
    let mut bases = Vec::new();
    let mut reports = Vec::new();
    for (h, head) in store.feature_heads().iter().enumerate() {
        let fs = store
            .features(h)
            .map_err(|e| crate::sink::store_err(&scratch, e))?;
        let dim = fs.dim();
        if d as usize > dim {
            return Err(InferError::Invalid {
                field: "dim",
                what: format!(
                    "{d} is more than output {:?}'s {dim} dimensions",
                    head.output
                ),
            });
        }
        let (mut fitted, mut held) = (Vec::new(), Vec::new());
        let mut row = vec![0f32; dim];
        let mut i = 0usize;
        for e in 0..store.epochs() {
            let epoch = fs
                .decode_epoch(e)
                .map_err(|e| crate::sink::store_err(&scratch, e))?;
            for s in store.samples().start..store.samples().end {
                epoch
                    .get_into(s, &mut row)
                    .map_err(|e| crate::sink::store_err(&scratch, e))?;
                if i % 10 == 9 { &mut held } else { &mut fitted }.extend_from_slice(&row);
                i += 1;
            }
        }
        let Pca {
            mean,
            components,
            variance,
            total_variance,
        } = fit_pca(&fitted, dim, d as usize);
        let kept = variance.iter().map(|&v| f64::from(v)).sum::<f64>()
            / total_variance.max(f64::MIN_POSITIVE);
        let teacher = &store.manifest.teachers[head.teacher as usize];
        let basis = Basis {
            teacher_sha256: teacher.sha256.clone(),
            output: head.output.clone(),
            dim: dim as u32,
            mean,
            components,
            variance,
        };
        let (mut y, mut r) = (vec![0f32; d as usize], vec![0f32; dim]);
        let mut cos: Vec<f64> = held
            .chunks_exact(dim)
            .map(|x| {
                basis.project(x, &mut y);
                basis.reconstruct(&y, &mut r);
                formats::feature::reconstruction(x, &r).0
            })
            .collect();
        cos.sort_by(f64::total_cmp);
        reports.push(FitReport {
            head: h,
            output: head.output.clone(),
            dim: dim as u32,
            stored_dim: d,
            fitted: fitted.len() / dim,
            held_out: cos.len(),
            variance_kept: kept,
            cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
            cosine_p1: cos.get(cos.len() / 100).copied().unwrap_or(f64::NAN),
        });
        bases.push(basis);
    }
    drop(store);
    // The scratch store's files and lock, then the directory (left alone if anything else is
    // in it).
    label_store::writer::remove_store_files(&scratch)
        .map_err(|e| crate::sink::store_err(&scratch, e))?;
    let _ = std::fs::remove_file(scratch.join(label_store::LOCK_FILE));
    let _ = std::fs::remove_dir(&scratch);
    Ok((BasisFile { bases }, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_directions_of_largest_variance() {
        // Points along (1, 1, 0)/√2 with a large spread and along z with a small one.
        let mut v = Vec::new();
        for i in 0..200 {
            let t = (i as f32 - 100.0) * 0.1;
            // +, −, −, + per four points: uncorrelated with the linear t.
            let z = if i % 4 == 0 || i % 4 == 3 { 0.1 } else { -0.1 };
            v.extend_from_slice(&[3.0 + t, -1.0 + t, 2.0 + z]);
        }
        let Pca {
            mean,
            components: c,
            variance: var,
            total_variance,
        } = fit_pca(&v, 3, 2);
        assert!(
            (mean[0] - 2.95).abs() < 1e-4 && (mean[2] - 2.0).abs() < 1e-4,
            "{mean:?}"
        );
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (c[0].abs() - s).abs() < 1e-4 && (c[1].abs() - s).abs() < 1e-4 && c[2].abs() < 1e-4,
            "{c:?}"
        );
        assert!(c[5].abs() > 0.9999, "{c:?}");
        assert!(var[0] > 60.0 && (var[1] - 0.01).abs() < 1e-4, "{var:?}");
        assert!((total_variance - f64::from(var[0] + var[1])).abs() < 1e-3);
    }
}
