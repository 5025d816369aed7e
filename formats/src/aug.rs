//! The realized augmentation of one record, and its fixed-size codec.
//!
//! This module only describes *what was done* to a sample: sampling parameters from a recipe and
//! applying them to pixels live elsewhere. Every field holds the realized value (pixel boxes, the
//! quantized mixup λ), so a reader replays a record without drawing a single random number.
//!
//! Order of application (the contract `apply` implements): each source image (primary, and the
//! mix partner if any) is cropped to its box and resized to the output size, then flipped; the two
//! are mixed (mixup blends, cutmix pastes the partner's region); the cutout box is erased last.

use crate::error::FormatError;

/// Bytes of one encoded [`AugParams`].
pub const AUG_BYTES: usize = 39;

const F_CROP: u8 = 1 << 0;
const F_FLIP: u8 = 1 << 1;
const F_CUTOUT: u8 = 1 << 2;
const F_MIXUP: u8 = 1 << 3;
const F_CUTMIX: u8 = 1 << 4;
const F_PARTNER_CROP: u8 = 1 << 5;
const F_PARTNER_FLIP: u8 = 1 << 6;
const F_RESERVED: u8 = 1 << 7;

/// An axis-aligned pixel box: left, top, width, height.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PixelBox {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
}

impl PixelBox {
    /// A box from its left, top, width and height.
    pub const fn new(x: u16, y: u16, w: u16, h: u16) -> Self {
        PixelBox { x, y, w, h }
    }

    /// Number of pixels covered.
    pub fn area(&self) -> u32 {
        u32::from(self.w) * u32::from(self.h)
    }

    /// Whether the box lies inside a `width` × `height` image.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        u32::from(self.x) + u32::from(self.w) <= width
            && u32::from(self.y) + u32::from(self.h) <= height
    }

    fn put(&self, out: &mut [u8]) {
        for (i, v) in [self.x, self.y, self.w, self.h].into_iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn get(b: &[u8]) -> Self {
        let v = |i: usize| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
        PixelBox::new(v(0), v(1), v(2), v(3))
    }
}

/// How the partner image is mixed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum MixKind {
    /// Pixel blend `λ·primary + (1−λ)·partner`, λ = `lambda_q / 65535`.
    Mixup { lambda_q: u16 },
    /// The partner's pixels inside `region` (output coordinates) replace the primary's; the
    /// primary's weight is `1 − area(region) / (out_w·out_h)`.
    Cutmix { region: PixelBox },
}

/// The second image of a mixed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mix {
    /// Sample index of the partner image in the same dataset split.
    pub partner: u32,
    /// The partner's source crop (`None`: the whole image).
    pub partner_crop: Option<PixelBox>,
    /// Whether the partner is flipped horizontally.
    pub partner_flip: bool,
    pub kind: MixKind,
}

impl Mix {
    /// Weight of the primary image's label for an output of `out_w` × `out_h` pixels.
    pub fn primary_weight(&self, out_w: u32, out_h: u32) -> f32 {
        match self.kind {
            MixKind::Mixup { lambda_q } => f32::from(lambda_q) / 65535.0,
            MixKind::Cutmix { region } => 1.0 - region.area() as f32 / (out_w * out_h) as f32,
        }
    }
}

/// The realized augmentation of one record. `Default` is "no augmentation".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AugParams {
    /// Source crop of the primary image (`None`: the whole image).
    pub crop: Option<PixelBox>,
    /// Horizontal flip of the primary image.
    pub flip: bool,
    /// Erased box in output coordinates, applied after mixing.
    pub cutout: Option<PixelBox>,
    /// Mixup or cutmix with a partner image.
    pub mix: Option<Mix>,
}

