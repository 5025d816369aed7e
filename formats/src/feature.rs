//! Stored teacher features: one `[d]` vector per record (the teacher's pooled embedding of the
//! exact view the record replays), its codec, and the reconstruction figures a writer keeps.
//!
//! Features live in files of their own beside the label shards (FORMAT.md §6), so a reader that
//! does not ask for them never touches their bytes.

use crate::error::FormatError;
use crate::manifest::{QualitySums, ShardEntry};
use serde::{Deserialize, Serialize};

/// The most dimensions a stored feature may have: dense rows of a stranger's store stay bounded.
pub const MAX_FEATURE_DIM: u32 = 1 << 16;

/// Largest magnitude of a q8 code: codes are `-127..=127`, so the scale is symmetric.
const Q8_MAX: f32 = 127.0;

/// How a feature vector is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureCodec {
    /// int8 codes with one f32 scale per vector (`max |x| / 127`): `4 + d` bytes.
    Q8,
    /// IEEE half floats: `2·d` bytes.
    F16,
}

impl FeatureCodec {
    /// Codec id in feature file footers (distinct from the label codecs' 1 and 2, so neither
    /// kind of file passes for the other).
    pub fn id(self) -> u8 {
        match self {
            FeatureCodec::Q8 => 3,
            FeatureCodec::F16 => 4,
        }
    }

    /// Codec from its footer id.
    pub fn from_id(id: u8) -> Result<Self, FormatError> {
        match id {
            3 => Ok(FeatureCodec::Q8),
            4 => Ok(FeatureCodec::F16),
            _ => Err(FormatError::invalid(
                "codec",
                format!("unknown feature codec id {id}"),
            )),
        }
    }

    /// Name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FeatureCodec::Q8 => "q8",
            FeatureCodec::F16 => "f16",
        }
    }
}

impl std::str::FromStr for FeatureCodec {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q8" => Ok(FeatureCodec::Q8),
            "f16" => Ok(FeatureCodec::F16),
            _ => Err(FormatError::invalid(
                "features.codec",
                format!("unknown feature codec {s:?} (expected q8 or f16)"),
            )),
        }
    }
}

/// The row of one stored feature vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureLayout {
    /// Stored dimensions.
    pub dim: u32,
    pub codec: FeatureCodec,
}

impl FeatureLayout {
    /// A layout of `dim` stored dimensions, `1..=`[`MAX_FEATURE_DIM`].
    pub fn new(dim: u32, codec: FeatureCodec) -> Result<Self, FormatError> {
        if dim == 0 || dim > MAX_FEATURE_DIM {
            return Err(FormatError::invalid(
                "features.dim",
                format!("{dim} dimensions (a feature has 1..={MAX_FEATURE_DIM})"),
            ));
        }
        Ok(FeatureLayout { dim, codec })
    }

    /// Bytes per stored vector.
    pub fn row_bytes(&self) -> usize {
        let d = self.dim as usize;
        match self.codec {
            FeatureCodec::Q8 => 4 + d,
            FeatureCodec::F16 => 2 * d,
        }
    }

