//! Augmentation: bit-identical replay across runs and thread counts, recipe statistics, partner
//! blocks, recipe files and mixed labels.

use datasets::DataError;
use datasets::Image;
use formats::AugParams;
use formats::Recipe;
use formats::view::ViewRule;
use formats::{AUG_BYTES, MixKind};
use replay::apply::apply;
use replay::sampler::{MixedLabel, Sampler, load_recipe};
use xxhash_rust::xxh3::xxh3_64;

const N: u32 = 600;

/// Synthetic sources of varied sizes (20..60 px), 3 channels.
fn dims(i: u32) -> Result<(u32, u32), DataError> {
    Ok((20 + (i * 7) % 41, 20 + (i * 13) % 37))
}

fn image(i: u32) -> Image {
    let (w, h) = dims(i).unwrap();
    let data = (0..w * h * 3)
        .map(|k| ((k * 31 + i * 17) % 251) as u8)
        .collect();
    Image::new(w, h, 3, data).unwrap()
}

fn replay(sampler: &Sampler, epoch: u32, index: u32) -> u64 {
    let p = sampler.sample(epoch, index, &dims).unwrap();
    let partner = p.mix.map(|m| image(m.partner));
    let mut out = vec![0.0f32; 3 * 24 * 24];
    let rule = ViewRule::of_recipe(sampler.recipe());
    apply(&rule, &p, &image(index), partner.as_ref(), 24, 24, &mut out).unwrap();
    let mut bytes = vec![0u8; AUG_BYTES];
    p.encode(&mut bytes);
    bytes.extend(out.iter().flat_map(|v| v.to_bits().to_le_bytes()));
    xxh3_64(&bytes)
}

fn all_hashes(threads: usize) -> Vec<u64> {
    let mut recipe = Recipe::usi();
    recipe.cutout = Some(formats::recipe::CutoutConfig {
        prob: 0.5,
        scale: [0.02, 0.33],
        ratio: [0.3, 3.3],
    });
    let samplers: Vec<Sampler> = (0..2)
        .map(|seed| Sampler::new(&recipe, seed, N, 24, 24).unwrap())
        .collect();
    let keys: Vec<(usize, u32, u32)> = (0..2)
        .flat_map(|s| (0..3).flat_map(move |e| (0..N).map(move |i| (s, e, i))))
        .collect();
    let mut out = vec![0u64; keys.len()];
    std::thread::scope(|sc| {
        for (t, part) in out.chunks_mut(keys.len().div_ceil(threads)).enumerate() {
            let (keys, samplers) = (&keys, &samplers);
            sc.spawn(move || {
                let base = t * keys.len().div_ceil(threads);
                for (o, &(s, e, i)) in part.iter_mut().zip(&keys[base..]) {
                    *o = replay(&samplers[s], e, i);
                }
            });
        }
    });
    out
}

#[test]
fn replay_is_bit_identical_across_runs_and_threads() {
    let one = all_hashes(1);
    assert_eq!(one.len(), 3600);
    assert_eq!(one, all_hashes(8));
    assert_eq!(one, all_hashes(3));
    // Different seeds, epochs and samples really differ.
    let distinct: std::collections::HashSet<_> = one.iter().collect();
    assert_eq!(distinct.len(), one.len());
}

fn stats(recipe: &Recipe, n: u32) -> Vec<AugParams> {
    let s = Sampler::new(recipe, 9, n, 224, 224).unwrap();
    (0..n).map(|i| s.sample(0, i, &dims).unwrap()).collect()
}

fn near(x: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (x - want).abs() <= tol,
        "{what}: {x} not within {tol} of {want}"
    );
}

