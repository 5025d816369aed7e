//! A PCA basis for stored features: the `d` principal directions of a teacher output's `D`
//! dimensions, fitted once on a sample (`distill features fit`), so that every `--shard` job and
//! every resume stores the same `d` coefficients per record (FORMAT.md §6.3). The file holds one
//! basis per feature head (teacher and output), checksummed as a whole; manifests record that
//! checksum, and stores with different bases never merge.

use crate::error::FormatError;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"DSTLBASE";
const VERSION: u32 = 1;

/// One head's basis: `y = C (x − μ)`, `x ≈ μ + Cᵀ y`, with `C` `[d, D]` and orthonormal rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Basis {
    /// The teacher file's SHA-256 and the output the basis was fitted on.
    pub teacher_sha256: String,
    pub output: String,
    /// `D`, the output's dimensions.
    pub dim: u32,
    /// `μ`, `D` values.
    pub mean: Vec<f32>,
    /// `C`, `d × D` values row-major: row `k` is the `k`-th principal direction.
    pub components: Vec<f32>,
    /// The variance of the sample along each direction, `d` values, largest first.
    pub variance: Vec<f32>,
}

impl Basis {
    /// `d`, the stored dimensions.
    pub fn stored_dim(&self) -> usize {
        self.variance.len()
    }

    /// `y = C (x − μ)` into `y` (`d` long).
    pub fn project(&self, x: &[f32], y: &mut [f32]) {
        let dim = self.dim as usize;
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        for (yk, row) in y.iter_mut().zip(self.components.chunks_exact(dim)) {
            *yk = dot(row, &centred);
        }
    }

    /// `r = μ + Cᵀ y` into `r` (`D` long).
    pub fn reconstruct(&self, y: &[f32], r: &mut [f32]) {
        let dim = self.dim as usize;
        r.copy_from_slice(&self.mean);
        for (&yk, row) in y.iter().zip(self.components.chunks_exact(dim)) {
            for (o, &c) in r.iter_mut().zip(row) {
                *o += yk * c;
            }
        }
    }

