//! The one record codec: a fixed-size row holding an [`AugParams`] and a [`SoftLabel`].
//!
//! Row layout (little-endian; FORMAT.md is the normative text):
//!
//! ```text
//! [ aug params: 39 B ][ k class indices: u16 or u32 ][ k−1 logit gaps ][ tail t(1), t(4) ]
//! ```
//!
//! Gaps are `−logits[i]` for `i = 1..k` (the top logit is 0 by definition and not stored); how
//! gaps and tail are written depends on the [`ValueCodec`].

use crate::aug::{AUG_BYTES, AugParams};
use crate::error::FormatError;
use crate::soft_label::SoftLabel;
use half::f16;

/// Step of the `q8` codec in nats: gaps are quantized to `q = round(gap / Q8_STEP)` clamped to
/// 255, so gaps up to 31.875 nats are kept to ±1/16 nat (a ratio of e^-31.9 ≈ 1.4e-14 to the top
/// class is far below any training signal). The row stores the differences of consecutive `q`
/// (non-negative, since logits are sorted), which are small and compress to about half the
/// bytes of `q` itself, with no loss: the decoder sums them back.
pub const Q8_STEP: f32 = 0.125;

/// Step of the `q8` codec's two tail numbers, in nats: `t(1)` is stored as its distance below
/// the k-th logit and `t(4)` as its distance below `t(1)`, each `round(d / Q8_TAIL_STEP)`
/// clamped to 255. A distance beyond 16 nats means a tail mass below e^-16 of the k-th class's.
pub const Q8_TAIL_STEP: f32 = 1.0 / 16.0;

/// How the top-k logit gaps are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueCodec {
    /// IEEE half precision, 2 bytes per gap.
    F16,
    /// One byte per gap, uniform step [`Q8_STEP`] nats.
    Q8,
}

impl ValueCodec {
    /// Codec id in shard footers.
    pub fn id(self) -> u8 {
        match self {
            ValueCodec::F16 => 1,
            ValueCodec::Q8 => 2,
        }
    }

    /// Codec from its footer id.
    pub fn from_id(id: u8) -> Result<Self, FormatError> {
        match id {
            1 => Ok(ValueCodec::F16),
            2 => Ok(ValueCodec::Q8),
            _ => Err(FormatError::invalid(
                "codec",
                format!("unknown codec id {id}"),
            )),
        }
    }

    /// Name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ValueCodec::F16 => "f16",
            ValueCodec::Q8 => "q8",
        }
    }

    fn gap_bytes(self) -> usize {
        match self {
            ValueCodec::F16 => 2,
            ValueCodec::Q8 => 1,
        }
    }

    fn tail_bytes(self) -> usize {
        match self {
            ValueCodec::F16 => 4,
            ValueCodec::Q8 => 2,
        }
    }
}

impl std::str::FromStr for ValueCodec {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(ValueCodec::F16),
            "q8" => Ok(ValueCodec::Q8),
            _ => Err(FormatError::invalid(
                "codec",
                format!("unknown codec {s:?} (expected f16 or q8)"),
            )),
        }
    }
}

/// One stored record: how the input was augmented and what the teacher said about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub aug: AugParams,
    pub label: SoftLabel,
}

/// The most classes a store may have (2²⁴, FORMAT.md §2). Readers keep dense per-class arrays
/// (a top-1 histogram, a rebuilt distribution), so an untrusted manifest must not be able to
/// claim billions; the largest public label spaces (ImageNet-21k, 21,841) are far below it.
pub const MAX_CLASSES: u32 = 1 << 24;

/// Everything needed to encode and decode rows of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLayout {
    pub classes: u32,
    pub k: u32,
    pub codec: ValueCodec,
}

