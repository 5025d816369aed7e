//! "See what the teacher saw": renders records as a grid of their replayed augmented inputs,
//! each captioned with its (epoch, sample), how it was mixed, and the teacher's top-3 classes
//! with their probabilities — the quickest proof that replay and labels line up.

use datasets::Dataset;
use formats::MixKind;
use image::{Rgb, RgbImage};
use label_store::LabelStore;
use replay::apply::apply;

const GLYPH: u32 = 8;
const CAPTION_LINES: u32 = 4;

/// Draws `text` at (`x`, `y`) with the 8×8 bitmap font, clipped to `max_chars`.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, max_chars: usize, color: Rgb<u8>) {
    for (i, ch) in text.chars().take(max_chars).enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (x + i as u32 * GLYPH + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, color);
                    }
                }
            }
        }
    }
}

/// Renders the records `keys` ((epoch, sample) pairs) of `store`, replayed from `data` at
/// `out_w` × `out_h` (the teacher's input size), as one RGB image.
pub fn render_grid(
    store: &LabelStore,
    data: &dyn Dataset,
    keys: &[(u32, u32)],
    out_w: u32,
    out_h: u32,
) -> anyhow::Result<RgbImage> {
    if let Some(diff) = store.manifest.dataset.mismatch(data.fingerprint()) {
        anyhow::bail!(
            "the data is not what {} was labelled from: {diff}",
            store.dir.display()
        );
    }
    if keys.is_empty() {
        anyhow::bail!("no records to show");
    }
    if out_w == 0 || out_h == 0 || out_w > 4096 || out_h > 4096 {
        anyhow::bail!("input size {out_w}x{out_h} is not something to draw (1..=4096 per side)");
    }
    // Small inputs (MNIST, CIFAR) are enlarged so captions fit under them.
    let scale = 112u32.div_ceil(out_w.max(out_h)).max(1);
    let (tw, th) = (out_w * scale, out_h * scale);
    let tile_w = tw.max(14 * GLYPH) + 8;
    let tile_h = th + CAPTION_LINES * (GLYPH + 2) + 8;
    let cols = (keys.len() as f64).sqrt().ceil() as u32;
    let rows = (keys.len() as u32).div_ceil(cols);
    let mut img = RgbImage::from_pixel(cols * tile_w, rows * tile_h, Rgb([255, 255, 255]));
    let c = usize::from(data.channels());
    let mut buf = vec![0f32; c * (out_w * out_h) as usize];
    let rule = store.view_rule()?;
    let classes = store.manifest.classes as usize;
    let names = data.class_names();
    let max_chars = (tile_w / GLYPH) as usize;
    for (n, &(e, s)) in keys.iter().enumerate() {
        let rec = store.get(e, s)?;
        let primary = data.image(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        let partner = match rec.aug.mix {
            Some(m) if m.partner >= data.len() => {
                anyhow::bail!(
                    "record (epoch {e}, sample {s}) mixes with sample {}, beyond the dataset's {}",
                    m.partner,
                    data.len()
                );
            }
            Some(m) => Some(data.image(m.partner).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        apply(
            &rule,
            &rec.aug,
            &primary,
            partner.as_ref(),
            out_w,
            out_h,
            &mut buf,
        )
        .map_err(|err| anyhow::anyhow!("record (epoch {e}, sample {s}): {err}"))?;
        let (x0, y0) = (
            (n as u32 % cols) * tile_w + 4,
            (n as u32 / cols) * tile_h + 4,
        );
        let plane = (out_w * out_h) as usize;
        for y in 0..th {
            for x in 0..tw {
                let i = ((y / scale) * out_w + x / scale) as usize;
                let px = |ch: usize| (buf[ch.min(c - 1) * plane + i] * 255.0).round() as u8;
                img.put_pixel(x0 + x, y0 + y, Rgb([px(0), px(1), px(2)]));
            }
        }
        let how = match rec.aug.mix.map(|m| m.kind) {
            Some(MixKind::Mixup { lambda_q }) => {
                format!(" mixup {:.0}%", 100.0 * f32::from(lambda_q) / 65535.0)
            }
            Some(MixKind::Cutmix { .. }) => " cutmix".into(),
            None => String::new(),
        };
        let black = Rgb([0, 0, 0]);
        let mut ty = y0 + th + 2;
        draw_text(
            &mut img,
            x0,
            ty,
            &format!("e{e} #{s}{how}"),
            max_chars,
            Rgb([90, 90, 90]),
        );
        let probs = rec.label.probabilities(classes, 1.0);
        for (cls, p) in rec.label.indices.iter().zip(&probs.top).take(3) {
            ty += GLYPH + 2;
            let name = names
                .and_then(|v| v.get(*cls as usize).cloned())
                .unwrap_or_else(|| cls.to_string());
            let pct = format!(" {:.0}%", 100.0 * p);
            let room = max_chars.saturating_sub(pct.len());
            let name: String = name.chars().take(room).collect();
            draw_text(&mut img, x0, ty, &format!("{name}{pct}"), max_chars, black);
        }
    }
    Ok(img)
}
