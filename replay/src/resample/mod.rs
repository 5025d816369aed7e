//! Resampling: a box of a source image to an output size, the one place pixels are resized.
//!
//! The kernel of current stores is Pillow's convolution (its `Resample.c`, the resize that
//! torchvision's PIL path and timm feed the teachers users bring): a separable filter whose
//! support widens with the downscale factor (antialiasing), coefficients computed in f64,
//! normalized and rounded to 22-bit integers, a horizontal pass into a clipped u8 image, then a
//! vertical pass. Everything after the coefficients is integer arithmetic, so any evaluation
//! order — SIMD or not — gives the same bytes; the coefficients themselves follow Pillow's f64
//! operations in Pillow's order. FORMAT.md §4.1 specifies it. [`legacy`] keeps format version
//! 1's 2×2 bilinear, to replay those stores as they were written.
//!
//! Speed: coefficients are computed once per (axis, output size) call, only for the outputs
//! kept (a centre crop computes the central part of the resized image, nothing else). The
//! horizontal pass works on strips of eight source rows transposed so that each tap is one
//! multiply-add over whole vectors (channel × row lanes), or, when an output has many taps
//! (a strong shrink), on dot products over the interleaved source; the vertical pass runs over
//! whole rows. On x86-64 with AVX2 the same code is compiled a second time for AVX2 and chosen at
//! run time (32-bit products: the 22-bit coefficients need them); the bytes cannot differ, and
//! a test checks it. Buffers live per thread and are reused.

pub mod legacy;

use crate::error::ReplayError;
use datasets::Image;
use formats::Interpolation;
use formats::aug::PixelBox;

use std::cell::RefCell;

/// The filter's half-width and weights: the resampling math of an [`Interpolation`].
trait Filter {
    /// Half-width of the filter at scale 1, in source pixels.
    fn support(self) -> f64;
    /// The filter's weight at distance `x`.
    fn weight(self, x: f64) -> f64;
}