impl RecordLayout {
    /// A layout for `classes` classes and top-`k`; errors when `classes` is 0 or above
    /// [`MAX_CLASSES`], or `k` is 0 or above `classes`. `classes` and `k` both 0 is the layout
    /// of a store without soft labels ([`RecordLayout::views_only`]).
    pub fn new(classes: u32, k: u32, codec: ValueCodec) -> Result<Self, FormatError> {
        if classes == 0 && k == 0 {
            return Ok(Self::views_only(codec));
        }
        if classes == 0 || classes > MAX_CLASSES {
            return Err(FormatError::invalid(
                "classes",
                format!("{classes} is not between 1 and {MAX_CLASSES}"),
            ));
        }
        if k == 0 || k > classes {
            return Err(FormatError::invalid(
                "k",
                format!("k = {k} must be between 1 and the class count {classes}"),
            ));
        }
        Ok(RecordLayout { classes, k, codec })
    }

    /// The rows of an embedding-only teacher's store: the realized view and no soft label
    /// (`classes` and `k` 0; the codec is recorded but stores nothing).
    pub fn views_only(codec: ValueCodec) -> Self {
        RecordLayout {
            classes: 0,
            k: 0,
            codec,
        }
    }

    /// Whether rows hold a soft label (not [`RecordLayout::views_only`]).
    pub fn has_labels(&self) -> bool {
        self.k > 0
    }

    /// Bytes per class index: 2 when every class fits a u16, else 4.
    pub fn index_bytes(&self) -> usize {
        if self.classes <= 1 << 16 { 2 } else { 4 }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        if !self.has_labels() {
            return AUG_BYTES;
        }
        let k = self.k as usize;
        AUG_BYTES
            + k * self.index_bytes()
            + (k - 1) * self.codec.gap_bytes()
            + self.codec.tail_bytes()
    }

    /// Encodes `rec` into `out` (exactly [`Self::row_bytes`] long), after checking the label fits
    /// this layout.
    pub fn encode(&self, rec: &Record, out: &mut [u8]) -> Result<(), FormatError> {
        let label = &rec.label;
        if label.k() != self.k as usize {
            return Err(FormatError::invalid(
                "k",
                format!(
                    "label has {} classes, the store keeps {}",
                    label.k(),
                    self.k
                ),
            ));
        }
        if !self.has_labels() {
            rec.aug.encode(&mut out[..AUG_BYTES]);
            return Ok(());
        }
        label.validate(self.classes as usize)?;
        rec.aug.encode(&mut out[..AUG_BYTES]);
        let mut at = AUG_BYTES;
        let ib = self.index_bytes();
        for &c in &label.indices {
            if ib == 2 {
                out[at..at + 2].copy_from_slice(&(c as u16).to_le_bytes());
            } else {
                out[at..at + 4].copy_from_slice(&c.to_le_bytes());
            }
            at += ib;
        }
        match self.codec {
            ValueCodec::F16 => {
                for &l in &label.logits[1..] {
                    let gap = (-l).min(f32::from(f16::MAX));
                    out[at..at + 2].copy_from_slice(&f16::from_f32(gap).to_le_bytes());
                    at += 2;
                }
                for t in label.tail {
                    let t = f16::from_f32(t.max(-f32::from(f16::MAX)));
                    out[at..at + 2].copy_from_slice(&t.to_le_bytes());
                    at += 2;
                }
            }
            ValueCodec::Q8 => {
                let quant = |d: f32, step: f32| (d / step).round().clamp(0.0, 255.0) as u8;
                let mut prev = 0u8;
                for &l in &label.logits[1..] {
                    let q = quant(-l, Q8_STEP).max(prev);
                    out[at] = q - prev;
                    prev = q;
                    at += 1;
                }
                let [t1, t4] = label.tail;
                // Relative to the *decoded* k-th logit (FORMAT.md §4.3), the only one a decoder has.
                let kth = -f32::from(prev) * Q8_STEP;
                out[at] = quant(kth - t1, Q8_TAIL_STEP);
                out[at + 1] = quant(t1 - t4, Q8_TAIL_STEP);
                at += 2;
            }
        }
        debug_assert_eq!(at, self.row_bytes());
        Ok(())
    }