#[test]
fn usi_statistics_match_the_recipe() {
    let n = 20_000;
    let ps = stats(&Recipe::usi(), n);
    let frac =
        |f: &dyn Fn(&AugParams) -> bool| ps.iter().filter(|p| f(p)).count() as f64 / f64::from(n);
    near(frac(&|p| p.flip), 0.5, 0.02, "flip rate");
    near(frac(&|p| p.mix.is_some()), 1.0, 0.0, "mix rate");
    let cutmix = frac(&|p| matches!(p.mix.unwrap().kind, MixKind::Cutmix { .. }));
    near(cutmix, 0.5, 0.02, "cutmix share");
    let lambdas: Vec<f64> = ps
        .iter()
        .filter_map(|p| match p.mix.unwrap().kind {
            MixKind::Mixup { lambda_q } => Some(f64::from(lambda_q) / 65535.0),
            _ => None,
        })
        .collect();
    near(
        lambdas.iter().sum::<f64>() / lambdas.len() as f64,
        0.5,
        0.02,
        "mean mixup λ",
    );
    // Beta(0.8, 0.8) has variance 1/(4·2.6) = 0.0962.
    let var = lambdas.iter().map(|l| (l - 0.5).powi(2)).sum::<f64>() / lambdas.len() as f64;
    near(var, 0.0962, 0.01, "mixup λ variance");
    let areas: Vec<f64> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (w, h) = dims(i as u32).unwrap();
            f64::from(p.crop.unwrap().area()) / f64::from(w * h)
        })
        .collect();
    // Uniform scale alone would give 0.54; timm's rejection of crops that do not fit lowers it.
    // 0.412 is what an independent Python simulation of timm's `get_params` gives on these sizes.
    near(
        areas.iter().sum::<f64>() / areas.len() as f64,
        0.412,
        0.015,
        "mean crop area",
    );
    for (i, p) in ps.iter().enumerate() {
        let m = p.mix.unwrap();
        assert_ne!(m.partner, i as u32, "a record never mixes with itself");
        let (w, h) = dims(m.partner).unwrap();
        assert!(m.partner_crop.unwrap().fits(w, h));
        if let MixKind::Cutmix { region } = m.kind {
            assert!(region.fits(224, 224));
        }
    }
}

#[test]
fn recipe_files_and_their_errors() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("r.toml");
    std::fs::write(
        &path,
        r#"
name = "custom"
flip = 0.2
[cutout]
prob = 0.5
scale = [0.02, 0.2]
ratio = [0.5, 2.0]
[mix]
prob = 0.3
switch_prob = 1.0
mixup_alpha = 0.0
cutmix_alpha = 1.0
"#,
    )
    .unwrap();
    let r = load_recipe(path.to_str().unwrap()).unwrap();
    assert_eq!(r.name, "custom");
    assert!(r.crop.is_none());
    let n = 10_000;
    let ps = stats(&r, n);
    let frac =
        |f: &dyn Fn(&AugParams) -> bool| ps.iter().filter(|p| f(p)).count() as f64 / f64::from(n);
    near(frac(&|p| p.flip), 0.2, 0.02, "flip rate");
    near(frac(&|p| p.mix.is_some()), 0.3, 0.02, "mix rate");
    near(frac(&|p| p.cutout.is_some()), 0.5, 0.02, "cutout rate");
    assert!(ps.iter().all(|p| p.crop.is_none()));
    assert!(
        ps.iter()
            .filter_map(|p| p.mix)
            .all(|m| matches!(m.kind, MixKind::Cutmix { .. }))
    );

    std::fs::write(&path, "name = \"x\"\nflip = 1.5\n").unwrap();
    let e = load_recipe(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("flip") && e.contains("probability"), "{e}");
    std::fs::write(
        &path,
        "name = \"x\"\n[crop]\nscale = [0.5, 0.1]\nratio = [1.0, 1.0]\n",
    )
    .unwrap();
    let e = load_recipe(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("crop.scale"), "{e}");
    std::fs::write(&path, "name = \"x\"\nflp = 0.5\n").unwrap();
    let e = load_recipe(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("r.toml") && e.contains("flp"), "{e}");
    assert!(load_recipe("nonexistent-recipe.toml").is_err());
    let e = Sampler::new(&Recipe::usi(), 0, 10, 0, 224)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no pixels"), "{e}");
    for name in ["none", "light", "usi"] {
        assert_eq!(load_recipe(name).unwrap().name, name);
    }
}