impl Filter for Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// The filter's weight at distance `x` (Pillow's `bilinear_filter` / `bicubic_filter`, the
    /// same f64 operations in the same order).
    fn weight(self, x: f64) -> f64 {
        let x = if x < 0.0 { -x } else { x };
        match self {
            Interpolation::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point bits of a coefficient (Pillow's `PRECISION_BITS`: 32 − 8 − 2, room for a u8
/// times a coefficient plus the overshoot of negative lobes).
const PRECISION_BITS: u32 = 22;

/// One axis of a view: the source interval `offset..offset + len` resized to `full` samples, of
/// which `start..start + count` are kept. A resized crop box keeps all of them; torchvision's
/// `CenterCrop` after `Resize` keeps the middle of the resized whole image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
    pub full: u32,
    pub start: u32,
    pub count: u32,
}

impl Span {
    /// `offset..offset + len` resized to `out` samples, all kept.
    pub fn whole(offset: u32, len: u32, out: u32) -> Self {
        Span {
            offset,
            len,
            full: out,
            start: 0,
            count: out,
        }
    }

    fn check(&self, size: u32, axis: &str) -> Result<(), ReplayError> {
        let ok = self.len >= 1
            && u64::from(self.offset) + u64::from(self.len) <= u64::from(size)
            && self.count >= 1
            && u64::from(self.start) + u64::from(self.count) <= u64::from(self.full);
        if ok {
            Ok(())
        } else {
            Err(ReplayError::invalid(
                axis,
                format!(
                    "source {}..{} of {size} resized to {}, keeping {}..{}: out of range",
                    self.offset,
                    u64::from(self.offset) + u64::from(self.len),
                    self.full,
                    self.start,
                    u64::from(self.start) + u64::from(self.count)
                ),
            ))
        }
    }
}

/// Coefficients of one axis for its kept outputs, in output order.
#[derive(Default)]
struct Axis {
    /// First source index (relative to the span's offset) of each output.
    first: Vec<u32>,
    /// Taps of each output.
    taps: Vec<u32>,
    /// i32 per output in `k`.
    stride: usize,
    /// Each output's 22-bit taps, each repeated `lanes` times, zero-padded to `stride` (the
    /// most taps an output can have, rounded up to a block).
    k: Vec<i32>,
    /// One output's f64 weights while they are computed.
    w: Vec<f64>,
}

impl Axis {
    /// (scale, filter scale, support) of `len` samples resized to `full`.
    fn support(f: Interpolation, len: u32, full: u32) -> (f64, f64, f64) {
        // Pillow: scale = (double)(in1 - in0) / outSize, the box in f32 (exact for u16 sides).
        let scale = f64::from(len as f32) / f64::from(full);
        let filterscale = scale.max(1.0);
        (scale, filterscale, f.support() * filterscale)
    }

    /// The most taps an output can have (Pillow's `ksize`).
    fn ksize(f: Interpolation, len: u32, full: u32) -> usize {
        Self::support(f, len, full).2.ceil() as usize * 2 + 1
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a span of `len` source samples
    /// resized to `full`, for the outputs `outputs` (in that order). Each tap is repeated
    /// `lanes` times and each output's taps are zero-padded to a multiple of `block` taps (the
    /// layout of [`horizontal_dot`]; 1 and 1 otherwise).
    fn build(
        &mut self,
        f: Interpolation,
        len: u32,
        full: u32,
        outputs: impl Iterator<Item = u32>,
        lanes: usize,
        block: usize,
    ) -> Result<(), ReplayError> {
        let (scale, filterscale, support) = Self::support(f, len, full);
        let ksize = Self::ksize(f, len, full);
        let inv = 1.0 / filterscale;
        let padded = ksize.div_ceil(block) * block;
        self.stride = padded * lanes;
        self.first.clear();
        self.taps.clear();
        self.k.clear();
        let w = &mut self.w;
        w.clear();
        w.resize(ksize, 0.0);
        for xx in outputs {
            let center = (f64::from(xx) + 0.5) * scale;
            // C's (int) casts truncate toward zero; so does `as`.
            let xmin = ((center - support + 0.5) as i32).max(0);
            let xmax = ((center + support + 0.5) as i32).min(len as i32);
            let n = (xmax - xmin).max(0) as usize;
            if n == 0 || n > ksize {
                return Err(ReplayError::invalid(
                    "resample",
                    format!("output {xx} of {full} from {len} has {n} taps"),
                ));
            }
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                *wx = f.weight((f64::from(x as i32 + xmin) - center + 0.5) * inv);
                ww += *wx;
            }
            if ww != 0.0 {
                for wx in &mut w[..n] {
                    *wx /= ww;
                }
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            for &wx in &w[..n] {
                let q = if wx < 0.0 {
                    (-0.5 + wx * one) as i32
                } else {
                    (0.5 + wx * one) as i32
                };
                self.k.extend(std::iter::repeat_n(q, lanes));
            }
            self.k.resize(self.k.len() + (padded - n) * lanes, 0);
            self.first.push(xmin as u32);
            self.taps.push(n as u32);
        }
        Ok(())
    }
}

/// The box `crop` names in `img` (the whole image if `None`), checked to lie inside it;
/// `what` names the field in the error.
pub(crate) fn source_box(
    img: &Image,
    crop: Option<PixelBox>,
    what: &str,
) -> Result<PixelBox, ReplayError> {
    let b = crop.unwrap_or(PixelBox {
        x: 0,
        y: 0,
        w: img.width.min(65535) as u16,
        h: img.height.min(65535) as u16,
    });
    if b.w == 0 || b.h == 0 || !b.fits(img.width, img.height) {
        return Err(ReplayError::invalid(
            what,
            format!(
                "box ({},{}) {}x{} lies outside the {}x{} image",
                b.x, b.y, b.w, b.h, img.width, img.height
            ),
        ));
    }
    Ok(b)
}

/// The instruction set a resize runs with. The bytes never depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The portable build of the code (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// The same code compiled for AVX2 (x86-64 only; needs the CPU to have it).
    Avx2,
}

impl Isa {
    /// The best this CPU offers.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => Self::detect() == Isa::Avx2,
        }
    }
}

