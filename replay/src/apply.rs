//! `apply`: the one implementation of turning (realized parameters, source images) into the
//! augmented input, called by the labelling stage and by the training stage alike.
//!
//! Bit-identical everywhere: crops are resized in integer arithmetic into u8 ([`crate::resample`]:
//! Pillow's convolution, or format version 1's 2×2 bilinear for those stores), and the only float
//! work is a per-element `v / 255`, mixup's `λ·a + (1−λ)·b` and copies, each the same IEEE
//! operations in the same order for every element, so results do not depend on threads, SIMD
//! width or the machine. *Which* resize a record gets is a [`ViewRule`], derived from the
//! store's format version and recipe, never from the record.

use crate::error::ReplayError;
use crate::resample::{self, Isa, Span, legacy};
use datasets::Image;
use formats::Interpolation;
use formats::aug::{AugParams, MixKind, PixelBox};
use formats::view::{Kernel, ViewRule};

/// Augments `primary` (and `partner` when the record is mixed) into `out`, f32 CHW in [0, 1],
/// `channels × out_h × out_w` long. Normalization is the caller's. The same as
/// [`apply_u8`] followed by [`combine_into`], bit for bit (that is how it is computed).
pub fn apply(
    rule: &ViewRule,
    params: &AugParams,
    primary: &Image,
    partner: Option<&Image>,
    out_w: u32,
    out_h: u32,
    out: &mut [f32],
) -> Result<(), ReplayError> {
    let c = usize::from(primary.channels);
    let plane = out_w as usize * out_h as usize;
    if out.len() != c * plane || out_w == 0 || out_h == 0 {
        return Err(ReplayError::invalid(
            "output",
            format!("buffer of {} floats for {c}x{out_h}x{out_w}", out.len()),
        ));
    }
    SCRATCH.with(|scratch| {
        let (a, b) = &mut *scratch.borrow_mut();
        a.resize(c * plane, 0);
        b.resize(c * plane, 0);
        let lambda = apply_u8(rule, params, primary, partner, out_w, out_h, a, b)?;
        combine_into(a, lambda.map(|l| (b.as_slice(), l)), out);
        Ok(())
    })
}