    /// Decodes a row into `rec`, reusing its buffers. Checks indices and values, so a row from a
    /// foreign or damaged writer is an error, not a wrong label.
    pub fn decode_into(&self, row: &[u8], rec: &mut Record) -> Result<(), FormatError> {
        if row.len() < self.row_bytes() {
            return Err(FormatError::Truncated {
                what: "record row",
                expected: self.row_bytes(),
                got: row.len(),
            });
        }
        rec.aug = AugParams::decode(&row[..AUG_BYTES])?;
        let k = self.k as usize;
        let label = &mut rec.label;
        label.indices.clear();
        label.logits.clear();
        if !self.has_labels() {
            label.tail = [0.0; 2];
            return Ok(());
        }
        let mut at = AUG_BYTES;
        let ib = self.index_bytes();
        for _ in 0..k {
            let c = if ib == 2 {
                u32::from(u16::from_le_bytes([row[at], row[at + 1]]))
            } else {
                u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]])
            };
            label.indices.push(c);
            at += ib;
        }
        label.logits.push(0.0);
        match self.codec {
            ValueCodec::F16 => {
                for _ in 1..k {
                    let g = f16::from_le_bytes([row[at], row[at + 1]]).to_f32();
                    label.logits.push(-g);
                    at += 2;
                }
                for t in label.tail.iter_mut() {
                    *t = f16::from_le_bytes([row[at], row[at + 1]]).to_f32();
                    at += 2;
                }
            }
            ValueCodec::Q8 => {
                let mut q = 0u32;
                for i in 1..k {
                    q += u32::from(row[at]);
                    if q > 255 {
                        return Err(FormatError::invalid(
                            format!("logits[{i}]"),
                            "q8 gap deltas sum past 255",
                        ));
                    }
                    label.logits.push(-(q as f32) * Q8_STEP);
                    at += 1;
                }
                let kth = *label.logits.last().expect("k >= 1");
                let t1 = kth - f32::from(row[at]) * Q8_TAIL_STEP;
                let t4 = t1 - f32::from(row[at + 1]) * Q8_TAIL_STEP;
                label.tail = if self.classes == self.k {
                    [0.0, 0.0]
                } else {
                    [t1, t4]
                };
                at += 2;
            }
        }
        debug_assert_eq!(at, self.row_bytes());
        label.validate(self.classes as usize)
    }

    /// Decodes a row into a new record.
    pub fn decode(&self, row: &[u8]) -> Result<Record, FormatError> {
        let mut rec = Record::empty(self.k as usize);
        self.decode_into(row, &mut rec)?;
        Ok(rec)
    }
}