/// Per-thread coefficient tables and intermediate images, reused by every resize.
#[derive(Default)]
struct Scratch {
    x: Axis,
    y: Axis,
    /// The first pass's image.
    tmp: Vec<u8>,
    /// The second pass's rows, when it is the horizontal one.
    rows: Vec<u8>,
    /// Eight source rows, transposed ([`horizontal`]), and their outputs.
    strip: Vec<u8>,
    done: Vec<u8>,
    row: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Resizes the box `xs` × `ys` of `img` with filter `f` as Pillow does
/// (`img.crop(box).resize((xs.full, ys.full), f)`), keeps the outputs the spans keep, flips
/// horizontally if asked, and writes them CHW (`channels × ys.count × xs.count`) into `dst`.
/// `isa` is [`Isa::detect`] but for tests and benches, which compare builds: the bytes are the
/// same on each.
pub fn resample(
    isa: Isa,
    f: Interpolation,
    img: &Image,
    xs: Span,
    ys: Span,
    flip: bool,
    dst: &mut [u8],
) -> Result<(), ReplayError> {
    xs.check(img.width, "resample x span")?;
    ys.check(img.height, "resample y span")?;
    let c = usize::from(img.channels);
    let want = c * xs.count as usize * ys.count as usize;
    if dst.len() != want {
        return Err(ReplayError::invalid(
            "output",
            format!(
                "buffer of {} bytes for {c}x{}x{}",
                dst.len(),
                ys.count,
                xs.count
            ),
        ));
    }
    if !isa.available() {
        return Err(ReplayError::invalid(
            "isa",
            format!("{isa:?} is not available on this CPU"),
        ));
    }
    let job = Job {
        isa,
        f,
        img,
        xs,
        ys,
        flip,
    };
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        match c {
            1 => run::<1, 8>(&job, dst, s),
            2 => run::<2, 16>(&job, dst, s),
            3 => run::<3, 24>(&job, dst, s),
            4 => run::<4, 32>(&job, dst, s),
            _ => Err(ReplayError::invalid(
                "image",
                format!("{c} channels; resampling takes 1 to 4"),
            )),
        }
    })
}

/// One resize: what [`resample`] was asked.
struct Job<'a> {
    isa: Isa,
    f: Interpolation,
    img: &'a Image,
    xs: Span,
    ys: Span,
    flip: bool,
}

/// Coefficients (f64, ISA-independent), then the integer passes on `isa`. `L` = 8 · `C`: the
/// lanes (channel, row) of the horizontal pass's eight-row strips.
fn run<const C: usize, const L: usize>(
    job: &Job,
    dst: &mut [u8],
    s: &mut Scratch,
) -> Result<(), ReplayError> {
    let &Job {
        isa,
        f,
        img,
        xs,
        ys,
        flip,
    } = job;
    let kept = |sp: Span| sp.start..sp.start + sp.count;
    // Many taps per output (a strong shrink): dot products over interleaved pixels read the
    // source once and cost less than transposing it into strips (measured on 12-MP photos).
    let dot = Axis::ksize(f, xs.len, xs.full) >= DOT_TAPS;
    let (lanes, block) = if dot { (C, 8) } else { (1, 1) };
    if flip {
        s.x.build(f, xs.len, xs.full, kept(xs).rev(), lanes, block)?;
    } else {
        s.x.build(f, xs.len, xs.full, kept(xs), lanes, block)?;
    }
    s.y.build(f, ys.len, ys.full, kept(ys), 1, 1)?;
    // Pillow (13.0) runs the vertical pass first when the height shrinks by more than twice
    // what the width does (C ints: a growing width counts negative), so that the horizontal
    // pass has fewer rows.
    let (dy, dx) = (
        i64::from(ys.len) - i64::from(ys.full),
        i64::from(xs.len) - i64::from(xs.full),
    );
    let vertical_first = dy > 0 && dy > dx * 2;
    let job = Passes {
        img,
        xs,
        ys,
        vertical_first,
        dot,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `resample` checked that the CPU has AVX2.
            unsafe { passes_avx2::<C, L>(&job, s, dst) };
        }
        _ => passes::<C, L>(&job, s, dst),
    }
    Ok(())
}

/// What the integer passes work on.
struct Passes<'a> {
    img: &'a Image,
    xs: Span,
    ys: Span,
    vertical_first: bool,
    /// The horizontal pass as per-output dot products ([`horizontal_dot`]), not strips.
    dot: bool,
}

/// Taps per output from which the horizontal pass takes dot products rather than strips.
const DOT_TAPS: usize = 24;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn passes_avx2<const C: usize, const L: usize>(j: &Passes, s: &mut Scratch, dst: &mut [u8]) {
    passes::<C, L>(j, s, dst)
}