impl AugParams {
    /// Writes the fixed-size little-endian encoding (see FORMAT.md, "AugParams").
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..AUG_BYTES];
        out.fill(0);
        let mut flags = 0u8;
        if let Some(c) = self.crop {
            flags |= F_CROP;
            c.put(&mut out[1..9]);
        }
        if self.flip {
            flags |= F_FLIP;
        }
        if let Some(c) = self.cutout {
            flags |= F_CUTOUT;
            c.put(&mut out[9..17]);
        }
        if let Some(m) = self.mix {
            out[17..21].copy_from_slice(&m.partner.to_le_bytes());
            if let Some(c) = m.partner_crop {
                flags |= F_PARTNER_CROP;
                c.put(&mut out[21..29]);
            }
            if m.partner_flip {
                flags |= F_PARTNER_FLIP;
            }
            match m.kind {
                MixKind::Mixup { lambda_q } => {
                    flags |= F_MIXUP;
                    out[29..31].copy_from_slice(&lambda_q.to_le_bytes());
                }
                MixKind::Cutmix { region } => {
                    flags |= F_CUTMIX;
                    region.put(&mut out[31..39]);
                }
            }
        }
        out[0] = flags;
    }

    /// Reads the encoding back. Strict: reserved bits, both mix kinds at once, and bytes of absent
    /// fields that are not zero are errors, so garbage is never mistaken for parameters.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < AUG_BYTES {
            return Err(FormatError::Truncated {
                what: "aug params",
                expected: AUG_BYTES,
                got: b.len(),
            });
        }
        let flags = b[0];
        let has = |f: u8| flags & f != 0;
        if has(F_RESERVED) {
            return Err(FormatError::invalid("aug.flags", "reserved bit 7 is set"));
        }
        if has(F_MIXUP) && has(F_CUTMIX) {
            return Err(FormatError::invalid(
                "aug.flags",
                "both mixup and cutmix are set",
            ));
        }
        let mixed = has(F_MIXUP) || has(F_CUTMIX);
        if !mixed && (has(F_PARTNER_CROP) || has(F_PARTNER_FLIP)) {
            return Err(FormatError::invalid(
                "aug.flags",
                "partner crop or flip set without a mix",
            ));
        }
        let zero = |range: std::ops::Range<usize>, field: &str| {
            if b[range].iter().any(|&x| x != 0) {
                Err(FormatError::invalid(
                    format!("aug.{field}"),
                    "bytes of an absent field are not zero",
                ))
            } else {
                Ok(())
            }
        };
        let field = |f: u8, range: std::ops::Range<usize>, name: &str| {
            if has(f) {
                Ok(Some(PixelBox::get(&b[range])))
            } else {
                zero(range, name).map(|_| None)
            }
        };
        let crop = field(F_CROP, 1..9, "crop")?;
        let cutout = field(F_CUTOUT, 9..17, "cutout")?;
        let partner_crop = field(F_PARTNER_CROP, 21..29, "partner_crop")?;
        if !has(F_MIXUP) {
            zero(29..31, "lambda")?;
        }
        let region = field(F_CUTMIX, 31..39, "cutmix")?;
        let mix = if mixed {
            let partner = u32::from_le_bytes([b[17], b[18], b[19], b[20]]);
            let kind = match region {
                Some(region) => MixKind::Cutmix { region },
                None => MixKind::Mixup {
                    lambda_q: u16::from_le_bytes([b[29], b[30]]),
                },
            };
            Some(Mix {
                partner,
                partner_crop,
                partner_flip: has(F_PARTNER_FLIP),
                kind,
            })
        } else {
            zero(17..21, "partner")?;
            None
        };
        Ok(AugParams {
            crop,
            flip: has(F_FLIP),
            cutout,
            mix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> AugParams {
        AugParams {
            crop: Some(PixelBox::new(3, 4, 200, 180)),
            flip: true,
            cutout: Some(PixelBox::new(10, 11, 12, 13)),
            mix: Some(Mix {
                partner: 123_456,
                partner_crop: Some(PixelBox::new(1, 2, 300, 301)),
                partner_flip: true,
                kind: MixKind::Cutmix {
                    region: PixelBox::new(5, 6, 7, 8),
                },
            }),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let a = full();
        let mut b = [0u8; AUG_BYTES];
        a.encode(&mut b);
        assert_eq!(b[0], 0b0111_0111);
        assert_eq!(&b[17..21], &123_456u32.to_le_bytes());
        assert_eq!(AugParams::decode(&b).unwrap(), a);
        let none = AugParams::default();
        none.encode(&mut b);
        assert_eq!(b, [0u8; AUG_BYTES]);
        assert_eq!(AugParams::decode(&b).unwrap(), none);
    }

    #[test]
    fn mixup_weight() {
        let m = Mix {
            partner: 0,
            partner_crop: None,
            partner_flip: false,
            kind: MixKind::Mixup { lambda_q: 65535 },
        };
        assert_eq!(m.primary_weight(10, 10), 1.0);
        let c = Mix {
            kind: MixKind::Cutmix {
                region: PixelBox::new(0, 0, 5, 4),
            },
            ..m
        };
        assert!((c.primary_weight(10, 10) - 0.8).abs() < 1e-7);
    }

    #[test]
    fn rejects_inconsistent_bytes() {
        let mut b = [0u8; AUG_BYTES];
        b[0] = F_MIXUP | F_CUTMIX;
        assert!(AugParams::decode(&b).is_err());
        b[0] = 0;
        b[5] = 1; // crop bytes without the crop flag
        assert!(AugParams::decode(&b).is_err());
        assert!(AugParams::decode(&b[..10]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
            if let Ok(a) = AugParams::decode(&bytes) {
                let mut again = [0u8; AUG_BYTES];
                a.encode(&mut again);
                prop_assert_eq!(&again[..], &bytes[..AUG_BYTES]);
            }
        }
    }
}