impl Record {
    /// A record with buffers for `k` classes, to be filled by [`RecordLayout::decode_into`].
    pub fn empty(k: usize) -> Self {
        Record {
            aug: AugParams::default(),
            label: SoftLabel {
                indices: Vec::with_capacity(k),
                logits: Vec::with_capacity(k),
                tail: [0.0; 2],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aug::{Mix, MixKind, PixelBox};

    fn record(classes: usize, k: usize) -> Record {
        let z: Vec<f32> = (0..classes)
            .map(|i| ((i * 7919) % 101) as f32 * 0.13 - 3.0)
            .collect();
        Record {
            aug: AugParams {
                crop: Some(PixelBox::new(1, 2, 3, 4)),
                flip: false,
                cutout: None,
                mix: Some(Mix {
                    partner: 9,
                    partner_crop: None,
                    partner_flip: true,
                    kind: MixKind::Mixup { lambda_q: 40000 },
                }),
            },
            label: SoftLabel::from_logits(&z, k).unwrap(),
        }
    }

    #[test]
    fn row_sizes() {
        let l = RecordLayout::new(1000, 10, ValueCodec::Q8).unwrap();
        assert_eq!(l.row_bytes(), 39 + 20 + 9 + 2);
        let l = RecordLayout::new(1000, 10, ValueCodec::F16).unwrap();
        assert_eq!(l.row_bytes(), 39 + 20 + 18 + 4);
        let l = RecordLayout::new(100_000, 5, ValueCodec::Q8).unwrap();
        assert_eq!(l.index_bytes(), 4);
        assert!(RecordLayout::new(10, 11, ValueCodec::Q8).is_err());
        assert!(RecordLayout::new(10, 0, ValueCodec::Q8).is_err());
        assert!(RecordLayout::new(0, 3, ValueCodec::Q8).is_err());
    }

    #[test]
    fn views_only_rows_hold_the_view_alone() {
        let l = RecordLayout::new(0, 0, ValueCodec::Q8).unwrap();
        assert_eq!(l, RecordLayout::views_only(ValueCodec::Q8));
        assert!(!l.has_labels());
        assert_eq!(l.row_bytes(), AUG_BYTES);
        let mut rec = record(20, 4);
        let mut row = vec![0u8; l.row_bytes()];
        // A record with a label is refused: the store keeps none.
        let e = l.encode(&rec, &mut row).unwrap_err().to_string();
        assert!(e.contains("the store keeps 0"), "{e}");
        rec.label = SoftLabel::none();
        l.encode(&rec, &mut row).unwrap();
        // Decoding into a record that held a label clears it.
        let mut back = record(20, 4);
        l.decode_into(&row, &mut back).unwrap();
        assert_eq!(back, rec);
        assert!(l.decode(&row[..AUG_BYTES - 1]).is_err());
    }

    #[test]
    fn round_trip_is_a_fixed_point() {
        for codec in [ValueCodec::F16, ValueCodec::Q8] {
            for (classes, k) in [(1000, 10), (10, 10), (70_000, 3)] {
                let l = RecordLayout::new(classes as u32, k as u32, codec).unwrap();
                let rec = record(classes, k);
                let mut row = vec![0; l.row_bytes()];
                l.encode(&rec, &mut row).unwrap();
                let back = l.decode(&row).unwrap();
                assert_eq!(back.aug, rec.aug);
                assert_eq!(back.label.indices, rec.label.indices);
                let mut again = vec![0; l.row_bytes()];
                l.encode(&back, &mut again).unwrap();
                assert_eq!(row, again, "{codec:?} {classes} {k}");
                let tol = if codec == ValueCodec::Q8 {
                    Q8_STEP / 2.0
                } else {
                    0.01
                };
                for (a, b) in back.label.logits.iter().zip(&rec.label.logits) {
                    assert!((a - b).abs() <= tol + 1e-6, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn q8_tail_is_relative_to_the_decoded_kth_logit() {
        // k-th gap 50 saturates at 255 · 0.125 = 31.875; the tail 5 nats below it must still
        // decode 5 nats below the *decoded* k-th logit, as FORMAT.md §4.3 says.
        let l = RecordLayout::new(10, 2, ValueCodec::Q8).unwrap();
        let rec = Record {
            aug: AugParams::default(),
            label: SoftLabel {
                indices: vec![0, 1],
                logits: vec![0.0, -50.0],
                tail: [-55.0, -56.0],
            },
        };
        let mut row = vec![0; l.row_bytes()];
        l.encode(&rec, &mut row).unwrap();
        let back = l.decode(&row).unwrap();
        assert_eq!(back.label.logits[1], -31.875);
        assert_eq!(
            back.label.tail,
            [-31.875 - 15.9375, -31.875 - 15.9375 - 1.0]
        );
    }

    #[test]
    fn rejects_bad_rows() {
        let l = RecordLayout::new(1000, 10, ValueCodec::Q8).unwrap();
        let rec = record(1000, 10);
        let mut row = vec![0; l.row_bytes()];
        l.encode(&rec, &mut row).unwrap();
        let mut bad = row.clone();
        bad[39..41].copy_from_slice(&5000u16.to_le_bytes());
        let e = l.decode(&bad).unwrap_err().to_string();
        assert!(e.contains("indices[0]"), "{e}");
        assert!(l.decode(&row[..10]).is_err());
        let small = RecordLayout::new(1000, 4, ValueCodec::Q8).unwrap();
        assert!(small.encode(&rec, &mut row).is_err(), "k mismatch");
    }
}