thread_local! {
    /// Per-thread u8 buffers of the resized primary and partner (an output is about 150 KB at
    /// 224 px: too large to allocate for every record).
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// The augmented input as u8 pixels, the form a batch crosses to a device in (a quarter of
/// f32): `pixels` (CHW, `channels × out_h × out_w`) gets the primary's crop with cutmix and
/// cutout applied, which is the whole input unless the record is a mixup; for a mixup it
/// returns `Some(λ)` and `partner_out` holds the partner's crop (cutout applied to both), and
/// the input is `λ·a/255 + (1−λ)·b/255`, which [`combine_into`] computes. `partner_out` is
/// untouched otherwise.
#[allow(clippy::too_many_arguments)] // the rule, the record, two sources, a size, two outputs
pub fn apply_u8(
    rule: &ViewRule,
    params: &AugParams,
    primary: &Image,
    partner: Option<&Image>,
    out_w: u32,
    out_h: u32,
    pixels: &mut [u8],
    partner_out: &mut [u8],
) -> Result<Option<f32>, ReplayError> {
    let c = usize::from(primary.channels);
    let plane = out_w as usize * out_h as usize;
    if pixels.len() != c * plane || partner_out.len() != c * plane || out_w == 0 || out_h == 0 {
        return Err(ReplayError::invalid(
            "output",
            format!(
                "buffers of {} and {} bytes for {c}x{out_h}x{out_w}",
                pixels.len(),
                partner_out.len()
            ),
        ));
    }
    render(
        rule,
        primary,
        params.crop,
        params.flip,
        out_w,
        out_h,
        pixels,
        "crop",
    )?;
    let mut lambda = None;
    if let Some(m) = &params.mix {
        let p = partner.ok_or_else(|| {
            ReplayError::invalid(
                "mix",
                format!(
                    "the record mixes with sample {} but no partner image was given",
                    m.partner
                ),
            )
        })?;
        if p.channels != primary.channels {
            return Err(ReplayError::invalid(
                "mix",
                format!(
                    "partner has {} channels, the primary {}",
                    p.channels, primary.channels
                ),
            ));
        }
        render(
            rule,
            p,
            m.partner_crop,
            m.partner_flip,
            out_w,
            out_h,
            partner_out,
            "partner_crop",
        )?;
        match m.kind {
            MixKind::Mixup { lambda_q } => lambda = Some(f32::from(lambda_q) / 65535.0),
            MixKind::Cutmix { region } => {
                check_box(&region, out_w, out_h, "cutmix region")?;
                for_box(&region, out_w, c, plane, |i| pixels[i] = partner_out[i]);
            }
        }
    }
    if let Some(cut) = &params.cutout {
        check_box(cut, out_w, out_h, "cutout")?;
        // Zero in both sources: λ·0 + (1−λ)·0 is the 0 a cutout writes after mixing.
        for_box(cut, out_w, c, plane, |i| {
            pixels[i] = 0;
            if lambda.is_some() {
                partner_out[i] = 0;
            }
        });
    }
    Ok(lambda)
}

/// The f32 input of [`apply_u8`]'s pixels: `v / 255`, or for a mixup (`mix` = the partner's
/// pixels and λ) `λ·(a/255) + (1−λ)·(b/255)`, each element by these IEEE operations in this
/// order (a device that does the same gets the same bits). On x86-64 with AVX2 the same
/// operations run eight lanes wide (IEEE division, product and sum are exact per lane, and
/// nothing is fused: the bits do not change).
pub fn combine_into(pixels: &[u8], mix: Option<(&[u8], f32)>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::resample::Isa::detect() == crate::resample::Isa::Avx2 {
        // SAFETY: AVX2 is present (checked at run time).
        unsafe { combine_avx2(pixels, mix, out) };
        return;
    }
    combine(pixels, mix, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn combine_avx2(pixels: &[u8], mix: Option<(&[u8], f32)>, out: &mut [f32]) {
    combine(pixels, mix, out)
}

#[inline(always)]
fn combine(pixels: &[u8], mix: Option<(&[u8], f32)>, out: &mut [f32]) {
    match mix {
        None => {
            for (o, &v) in out.iter_mut().zip(pixels) {
                *o = f32::from(v) / 255.0;
            }
        }
        Some((partner, lam)) => {
            let rest = 1.0 - lam;
            for ((o, &a), &b) in out.iter_mut().zip(pixels).zip(partner) {
                *o = lam * (f32::from(a) / 255.0) + rest * (f32::from(b) / 255.0);
            }
        }
    }
}

fn check_box(b: &PixelBox, w: u32, h: u32, what: &str) -> Result<(), ReplayError> {
    if b.fits(w, h) {
        Ok(())
    } else {
        Err(ReplayError::invalid(
            what,
            format!(
                "box ({},{}) {}x{} lies outside the {w}x{h} output",
                b.x, b.y, b.w, b.h
            ),
        ))
    }
}

/// Calls `f` with the CHW index of every element inside `b`.
fn for_box(b: &PixelBox, out_w: u32, c: usize, plane: usize, mut f: impl FnMut(usize)) {
    for ch in 0..c {
        for y in b.y..b.y + b.h {
            let row = ch * plane + usize::from(y) * out_w as usize;
            for x in b.x..b.x + b.w {
                f(row + usize::from(x));
            }
        }
    }
}

/// One source's crop (or, under a centre-crop rule, the centre of the resized whole image),
/// resized to `out_w` × `out_h`, flipped if asked, u8 CHW into `dst`.
#[allow(clippy::too_many_arguments)]
fn render(
    rule: &ViewRule,
    img: &Image,
    crop: Option<PixelBox>,
    flip: bool,
    out_w: u32,
    out_h: u32,
    dst: &mut [u8],
    what: &str,
) -> Result<(), ReplayError> {
    let f = match rule.kernel {
        Kernel::Legacy => {
            let b = resample::source_box(img, crop, what)?;
            legacy::resize_box(img, b, flip, out_w, out_h, dst);
            return Ok(());
        }
        Kernel::Pillow(f) => f,
    };
    let (xs, ys) = match rule.center {
        Some(pct) => {
            let v = resample::center_view((img.width, img.height), (out_w, out_h), pct)?;
            if v.pad == (0, 0) && v.xs.count == out_w && v.ys.count == out_h {
                (v.xs, v.ys)
            } else {
                return render_padded(f, img, &v, flip, out_w, out_h, dst);
            }
        }
        None => {
            let b = resample::source_box(img, crop, what)?;
            (
                Span::whole(u32::from(b.x), u32::from(b.w), out_w),
                Span::whole(u32::from(b.y), u32::from(b.h), out_h),
            )
        }
    };
    resample::resample(Isa::detect(), f, img, xs, ys, flip, dst)
}

/// A centre crop larger than the resized image on some axis: the resized region placed at
/// the view's padding inside zeros (torchvision's `CenterCrop` pads), then flipped if asked.
fn render_padded(
    f: Interpolation,
    img: &Image,
    v: &resample::CenterView,
    flip: bool,
    out_w: u32,
    out_h: u32,
    dst: &mut [u8],
) -> Result<(), ReplayError> {
    let c = usize::from(img.channels);
    let (kw, kh) = (v.xs.count as usize, v.ys.count as usize);
    let mut region = vec![0u8; c * kw * kh];
    resample::resample(Isa::detect(), f, img, v.xs, v.ys, false, &mut region)?;
    dst.fill(0);
    let (ow, plane) = (out_w as usize, out_w as usize * out_h as usize);
    let (px, py) = (v.pad.0 as usize, v.pad.1 as usize);
    for ch in 0..c {
        for y in 0..kh {
            let src = &region[(ch * kh + y) * kw..][..kw];
            let row = &mut dst[ch * plane + (py + y) * ow..][..ow];
            row[px..px + kw].copy_from_slice(src);
            if flip {
                row.reverse();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build of the f32 conversion gives the portable build's bits, mixed or not.
    #[test]
    fn combine_is_the_same_bits_on_every_build() {
        let a: Vec<u8> = (0..1031u32).map(|i| (i * 37 % 256) as u8).collect();
        let b: Vec<u8> = (0..1031u32).map(|i| (i * 91 % 256) as u8).collect();
        for mix in [
            None,
            Some((b.as_slice(), 0.3f32)),
            Some((b.as_slice(), 1.0)),
        ] {
            let (mut fast, mut plain) = (vec![0f32; a.len()], vec![0f32; a.len()]);
            combine_into(&a, mix, &mut fast);
            combine(&a, mix, &mut plain);
            assert!(
                fast.iter()
                    .zip(&plain)
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
            if mix.is_none() {
                assert_eq!(fast[5].to_bits(), (f32::from(a[5]) / 255.0).to_bits());
            }
        }
    }
    use formats::aug::Mix;

    const BILINEAR: ViewRule = ViewRule {
        kernel: Kernel::Pillow(Interpolation::Bilinear),
        center: None,
    };

    fn gradient(w: u32, h: u32, c: u8) -> Image {
        let data = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    (0..c).map(move |ch| ((x * 7 + y * 3 + u32::from(ch) * 50) % 256) as u8)
                })
            })
            .collect();
        Image::new(w, h, c, data).unwrap()
    }

    #[test]
    fn identity_resize_is_exact() {
        let img = gradient(9, 7, 3);
        let mut out = vec![0.0; 3 * 9 * 7];
        apply(&BILINEAR, &AugParams::default(), &img, None, 9, 7, &mut out).unwrap();
        for y in 0..7 {
            for x in 0..9 {
                for ch in 0..3 {
                    let want = f32::from(img.at(x, y, ch)) / 255.0;
                    assert_eq!(out[(ch as usize * 7 + y as usize) * 9 + x as usize], want);
                }
            }
        }
    }

    #[test]
    fn flip_crop_mix_cutout_by_hand() {
        let img = gradient(8, 8, 1);
        // Crop the 4x4 box at (2, 2) to 4x4 (exact copy), flipped.
        let p = AugParams {
            crop: Some(PixelBox::new(2, 2, 4, 4)),
            flip: true,
            ..Default::default()
        };
        let mut out = vec![0.0; 16];
        apply(&BILINEAR, &p, &img, None, 4, 4, &mut out).unwrap();
        assert_eq!(out[0], f32::from(img.at(5, 2, 0)) / 255.0);
        assert_eq!(out[3], f32::from(img.at(2, 2, 0)) / 255.0);
        // Mixup of a constant 200 image with a constant 100 image at λ = 1/4 (quantized).
        let a = Image::new(4, 4, 1, vec![200; 16]).unwrap();
        let b = Image::new(4, 4, 1, vec![100; 16]).unwrap();
        let q = 16384u16;
        let lam = f32::from(q) / 65535.0;
        let p = AugParams {
            mix: Some(Mix {
                partner: 1,
                partner_crop: None,
                partner_flip: false,
                kind: MixKind::Mixup { lambda_q: q },
            }),
            cutout: Some(PixelBox::new(0, 0, 1, 1)),
            ..Default::default()
        };
        apply(&BILINEAR, &p, &a, Some(&b), 4, 4, &mut out).unwrap();
        assert_eq!(out[0], 0.0, "cutout is applied last");
        assert_eq!(
            out[5],
            lam * (200.0 / 255.0) + (1.0 - lam) * (100.0 / 255.0)
        );
        // Cutmix: the region takes the partner's pixels.
        let p = AugParams {
            mix: Some(Mix {
                kind: MixKind::Cutmix {
                    region: PixelBox::new(1, 1, 2, 2),
                },
                ..p.mix.unwrap()
            }),
            ..Default::default()
        };
        apply(&BILINEAR, &p, &a, Some(&b), 4, 4, &mut out).unwrap();
        assert_eq!(out[0], 200.0 / 255.0);
        assert_eq!(out[5], 100.0 / 255.0);
        assert_eq!(out[15], 200.0 / 255.0);
    }

    #[test]
    fn upscale_interpolates_between_pixels() {
        // 2x1 → 4x1: half-pixel centres give 0.25/0.75 mixes at the inner pixels, with either
        // kernel (Pillow's drops the taps past the edge and renormalizes: the edge repeats).
        let img = Image::new(2, 1, 1, vec![0, 255]).unwrap();
        let legacy = ViewRule {
            kernel: Kernel::Legacy,
            center: None,
        };
        for rule in [BILINEAR, legacy] {
            let mut out = vec![0.0; 4];
            apply(&rule, &AugParams::default(), &img, None, 4, 1, &mut out).unwrap();
            let v: Vec<u8> = out.iter().map(|x| (x * 255.0).round() as u8).collect();
            assert_eq!(v, vec![0, 64, 191, 255], "{rule:?}");
        }
    }

    #[test]
    fn centre_crops_pad_where_the_crop_is_wider() {
        // A 4x8 portrait to a 6x2 output at crop_pct 1: shorter side 2, so 2x4; the 6-wide
        // crop pads 2 zero columns left and 2 right (torchvision's CenterCrop), rows 1..3.
        let img = Image::new(4, 8, 1, vec![200; 32]).unwrap();
        let rule = ViewRule {
            kernel: Kernel::Pillow(Interpolation::Bilinear),
            center: Some(1.0),
        };
        let (mut a, mut b) = (vec![9u8; 12], vec![0u8; 12]);
        apply_u8(
            &rule,
            &AugParams::default(),
            &img,
            None,
            6,
            2,
            &mut a,
            &mut b,
        )
        .unwrap();
        assert_eq!(a, [0, 0, 200, 200, 0, 0, 0, 0, 200, 200, 0, 0]);
    }

    #[test]
    fn bad_boxes_are_errors() {
        let img = gradient(8, 8, 1);
        let mut out = vec![0.0; 16];
        let p = AugParams {
            crop: Some(PixelBox::new(6, 0, 4, 4)),
            ..Default::default()
        };
        let e = apply(&BILINEAR, &p, &img, None, 4, 4, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("crop") && e.contains("outside the 8x8 image"),
            "{e}"
        );
        let p = AugParams {
            cutout: Some(PixelBox::new(3, 3, 2, 2)),
            ..Default::default()
        };
        assert!(apply(&BILINEAR, &p, &img, None, 4, 4, &mut out).is_err());
        let p = AugParams {
            mix: Some(Mix {
                partner: 3,
                partner_crop: None,
                partner_flip: false,
                kind: MixKind::Mixup { lambda_q: 1 },
            }),
            ..Default::default()
        };
        let e = apply(&BILINEAR, &p, &img, None, 4, 4, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample 3"), "{e}");
        assert!(
            apply(
                &BILINEAR,
                &AugParams::default(),
                &img,
                None,
                4,
                4,
                &mut out[..3]
            )
            .is_err()
        );
    }
}