    /// Encodes `v` (exactly `dim` finite values) into `out` (`row_bytes` long).
    pub fn encode(&self, v: &[f32], out: &mut [u8]) -> Result<(), FormatError> {
        if v.len() != self.dim as usize {
            return Err(FormatError::invalid(
                "features.dim",
                format!(
                    "a vector of {} values, the store's have {}",
                    v.len(),
                    self.dim
                ),
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(FormatError::invalid(
                "features",
                format!("value {} at dimension {i} is not finite", v[i]),
            ));
        }
        match self.codec {
            FeatureCodec::Q8 => {
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = max / Q8_MAX;
                out[..4].copy_from_slice(&scale.to_le_bytes());
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                for (o, &x) in out[4..].iter_mut().zip(v) {
                    *o = (x * inv).round().clamp(-Q8_MAX, Q8_MAX) as i8 as u8;
                }
            }
            FeatureCodec::F16 => {
                for (o, &x) in out.chunks_exact_mut(2).zip(v) {
                    let h = half::f16::from_f32(x.clamp(-65504.0, 65504.0));
                    o.copy_from_slice(&h.to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// Decodes a row into `out` (`dim` long). A scale that is negative or not finite, or a q8
    /// code of −128 (writers never make one), is an error.
    pub fn decode_into(&self, row: &[u8], out: &mut [f32]) -> Result<(), FormatError> {
        if row.len() != self.row_bytes() || out.len() != self.dim as usize {
            return Err(FormatError::invalid(
                "features",
                format!(
                    "a {}-byte row into {} values; the layout has {}-byte rows of {}",
                    row.len(),
                    out.len(),
                    self.row_bytes(),
                    self.dim
                ),
            ));
        }
        match self.codec {
            FeatureCodec::Q8 => {
                let scale = f32::from_le_bytes(row[..4].try_into().expect("4 bytes"));
                if !(scale.is_finite() && scale >= 0.0) {
                    return Err(FormatError::invalid(
                        "features",
                        format!("q8 scale {scale} is not a finite non-negative number"),
                    ));
                }
                for (o, &b) in out.iter_mut().zip(&row[4..]) {
                    let q = b as i8;
                    if q == i8::MIN {
                        return Err(FormatError::invalid("features", "q8 code -128"));
                    }
                    *o = f32::from(q) * scale;
                }
            }
            FeatureCodec::F16 => {
                for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                    let v = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    if !v.is_finite() {
                        return Err(FormatError::invalid(
                            "features",
                            "an f16 value is not finite",
                        ));
                    }
                    *o = v;
                }
            }
        }
        Ok(())
    }
}

/// Cosine thresholds whose record counts a feature chunk keeps (FORMAT.md §6.2).
pub const COSINE_THRESHOLDS: [f64; 4] = [0.9999, 0.999, 0.99, 0.9];

/// The reconstruction of `x` (the teacher's vector) by `r` (in the teacher's space): the cosine,
/// `‖x − r‖²` and `‖x‖²`. The cosine of a zero vector with its (zero) reconstruction is 1.
pub fn reconstruction(x: &[f32], r: &[f32]) -> (f64, f64, f64) {
    let (mut xr, mut xx, mut rr, mut err) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(r) {
        let (a, b) = (f64::from(a), f64::from(b));
        xr += a * b;
        xx += a * a;
        rr += b * b;
        err += (a - b) * (a - b);
    }
    let cos = if xx == 0.0 && rr == 0.0 {
        1.0
    } else if xx == 0.0 || rr == 0.0 {
        0.0
    } else {
        xr / (xx.sqrt() * rr.sqrt())
    };
    (cos, err, xx)
}

/// What one stored vector adds to its chunk's sums (FORMAT.md §6.2): `[1, cos, ‖x − r‖², ‖x‖²,
/// then 1 for each of` [`COSINE_THRESHOLDS`] `the cosine is below]`.
pub fn feature_sums(cos: f64, err2: f64, norm2: f64) -> QualitySums {
    let below = |t: f64| f64::from(u8::from(cos < t));
    QualitySums::from_array([
        1.0,
        cos,
        err2,
        norm2,
        below(COSINE_THRESHOLDS[0]),
        below(COSINE_THRESHOLDS[1]),
        below(COSINE_THRESHOLDS[2]),
        below(COSINE_THRESHOLDS[3]),
    ])
}

/// [`feature_sums`] of `x` reconstructed by `r`.
pub fn reconstruction_sums(x: &[f32], r: &[f32]) -> QualitySums {
    let (cos, err2, norm2) = reconstruction(x, r);
    feature_sums(cos, err2, norm2)
}

/// How faithfully a feature head's stored vectors reconstruct the teacher's, measured by the
/// writer on every record against the teacher's own output (in its full `D` dimensions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureQuality {
    pub records: u64,
    /// Mean cosine between the teacher's vector and its reconstruction.
    pub mean_cosine: f64,
    /// Fraction of records whose cosine is below each of [`COSINE_THRESHOLDS`], in that order.
    pub cosine_below: Vec<f64>,
    /// `sqrt(Σ‖x − r‖² / Σ‖x‖²)`: the reconstruction error relative to the features' size,
    /// the same for every dimension's share (root mean square over records and dimensions).
    pub relative_rms_error: f64,
    /// `sqrt(Σ‖x − r‖² / (records · D))`: the root mean square error of one dimension.
    pub rms_error: f64,
}

impl FeatureQuality {
    /// The figures of `sums` (chunk sums in the order of [`reconstruction_sums`]) over vectors of
    /// `dim` dimensions.
    pub fn from_sums(s: &QualitySums, dim: u32) -> Self {
        let a = s.to_array();
        let n = a[0].max(1.0);
        FeatureQuality {
            records: a[0] as u64,
            mean_cosine: a[1] / n,
            cosine_below: a[4..].iter().map(|c| c / n).collect(),
            relative_rms_error: if a[3] > 0.0 {
                (a[2] / a[3]).sqrt()
            } else {
                0.0
            },
            rms_error: (a[2] / (n * f64::from(dim.max(1)))).sqrt(),
        }
    }

    /// The largest of [`COSINE_THRESHOLDS`] that at least 99% of records reach: a lower bound on
    /// the 1st percentile of the cosine (`None` when more than 1% are below all of them).
    pub fn p1_at_least(&self) -> Option<f64> {
        COSINE_THRESHOLDS
            .iter()
            .zip(&self.cosine_below)
            .find(|(_, below)| **below <= 0.01)
            .map(|(t, _)| *t)
    }
}

/// One stored feature: a named `[N, D]` output of one teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureHead {
    /// Index of the teacher (in `teachers`) whose output it is.
    pub teacher: u32,
    /// The ONNX output's name.
    pub output: String,
    /// The output's dimensions `D`.
    pub dim: u32,
    /// Dimensions stored per record (`D`, or the basis's `d`).
    pub stored_dim: u32,
    /// The PCA basis the vectors were projected with (`d` coefficients stored), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<crate::basis::BasisRef>,
    /// The files of this head, one per label shard, tiling the same samples.
    pub shards: Vec<ShardEntry>,
    pub quality: FeatureQuality,
}

/// The manifest's `features` section (FORMAT.md §6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub codec: FeatureCodec,
    pub heads: Vec<FeatureHead>,
}

/// File name of head `head`'s features for `samples`: `features-H-SSSSSSSSSS-EEEEEEEEEE.dlf`.
pub fn feature_file_name(head: usize, samples: crate::SampleRange) -> String {
    format!(
        "features-{head}-{:010}-{:010}.dlf",
        samples.start, samples.end
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(codec: FeatureCodec, v: &[f32]) -> Vec<f32> {
        let l = FeatureLayout::new(v.len() as u32, codec).unwrap();
        let mut row = vec![0u8; l.row_bytes()];
        l.encode(v, &mut row).unwrap();
        let mut out = vec![0f32; v.len()];
        l.decode_into(&row, &mut out).unwrap();
        out
    }

    #[test]
    fn q8_error_is_at_most_half_a_step_of_the_vectors_scale() {
        let v: Vec<f32> = (0..300)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
            .collect();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let r = roundtrip(FeatureCodec::Q8, &v);
        for (a, b) in v.iter().zip(&r) {
            assert!((a - b).abs() <= max / 127.0 * 0.5 + 1e-6, "{a} {b}");
        }
        // The largest magnitude is exact.
        let i = v.iter().position(|x| x.abs() == max).unwrap();
        assert!((r[i] - v[i]).abs() < 1e-5 * max);
        let q = reconstruction_sums(&v, &r).to_array();
        assert!(q[1] > 0.9999, "cosine {}", q[1]);
    }

    #[test]
    fn f16_rounds_to_half_precision_and_zero_vectors_stay_zero() {
        let v = [1.0f32, -2.5, 1e-3, 300.25, 0.0];
        let r = roundtrip(FeatureCodec::F16, &v);
        for (a, b) in v.iter().zip(&r) {
            assert_eq!(*b, half::f16::from_f32(*a).to_f32());
        }
        let z = roundtrip(FeatureCodec::Q8, &[0.0; 8]);
        assert_eq!(z, vec![0.0; 8]);
        assert_eq!(reconstruction_sums(&[0.0; 8], &z).to_array()[1], 1.0);
    }

    #[test]
    fn bad_vectors_and_rows_are_refused() {
        let l = FeatureLayout::new(3, FeatureCodec::Q8).unwrap();
        let mut row = vec![0u8; l.row_bytes()];
        let e = l.encode(&[1.0, f32::NAN, 0.0], &mut row).unwrap_err();
        assert!(e.to_string().contains("dimension 1"), "{e}");
        assert!(l.encode(&[1.0, 2.0], &mut row).is_err());
        row[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert!(l.decode_into(&row, &mut [0.0; 3]).is_err());
        row[..4].copy_from_slice(&1.0f32.to_le_bytes());
        row[5] = 0x80;
        assert!(l.decode_into(&row, &mut [0.0; 3]).is_err());
        assert!(FeatureLayout::new(0, FeatureCodec::F16).is_err());
        assert!(FeatureLayout::new(MAX_FEATURE_DIM + 1, FeatureCodec::F16).is_err());
    }

    #[test]
    fn quality_from_sums() {
        let mut s = QualitySums::default();
        s.add(&reconstruction_sums(&[1.0, 0.0], &[1.0, 0.0]));
        s.add(&reconstruction_sums(&[1.0, 0.0], &[1.0, 1.0]));
        let q = FeatureQuality::from_sums(&s, 2);
        assert_eq!(q.records, 2);
        let c = 1.0 / 2f64.sqrt();
        assert!((q.mean_cosine - (1.0 + c) / 2.0).abs() < 1e-12);
        assert_eq!(q.cosine_below, vec![0.5, 0.5, 0.5, 0.5]);
        assert!((q.relative_rms_error - (1.0f64 / 2.0).sqrt()).abs() < 1e-12);
        assert!((q.rms_error - (1.0f64 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(q.p1_at_least(), None);
    }
}