/// The two passes and the CHW write, inlined into each ISA's build.
#[inline(always)]
fn passes<const C: usize, const L: usize>(j: &Passes, s: &mut Scratch, dst: &mut [u8]) {
    let Scratch {
        x,
        y,
        tmp,
        rows,
        strip,
        done,
        row,
    } = s;
    let (img, xs, ys) = (j.img, j.xs, j.ys);
    let stride = img.width as usize * C;
    let (ow, oh) = (xs.count as usize, ys.count as usize);
    let plane = ow * oh;
    if !j.vertical_first {
        // Horizontal pass over the source rows the kept outputs read, into `tmp`.
        let y0 = y.first[0] as usize;
        let y1 = (y.first[oh - 1] + y.taps[oh - 1]) as usize;
        tmp.resize((y1 - y0) * ow * C, 0);
        let at = (ys.offset as usize + y0) * stride + xs.offset as usize * C;
        let width = xs.len as usize * C;
        if j.dot {
            for (r, out) in tmp.chunks_exact_mut(ow * C).enumerate() {
                horizontal_dot::<C, L>(&img.data[at + r * stride..], x, out);
            }
        } else {
            horizontal::<C, L>(&img.data, at, stride, width, x, (strip, done), tmp);
        }
        row.resize(ow * C, 0);
        for (e, k) in y.k.chunks_exact(y.stride).enumerate() {
            let taps = &k[..y.taps[e] as usize];
            let first = y.first[e] as usize - y0;
            vertical(tmp, ow * C, first * ow * C, taps, row);
            scatter::<C>(row, dst, e * ow, plane);
        }
    } else {
        // Vertical pass over the span's columns into `tmp`, then the horizontal pass.
        let width = xs.len as usize * C;
        tmp.resize(oh * width, 0);
        for (e, k) in y.k.chunks_exact(y.stride).enumerate() {
            let taps = &k[..y.taps[e] as usize];
            let at = (ys.offset + y.first[e]) as usize * stride + xs.offset as usize * C;
            let out = &mut tmp[e * width..(e + 1) * width];
            vertical(&img.data, stride, at, taps, out);
        }
        rows.resize(oh * ow * C, 0);
        if j.dot {
            for (r, out) in rows.chunks_exact_mut(ow * C).enumerate() {
                horizontal_dot::<C, L>(&tmp[r * width..], x, out);
            }
        } else {
            horizontal::<C, L>(tmp, 0, width, width, x, (strip, done), rows);
        }
        for (e, r) in rows.chunks_exact(ow * C).enumerate() {
            scatter::<C>(r, dst, e * ow, plane);
        }
    }
}

/// Source rows per strip of the horizontal pass.
const STRIP: usize = 8;

/// The horizontal pass of `out.len() / (kept · C)` rows: row `r` of the span is
/// `src[at + r · stride..][..width]`; `out` gets the kept outputs of each row, interleaved.
///
/// Eight rows at a time: the strip is transposed so that the eight rows' values of one pixel
/// lie side by side (`strip[(x · C + c) · 8 + r]`); an output then sums its taps as whole
/// vectors of C · 8 lanes (channel, row) times one coefficient each — no per-output
/// reductions and no gathers, which is what makes a 3-channel horizontal pass vectorize.
#[inline(always)]
fn horizontal<const C: usize, const L: usize>(
    src: &[u8],
    at: usize,
    stride: usize,
    width: usize,
    x: &Axis,
    strip: (&mut Vec<u8>, &mut Vec<u8>),
    out: &mut [u8],
) {
    let kept = x.first.len();
    let rows = out.len() / (kept * C);
    let (strip, done) = strip;
    strip.resize(width * STRIP, 0);
    done.resize(kept * L, 0);
    for s0 in (0..rows).step_by(STRIP) {
        let nr = (rows - s0).min(STRIP);
        transpose_strip(src, at + s0 * stride, stride, width, nr, strip);
        for ((j, k), o) in
            x.k.chunks_exact(x.stride)
                .enumerate()
                .zip(done.chunks_exact_mut(L))
        {
            let first = x.first[j] as usize;
            let taps = &k[..x.taps[j] as usize];
            let mut lanes = [0i32; L];
            for (t, &kt) in taps.iter().enumerate() {
                let px = &strip[(first + t) * L..][..L];
                for l in 0..L {
                    lanes[l] += i32::from(px[l]) * kt;
                }
            }
            for (o, &v) in o.iter_mut().zip(&lanes) {
                *o = clip8(v);
            }
        }
        // `done` holds the strip's outputs as (output, channel, row): back to rows.
        untranspose_strip(done, kept * C, nr, &mut out[s0 * kept * C..]);
    }
}