#[test]
fn partner_blocks_keep_partners_in_the_block() {
    let mut r = Recipe::usi();
    r.mix.as_mut().unwrap().partner_block = Some(64);
    let n = 1000;
    let s = Sampler::new(&r, 5, n, 224, 224).unwrap();
    let order = s.plan().unwrap().order().to_vec();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
    assert_ne!(order, sorted, "actually shuffled");
    let pos: std::collections::HashMap<u32, usize> =
        order.iter().enumerate().map(|(p, &s)| (s, p)).collect();
    for e in 0..3 {
        for i in 0..n {
            let p = s.sample(e, i, &dims).unwrap().mix.unwrap().partner;
            assert_ne!(p, i);
            let (a, b) = (pos[&i], pos[&p]);
            // The last block (1000 = 15·64 + 40) is long enough to stay within itself.
            assert_eq!(
                a / 64,
                b / 64,
                "sample {i} (block {}) mixed with {p} (block {})",
                a / 64,
                b / 64
            );
        }
    }
    // Same seed, same permutation; another seed, another one.
    assert_eq!(
        Sampler::new(&r, 5, n, 224, 224)
            .unwrap()
            .plan()
            .unwrap()
            .order(),
        &order[..]
    );
    assert_ne!(
        Sampler::new(&r, 6, n, 224, 224)
            .unwrap()
            .plan()
            .unwrap()
            .order(),
        &order[..]
    );
}

#[test]
fn mixed_labels() {
    let r = Recipe::usi();
    let s = Sampler::new(&r, 1, N, 100, 100).unwrap();
    let mut dense = vec![0.0f32; 10];
    for i in 0..200 {
        let p = s.sample(0, i, &dims).unwrap();
        let m = MixedLabel::new(&p, 3, 7, 100, 100);
        m.dense_into(&mut dense);
        assert!((dense.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        match p.mix.unwrap().kind {
            MixKind::Cutmix { region } => {
                let want = 1.0 - region.area() as f32 / 10_000.0;
                assert_eq!(m.primary_weight, want);
                assert_eq!(dense[3], want);
            }
            MixKind::Mixup { lambda_q } => {
                assert_eq!(m.primary_weight, f32::from(lambda_q) / 65535.0)
            }
        }
    }
    let plain = MixedLabel::new(&AugParams::default(), 4, 0, 10, 10);
    plain.dense_into(&mut dense);
    assert_eq!(dense[4], 1.0);
}

#[test]
fn centre_crops_are_timms_evaluation_crop() {
    use formats::PixelBox;
    use formats::recipe::DEFAULT_CROP_PCT;
    use replay::sampler::center_box;
    // 500x375 at 224, crop_pct 0.875: resized to 341x256 (int(256·500/375)), columns 58..282
    // (round(58.5) = 58, half to even) and rows 16..240 kept: source columns
    // 85.04..413.49 → 85..413, rows 23.4..351.6 → 23..352.
    let b = center_box((500, 375), (224, 224), 0.875, 0).unwrap();
    assert_eq!((b.x, b.y, b.w, b.h), (85, 23, 328, 329));
    // crop_pct 1: resized to 298x224, columns 37..261 → source 62.1..437.9.
    let b = center_box((500, 375), (224, 224), 1.0, 0).unwrap();
    assert_eq!((b.x, b.y, b.w, b.h), (62, 0, 376, 375));
    // Portrait source, landscape output: shorter side 300 → 114, so 114x152; the 200 px
    // output is wider than 114 (torchvision pads: the box is the whole width), rows 26..126
    // of 152 → source 68.4..331.6.
    let b = center_box((300, 400), (200, 100), 0.875, 0).unwrap();
    assert_eq!((b.x, b.y, b.w, b.h), (0, 68, 300, 264));
    let r = load_recipe("center").unwrap();
    assert_eq!(r.center.as_ref().unwrap().crop_pct, DEFAULT_CROP_PCT);
    let s = Sampler::new(&r, 9, 10, 224, 224).unwrap();
    let dims = |_: u32| Ok((500, 375));
    for e in 0..3 {
        let p = s.sample(e, 4, &dims).unwrap();
        assert_eq!(p.crop, Some(PixelBox::new(85, 23, 328, 329)));
        assert!(!p.flip && p.mix.is_none() && p.cutout.is_none());
    }
    let mut bad = Recipe::center(0.875);
    bad.flip = 0.5;
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("takes no other"), "{e}");
    let e = Recipe::center(1.5).validate().unwrap_err().to_string();
    assert!(e.contains("crop_pct"), "{e}");
    // Older recipes serialize as before: no `center` key.
    assert!(
        !serde_json::to_string(&Recipe::usi())
            .unwrap()
            .contains("center")
    );
}
