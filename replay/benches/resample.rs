//! Resampling alone, one thread, images in memory (no decode): format version 1's 2×2 bilinear
//! (the old kernel) against Pillow's convolution, bilinear and bicubic, on the portable build
//! and on AVX2. Views: `light` random-resized crops (scale 0.08–1) of 500×375 photos and of
//! 12-megapixel ones to 224×224, and the 224 centre crop (crop_pct 0.875) of each.
//!
//! Run: `cargo bench -p formats --bench resample`. Prints a table: views per second (median of
//! 3 runs) and the ratio to the old kernel on the same views, measured in the same run. Pillow
//! itself is measured by `scripts/bench-resize.py` (the same views in Python).

use replay::apply::apply_u8;

use datasets::Image;
use formats::Interpolation;
use formats::Recipe;
use formats::view::{Kernel, ViewRule};
use replay::resample::Isa;
use replay::sampler::Sampler;
use std::hint::black_box;
use std::time::Instant;

/// Smooth colour fields, edges and noise (what a photo gives a resampler to do).
fn photo(w: u32, h: u32, seed: u32) -> Image {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = (s % 24) as u8;
            let edge = if (x / (w / 7).max(1) + y / (h / 5).max(1)).is_multiple_of(2) {
                40
            } else {
                0
            };
            data.push(((x * 255 / w) as u8 / 2).wrapping_add(n).wrapping_add(edge));
            data.push(((y * 255 / h) as u8 / 2).wrapping_add(n));
            data.push((((x + y) * 255 / (w + h)) as u8 / 2).wrapping_add(edge));
        }
    }
    Image::new(w, h, 3, data).unwrap()
}

struct Case {
    name: &'static str,
    images: Vec<Image>,
    recipe: Recipe,
    views: usize,
}

/// Views per second of `case` under `rule` on `isa` (forced through the thread's default when
/// `isa` is the detected one: `apply_u8` always takes the best).
fn rate(case: &Case, rule: &ViewRule, isa: Option<Isa>) -> f64 {
    let img0 = &case.images[0];
    let sampler = Sampler::new(&case.recipe, 0, case.images.len() as u32, 224, 224).unwrap();
    let dims = |i: u32| {
        let im = &case.images[i as usize];
        Ok((im.width, im.height))
    };
    let params: Vec<_> = (0..case.views)
        .map(|i| {
            let s = (i % case.images.len()) as u32;
            (s, sampler.sample(i as u32, s, &dims).unwrap())
        })
        .collect();
    let n = 3 * 224 * 224;
    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
    let t = Instant::now();
    for (s, p) in &params {
        let img = &case.images[*s as usize];
        match (isa, rule.kernel) {
            (Some(isa), Kernel::Pillow(f)) => {
                let c = p.crop.unwrap();
                let spans = match rule.center {
                    Some(pct) => {
                        let v =
                            replay::resample::center_view((img.width, img.height), (224, 224), pct)
                                .unwrap();
                        (v.xs, v.ys)
                    }
                    None => (
                        replay::resample::Span::whole(u32::from(c.x), u32::from(c.w), 224),
                        replay::resample::Span::whole(u32::from(c.y), u32::from(c.h), 224),
                    ),
                };
                replay::resample::resample(isa, f, img, spans.0, spans.1, p.flip, &mut a).unwrap();
            }
            _ => {
                apply_u8(rule, p, img, None, 224, 224, &mut a, &mut b).unwrap();
            }
        }
        black_box(&a);
    }
    let _ = img0;
    case.views as f64 / t.elapsed().as_secs_f64()
}

fn median3(mut f: impl FnMut() -> f64) -> f64 {
    let mut v = [f(), f(), f()];
    v.sort_by(f64::total_cmp);
    v[1]
}

fn main() {
    let small: Vec<Image> = (0..8).map(|i| photo(500, 375, i)).collect();
    let large: Vec<Image> = (0..2).map(|i| photo(4000, 3000, 100 + i)).collect();
    let cases = [
        Case {
            name: "500x375, light crops",
            images: small.clone(),
            recipe: Recipe::light(),
            views: 400,
        },
        Case {
            name: "500x375, centre 224/0.875",
            images: small,
            recipe: Recipe::center(0.875),
            views: 400,
        },
        Case {
            name: "4000x3000, light crops",
            images: large.clone(),
            recipe: Recipe::light(),
            views: 20,
        },
        Case {
            name: "4000x3000, centre 224/0.875",
            images: large,
            recipe: Recipe::center(0.875),
            views: 20,
        },
    ];
    let legacy = ViewRule {
        kernel: Kernel::Legacy,
        center: None,
    };
    let avx2 = Isa::Avx2.available();
    println!("\n## resampling alone, one thread, views of 224x224 per second (median of 3)");
    println!(
        "| views | 2x2 bilinear (format 1) | Pillow bilinear | vs 2x2 | Pillow bicubic | vs 2x2 | bicubic portable build | AVX2 / portable |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let old = median3(|| rate(case, &legacy, None));
        let mut rule = ViewRule::of_recipe(&case.recipe);
        rule.kernel = Kernel::Pillow(Interpolation::Bilinear);
        let bil = median3(|| rate(case, &rule, None));
        rule.kernel = Kernel::Pillow(Interpolation::Bicubic);
        let bic = median3(|| rate(case, &rule, None));
        let port = median3(|| rate(case, &rule, Some(Isa::Portable)));
        let simd = if avx2 {
            format!(
                "{:.2}x",
                median3(|| rate(case, &rule, Some(Isa::Avx2))) / port
            )
        } else {
            "no AVX2".into()
        };
        println!(
            "| {} | {old:.0} | {bil:.0} | {:.2}x | {bic:.0} | {:.2}x | {port:.0} | {simd} |",
            case.name,
            bil / old,
            bic / old
        );
    }
}