/// One row of the horizontal pass as per-output dot products over interleaved pixels, for
/// outputs with many taps: `src` starts at the span's first pixel of a source row and may run
/// on past it (into later rows: the taps past an output's own are zero); `out` gets the kept
/// outputs, interleaved. `x` holds each tap `C` times, in blocks of eight taps (`L` lanes).
#[inline(always)]
fn horizontal_dot<const C: usize, const L: usize>(src: &[u8], x: &Axis, out: &mut [u8]) {
    for (o, ((&first, &n), k)) in out
        .chunks_exact_mut(C)
        .zip(x.first.iter().zip(&x.taps).zip(x.k.chunks_exact(x.stride)))
    {
        let at = first as usize * C;
        let blocks = (n as usize).div_ceil(8);
        let mut sums = [0i32; C];
        if let Some(px) = src.get(at..at + blocks * L) {
            let mut lanes = [0i32; L];
            for (p, kb) in px.chunks_exact(L).zip(k.chunks_exact(L)) {
                for l in 0..L {
                    lanes[l] += i32::from(p[l]) * kb[l];
                }
            }
            for (l, v) in lanes.iter().enumerate() {
                sums[l % C] += v;
            }
        } else {
            // Near the end of the buffer: only the real taps.
            let px = &src[at..at + n as usize * C];
            for (i, (&p, &kt)) in px.iter().zip(k).enumerate() {
                sums[i % C] += i32::from(p) * kt;
            }
        }
        for (o, v) in o.iter_mut().zip(sums) {
            *o = clip8(v);
        }
    }
}

/// The inverse of [`transpose_strip`] into rows of `width` bytes: `out[r · width + i] =
/// strip[i · 8 + r]` for `r < rows`.
#[inline(always)]
fn untranspose_strip(strip: &[u8], width: usize, rows: usize, out: &mut [u8]) {
    let whole = if rows == STRIP { width / 8 * 8 } else { 0 };
    for i in (0..whole).step_by(8) {
        let m: [u64; 8] = std::array::from_fn(|q| {
            u64::from_le_bytes(strip[(i + q) * 8..][..8].try_into().expect("8 bytes"))
        });
        for (r, v) in transpose8x8(m).iter().enumerate() {
            out[r * width + i..][..8].copy_from_slice(&v.to_le_bytes());
        }
    }
    for r in 0..rows {
        for i in whole..width {
            out[r * width + i] = strip[i * 8 + r];
        }
    }
}