    fn check(&self, i: usize) -> Result<(), FormatError> {
        let (d, dim) = (self.stored_dim(), self.dim as usize);
        let field = format!("bases[{i}]");
        if d == 0 || d > dim || dim == 0 || dim > crate::feature::MAX_FEATURE_DIM as usize {
            return Err(FormatError::invalid(
                field,
                format!("{d} directions of {dim} dimensions"),
            ));
        }
        if self.mean.len() != dim || self.components.len() != d * dim {
            return Err(FormatError::invalid(
                field,
                format!(
                    "{} mean values and {} component values for {d} × {dim}",
                    self.mean.len(),
                    self.components.len()
                ),
            ));
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !(finite(&self.mean) && finite(&self.components) && finite(&self.variance)) {
            return Err(FormatError::invalid(field, "a value is not finite"));
        }
        Ok(())
    }
}

/// Σ a·b in f32, eight lanes at a time (so the compiler vectorizes it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// What a basis file's header says of each basis.
#[derive(Serialize, Deserialize)]
struct Entry {
    teacher_sha256: String,
    output: String,
    dim: u32,
    stored_dim: u32,
}

/// A basis file: bases for one or more feature heads.
#[derive(Clone, Debug, PartialEq)]
pub struct BasisFile {
    pub bases: Vec<Basis>,
}

impl BasisFile {
    /// The file's bytes: `DSTLBASE`, version u32, header length u32, the JSON header (each
    /// basis's teacher, output, D and d), then per basis μ, variance and C as f32 LE, then the
    /// xxh3-64 of everything before it (FORMAT.md §6.3).
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<Entry> = self
            .bases
            .iter()
            .map(|b| Entry {
                teacher_sha256: b.teacher_sha256.clone(),
                output: b.output.clone(),
                dim: b.dim,
                stored_dim: b.stored_dim() as u32,
            })
            .collect();
        let header = serde_json::to_vec(&entries).expect("basis header serializes");
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for b in &self.bases {
            for v in [&b.mean, &b.variance, &b.components] {
                for x in v.iter() {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses and checks a basis file's bytes; errors name what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        let bad = |what: String| FormatError::invalid("basis", what);
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a distill basis file (bad magic or too short)".into()
            ));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(bad("checksum mismatch: the file is damaged".into()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4"));
        if u32_at(8) != VERSION {
            return Err(bad(format!(
                "version {} (this build reads {VERSION})",
                u32_at(8)
            )));
        }
        let hlen = u32_at(12) as usize;
        let header = body
            .get(16..16 + hlen)
            .ok_or_else(|| bad("header runs past the end".into()))?;
        let entries: Vec<Entry> =
            serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?;
        let mut at = 16 + hlen;
        let mut floats = |n: usize| -> Result<Vec<f32>, FormatError> {
            let end = n
                .checked_mul(4)
                .and_then(|b| b.checked_add(at))
                .filter(|&e| e <= body.len())
                .ok_or_else(|| bad("values run past the end".into()))?;
            let v = body[at..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect();
            at = end;
            Ok(v)
        };
        let mut bases = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let (dim, d) = (e.dim as usize, e.stored_dim as usize);
            if d > dim || dim > crate::feature::MAX_FEATURE_DIM as usize {
                return Err(bad(format!(
                    "basis {i}: {d} directions of {dim} dimensions"
                )));
            }
            let b = Basis {
                teacher_sha256: e.teacher_sha256,
                output: e.output,
                dim: e.dim,
                mean: floats(dim)?,
                variance: floats(d)?,
                components: floats(d * dim)?,
            };
            b.check(i)?;
            bases.push(b);
        }
        if at != body.len() {
            return Err(bad(format!(
                "{} bytes after the last basis",
                body.len() - at
            )));
        }
        Ok(BasisFile { bases })
    }

    /// `xxh3:` and 16 hex digits of the file's bytes: what manifests record.
    pub fn checksum(&self) -> String {
        format!("xxh3:{:016x}", xxh3_64(&self.to_bytes()))
    }

    /// The basis of `teacher_sha256`'s output `output`, when the file has one.
    pub fn find(&self, teacher_sha256: &str, output: &str) -> Option<&Basis> {
        self.bases
            .iter()
            .find(|b| b.teacher_sha256 == teacher_sha256 && b.output == output)
    }
}

/// What a manifest records of the basis a head's vectors were projected with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasisRef {
    /// The basis file's name as given (informative).
    pub file: String,
    /// [`BasisFile::checksum`] of it: every job of a store must use the same.
    pub checksum: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis() -> Basis {
        // Two orthonormal directions in 3 dimensions.
        let s = std::f32::consts::FRAC_1_SQRT_2;
        Basis {
            teacher_sha256: "ab".repeat(32),
            output: "pooled".into(),
            dim: 3,
            mean: vec![1.0, 2.0, 3.0],
            components: vec![s, s, 0.0, 0.0, 0.0, 1.0],
            variance: vec![4.0, 1.0],
        }
    }

    #[test]
    fn projection_and_reconstruction_are_each_others_inverse_in_the_span() {
        let b = basis();
        let x = [2.0, 3.0, 5.0]; // μ + (1, 1, 2): in the span
        let mut y = [0f32; 2];
        b.project(&x, &mut y);
        assert!(
            (y[0] - 2f32.sqrt()).abs() < 1e-6 && (y[1] - 2.0).abs() < 1e-6,
            "{y:?}"
        );
        let mut r = [0f32; 3];
        b.reconstruct(&y, &mut r);
        for (a, b) in x.iter().zip(&r) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn files_round_trip_and_damage_is_named() {
        let f = BasisFile {
            bases: vec![basis()],
        };
        let bytes = f.to_bytes();
        assert_eq!(BasisFile::from_bytes(&bytes).unwrap(), f);
        assert!(f.find(&"ab".repeat(32), "pooled").is_some());
        assert!(f.find(&"ab".repeat(32), "logits").is_none());
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        let e = BasisFile::from_bytes(&bad).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let e = BasisFile::from_bytes(b"not a basis file at all")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a distill basis file"), "{e}");
        let mut nan = f.clone();
        nan.bases[0].mean[1] = f32::NAN;
        let e = BasisFile::from_bytes(&nan.to_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not finite"), "{e}");
    }
}