/// `strip[i · 8 + r] = src[at + r · stride + i]` for `i < width`, `r < rows` (≤ 8): eight
/// rows side by side, 8×8-byte blocks transposed in registers.
#[inline(always)]
fn transpose_strip(
    src: &[u8],
    at: usize,
    stride: usize,
    width: usize,
    rows: usize,
    strip: &mut [u8],
) {
    let whole = if rows == STRIP { width / 8 * 8 } else { 0 };
    for i in (0..whole).step_by(8) {
        let mut m = [0u64; 8];
        for (r, v) in m.iter_mut().enumerate() {
            let b = &src[at + r * stride + i..][..8];
            *v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        let t = transpose8x8(m);
        for (q, v) in t.iter().enumerate() {
            strip[(i + q) * 8..][..8].copy_from_slice(&v.to_le_bytes());
        }
    }
    for r in 0..rows {
        let row = &src[at + r * stride..][..width];
        for i in whole..width {
            strip[i * 8 + r] = row[i];
        }
    }
}

/// Transposes an 8×8 byte matrix held as eight little-endian rows: byte `q` of row `r` becomes
/// byte `r` of row `q` (three rounds of block swaps: 4×4, 2×2, 1×1).
#[inline(always)]
fn transpose8x8(mut a: [u64; 8]) -> [u64; 8] {
    for r in 0..4 {
        let t = ((a[r] >> 32) ^ a[r + 4]) & 0x0000_0000_ffff_ffff;
        a[r] ^= t << 32;
        a[r + 4] ^= t;
    }
    for r in [0, 1, 4, 5] {
        let t = ((a[r] >> 16) ^ a[r + 2]) & 0x0000_ffff_0000_ffff;
        a[r] ^= t << 16;
        a[r + 2] ^= t;
    }
    for r in [0, 2, 4, 6] {
        let t = ((a[r] >> 8) ^ a[r + 1]) & 0x00ff_00ff_00ff_00ff;
        a[r] ^= t << 8;
        a[r + 1] ^= t;
    }
    a
}

/// One output row of the vertical pass: rows `at`, `at + stride`, … of `src` (each
/// `out.len()` bytes) weighted by `taps`.
///
/// Blocks of [`VBLOCK`] columns keep their sums in registers across all taps (one load of each
/// source byte, no accumulator traffic); the fewer columns past the last whole block are summed
/// one by one.
#[inline(always)]
fn vertical(src: &[u8], stride: usize, at: usize, taps: &[i32], out: &mut [u8]) {
    let width = out.len();
    let whole = width / VBLOCK * VBLOCK;
    for c0 in (0..whole).step_by(VBLOCK) {
        let mut sums = [0i32; VBLOCK];
        for (t, &kt) in taps.iter().enumerate() {
            let r: &[u8; VBLOCK] = src[at + t * stride + c0..][..VBLOCK]
                .try_into()
                .expect("a block of columns");
            for l in 0..VBLOCK {
                sums[l] += i32::from(r[l]) * kt;
            }
        }
        for (o, &v) in out[c0..c0 + VBLOCK].iter_mut().zip(&sums) {
            *o = clip8(v);
        }
    }
    for (c, o) in out.iter_mut().enumerate().skip(whole) {
        let sum = taps
            .iter()
            .enumerate()
            .map(|(t, &kt)| i32::from(src[at + t * stride + c]) * kt)
            .sum();
        *o = clip8(sum);
    }
}

/// Columns per register-held block of the vertical pass (two AVX2 vectors of i32; 8 and 32
/// measured slower: 32 spills).
const VBLOCK: usize = 16;

/// Pillow's rounding and clipping: `(sum + 2²¹) >> 22`, clamped to 0..=255.
#[inline(always)]
fn clip8(sum: i32) -> u8 {
    ((sum + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Writes an interleaved output row into the CHW planes at pixel offset `at`.
#[inline(always)]
fn scatter<const C: usize>(row: &[u8], dst: &mut [u8], at: usize, plane: usize) {
    if C == 1 {
        dst[at..at + row.len()].copy_from_slice(row);
        return;
    }
    let n = row.len() / C;
    if C == 3 {
        // The three planes as slices of their own: no bounds check per byte, and the
        // compiler deinterleaves whole vectors.
        let (r, rest) = dst[at..].split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (((px, r), g), b) in row
            .chunks_exact(3)
            .zip(&mut r[..n])
            .zip(&mut g[..n])
            .zip(&mut b[..n])
        {
            (*r, *g, *b) = (px[0], px[1], px[2]);
        }
        return;
    }
    for (i, px) in row.chunks_exact(C).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            dst[ch * plane + at + i] = v;
        }
    }
}

/// A centre crop as torchvision computes it: the spans of the resized image it keeps, and the
/// zero padding around them where the crop is larger than the resized image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CenterView {
    pub xs: Span,
    pub ys: Span,
    /// Zero columns left of and rows above the kept region in the output.
    pub pad: (u32, u32),
}

/// torchvision's `Resize(s)` (shorter side to `s`, longer side `int(s · long / short)`) then
/// `CenterCrop((out_w, out_h))` of a `w` × `h` image, `s` being timm's
/// `floor(min(out_w, out_h) / crop_pct)`. Where the crop is wider or taller than the resized
/// image, `CenterCrop` pads it with zeros (`(crop − size) // 2` before): so does the view.
pub fn center_view(
    (w, h): (u32, u32),
    (out_w, out_h): (u32, u32),
    crop_pct: f64,
) -> Result<CenterView, ReplayError> {
    let s = (f64::from(out_w.min(out_h)) / crop_pct).floor();
    if !(1.0..=65535.0 * 65535.0).contains(&s) || w == 0 || h == 0 {
        return Err(ReplayError::invalid(
            "center.crop_pct",
            format!("{crop_pct} resizes {w}x{h} to a shorter side of {s}"),
        ));
    }
    let s = s as u64;
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python's int(s * long / short): an exact product, one correctly rounded division.
    let long2 = ((s * u64::from(long)) as f64 / f64::from(short)) as u64;
    let (rw, rh) = if w <= h { (s, long2) } else { (long2, s) };
    if rw > u64::from(u32::MAX) || rh > u64::from(u32::MAX) {
        return Err(ReplayError::invalid(
            "center",
            format!("{w}x{h} resized to {rw}x{rh} is too large"),
        ));
    }
    // Per axis: the kept start (torchvision: int(round((size − crop) / 2.0)), Python rounding
    // half to even) and count, or the padding when the crop is larger.
    let axis = |len: u32, full: u64, out: u32| -> (Span, u32) {
        let full32 = full as u32;
        if full >= u64::from(out) {
            let start = ((full - u64::from(out)) as f64 / 2.0).round_ties_even() as u32;
            (
                Span {
                    offset: 0,
                    len,
                    full: full32,
                    start,
                    count: out,
                },
                0,
            )
        } else {
            (Span::whole(0, len, full32), (out - full32) / 2)
        }
    };
    let (xs, px) = axis(w, rw, out_w);
    let (ys, py) = axis(h, rh, out_h);
    Ok(CenterView {
        xs,
        ys,
        pad: (px, py),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(w: u32, h: u32, c: u8, seed: u64) -> Image {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let data = (0..w as usize * h as usize * usize::from(c))
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect();
        Image::new(w, h, c, data).unwrap()
    }

    fn resize(f: Interpolation, img: &Image, b: (u32, u32, u32, u32), out: (u32, u32)) -> Vec<u8> {
        let mut dst = vec![0u8; usize::from(img.channels) * (out.0 * out.1) as usize];
        resample(
            Isa::detect(),
            f,
            img,
            Span::whole(b.0, b.2, out.0),
            Span::whole(b.1, b.3, out.1),
            false,
            &mut dst,
        )
        .unwrap();
        dst
    }

    #[test]
    fn coefficients_are_pillows_by_hand() {
        // 4 → 2 bilinear: scale 2, support 2; output 0 (centre 1.0) reads source 0..3 with
        // weights 0.75, 0.75, 0.25 / 1.75 = 3/7, 3/7, 1/7 → round(x · 2²²).
        let mut a = Axis::default();
        a.build(Interpolation::Bilinear, 4, 2, 0..2, 1, 1).unwrap();
        assert_eq!(a.first, vec![0, 1]);
        assert_eq!(a.taps, vec![3, 3]);
        assert_eq!(&a.k[..3], &[1797559, 1797559, 599186]);
        // 3 → 5 bicubic: no antialiasing (scale < 1), support 2, edge taps renormalized.
        a.build(Interpolation::Bicubic, 3, 5, 0..5, 1, 1).unwrap();
        assert_eq!(a.first, vec![0, 0, 0, 0, 1]);
        assert_eq!(a.taps, vec![2, 3, 3, 3, 2]);
        for k in a.k.chunks(a.stride) {
            let sum: i32 = k.iter().sum();
            assert!((sum - (1 << 22)).abs() <= 2, "{k:?}");
        }
        // Source [0, 70, 140, 210] → (70·1797559 + 140·599186 + 2²¹) >> 22 = 50, and
        // (70·599186 + 140·1797559 + 210·1797559 + 2²¹) >> 22 = 160.
        let img = Image::new(4, 1, 1, vec![0, 70, 140, 210]).unwrap();
        assert_eq!(
            resize(Interpolation::Bilinear, &img, (0, 0, 4, 1), (2, 1)),
            vec![50, 160]
        );
    }

    #[test]
    fn byte_transpose_by_hand() {
        let m: [u64; 8] =
            std::array::from_fn(|r| u64::from_le_bytes(std::array::from_fn(|q| (r * 8 + q) as u8)));
        let t = transpose8x8(m);
        for (q, row) in t.iter().enumerate() {
            let want: [u8; 8] = std::array::from_fn(|r| (r * 8 + q) as u8);
            assert_eq!(row.to_le_bytes(), want, "row {q}");
        }
    }

    #[test]
    fn same_size_is_a_copy_with_either_filter() {
        let img = noise(13, 7, 3, 1);
        for f in Interpolation::ALL {
            let out = resize(f, &img, (0, 0, 13, 7), (13, 7));
            for (i, px) in img.data.chunks(3).enumerate() {
                for ch in 0..3 {
                    assert_eq!(out[ch * 91 + i], px[ch], "{f} pixel {i}");
                }
            }
        }
    }

    #[test]
    fn centre_views_follow_torchvision() {
        // 500x375 at 224, crop_pct 0.875: shorter side 256, longer int(256·500/375) = 341;
        // left round((341 − 224) / 2) = round(58.5) = 58 (half to even), top 16.
        let v = center_view((500, 375), (224, 224), 0.875).unwrap();
        assert_eq!(
            (v.xs.full, v.xs.start, v.ys.full, v.ys.start),
            (341, 58, 256, 16)
        );
        assert_eq!(v.pad, (0, 0));
        // Portrait 300x400 to a landscape 200x100: shorter side floor(100/0.875) = 114, so
        // 114x152; the crop is wider than 114: 43 zero columns left (torchvision pads).
        let v = center_view((300, 400), (200, 100), 0.875).unwrap();
        assert_eq!((v.xs.full, v.xs.count, v.pad.0), (114, 114, 43));
        assert_eq!(
            (v.ys.full, v.ys.start, v.ys.count, v.pad.1),
            (152, 26, 100, 0)
        );
        // A 1x1 image: resized to 256x256, centre kept.
        let v = center_view((1, 1), (224, 224), 0.875).unwrap();
        assert_eq!((v.xs.full, v.xs.start), (256, 16));
    }

    #[test]
    fn extremes_neither_panic_nor_overflow() {
        // One pixel upscaled: every output is that pixel.
        let img = Image::new(1, 1, 3, vec![9, 200, 255]).unwrap();
        for f in Interpolation::ALL {
            let out = resize(f, &img, (0, 0, 1, 1), (224, 224));
            assert!(out[..224 * 224].iter().all(|&v| v == 9));
            assert!(out[2 * 224 * 224..].iter().all(|&v| v == 255));
        }
        // A 60,000-px-wide white row shrunk to 224 (bicubic support 2 · 268): still white.
        let img = Image::new(60_000, 2, 1, vec![255; 120_000]).unwrap();
        for f in Interpolation::ALL {
            let out = resize(f, &img, (0, 0, 60_000, 2), (224, 224));
            assert!(out.iter().all(|&v| v == 255), "{f}");
        }
        // And 2 wide, 60,000 tall: the height shrinks most, so the vertical pass goes first.
        let img = noise(2, 60_000, 1, 3);
        let out = resize(Interpolation::Bicubic, &img, (0, 0, 2, 60_000), (5, 7));
        assert_eq!(out.len(), 35);
        // Bad spans are errors naming the axis.
        let mut dst = vec![0u8; 4];
        let e = resample(
            Isa::detect(),
            Interpolation::Bilinear,
            &img,
            Span::whole(1, 2, 2),
            Span::whole(0, 2, 2),
            false,
            &mut dst,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("resample x span"), "{e}");
    }

    #[test]
    fn flip_reverses_the_columns() {
        let img = noise(40, 30, 3, 5);
        let (xs, ys) = (Span::whole(3, 31, 17), Span::whole(2, 25, 9));
        let (mut a, mut b) = (vec![0u8; 3 * 17 * 9], vec![0u8; 3 * 17 * 9]);
        let isa = Isa::detect();
        resample(isa, Interpolation::Bicubic, &img, xs, ys, false, &mut a).unwrap();
        resample(isa, Interpolation::Bicubic, &img, xs, ys, true, &mut b).unwrap();
        for row in 0..3 * 9 {
            let (ra, rb) = (&a[row * 17..][..17], &b[row * 17..][..17]);
            assert!(ra.iter().eq(rb.iter().rev()), "row {row}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The AVX2 build and the portable build give the same bytes (skipped without AVX2).
        #[test]
        fn simd_and_portable_agree(
            w in 1u32..90, h in 1u32..90, c in 1u8..=4,
            bx in 0.0f64..1.0, by in 0.0f64..1.0, bw in 0.0f64..1.0, bh in 0.0f64..1.0,
            ow in 1u32..80, oh in 1u32..80, start in 0.0f64..1.0,
            bicubic in any::<bool>(), flip in any::<bool>(), seed in any::<u64>(),
        ) {
            prop_assume!(Isa::Avx2.available());
            let img = noise(w, h, c, seed);
            let x = ((bx * f64::from(w)) as u32).min(w - 1);
            let y = ((by * f64::from(h)) as u32).min(h - 1);
            let cw = 1 + ((bw * f64::from(w - x)) as u32).min(w - x - 1);
            let ch = 1 + ((bh * f64::from(h - y)) as u32).min(h - y - 1);
            // Keep a part of a larger resize sometimes (the centre-crop form).
            let full = ow + (start * 40.0) as u32;
            let xs = Span { offset: x, len: cw, full, start: full - ow, count: ow };
            let ys = Span::whole(y, ch, oh);
            let f = if bicubic { Interpolation::Bicubic } else { Interpolation::Bilinear };
            let n = usize::from(c) * (ow * oh) as usize;
            let (mut a, mut b) = (vec![0u8; n], vec![1u8; n]);
            resample(Isa::Portable, f, &img, xs, ys, flip, &mut a).unwrap();
            resample(Isa::Avx2, f, &img, xs, ys, flip, &mut b).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
