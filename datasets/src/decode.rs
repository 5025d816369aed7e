//! Encoded images to RGB pixels, as the teacher's own eval transform makes them:
//! `PIL.Image.open(f).convert("RGB")` on Pillow 13.0.
//!
//! - **JPEG**: libjpeg-turbo 3.1.0 (built from the source `turbojpeg-sys` bundles), with the
//!   settings Pillow uses: ISLOW IDCT, fancy upsampling, block smoothing. Grayscale files are
//!   replicated into three channels; four-channel files (CMYK, YCCK) are read as CMYK with
//!   Adobe's inverted polarity and converted with Pillow's `cmyk2rgb`. EXIF orientation is
//!   ignored, as torchvision's `ImageFolder` ignores it.
//! - **PNG**: the `png` crate, then Pillow's rules for each raw mode: palettes and low bit depths
//!   expanded, alpha dropped (not composited), 16-bit colour and grey-alpha cut to their high
//!   byte, 16-bit grey clipped to 255 (Pillow's `I;16` → `RGB`).
//!
//! Stores made before format version 3 were labelled with another decoder ([`ImageDecoder::Legacy`],
//! `image` with zune-jpeg); they keep replaying with it, chosen from their decode probe.

use super::Image;
use std::cell::RefCell;
use std::ffi::{CStr, c_int};
use turbojpeg_sys as tj;

/// The decoders a build has, by the name a store's decode probe records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageDecoder {
    /// Pillow's pixels: libjpeg-turbo for JPEG, Pillow's `convert("RGB")` rules for PNG.
    #[default]
    Pillow,
    /// Format versions 1 and 2: `image` 0.25.10 with zune-jpeg 0.5.15 and `to_rgb8`.
    Legacy,
}

impl ImageDecoder {
    /// Every decoder this build has.
    pub const ALL: [ImageDecoder; 2] = [ImageDecoder::Pillow, ImageDecoder::Legacy];

    /// The name a store's decode probe records; the versions are pinned in Cargo.toml and a
    /// test checks them against Cargo.lock.
    pub fn name(self) -> &'static str {
        match self {
            ImageDecoder::Pillow => {
                "libjpeg-turbo 3.1.0 (turbojpeg-sys 1.2.0), png 0.18, Pillow 13.0 convert(\"RGB\")"
            }
            ImageDecoder::Legacy => "image 0.25.10 (zune-jpeg 0.5.15, png 0.18)",
        }
    }

    /// The decoder named `name` (a decode probe's `decoder`), if this build has it.
    pub fn of_name(name: &str) -> Option<ImageDecoder> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The decoder a store of `format_version` with `probe` was labelled with: the one its
    /// probe names, else (no probe: raw arrays, or a store older than probes) the one of its
    /// version. A probe naming a decoder this build lacks is an error naming the field.
    pub fn of_store(
        format_version: u32,
        probe: Option<&formats::DecodeProbe>,
    ) -> Result<ImageDecoder, crate::error::DataError> {
        match probe {
            Some(p) if p.decoder == "none" => Ok(ImageDecoder::default()),
            Some(p) => Self::of_name(&p.decoder).ok_or_else(|| {
                crate::error::DataError::invalid(
                    "decode_probe.decoder",
                    format!(
                        "{:?} is not a decoder of this build (it has {})",
                        p.decoder,
                        Self::ALL
                            .iter()
                            .map(|d| format!("{:?}", d.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }),
            None if format_version < 3 => Ok(ImageDecoder::Legacy),
            None => Ok(ImageDecoder::Pillow),
        }
    }

    /// Decodes a JPEG or PNG (the format read from the bytes) to RGB; the error says why it
    /// cannot ("cannot decode: …"), for the caller to prefix with the file and sample.
    pub fn decode(self, bytes: &[u8]) -> Result<Image, String> {
        if let Some(what) = jpeg_truncation(bytes) {
            return Err(format!("cannot decode: {what}"));
        }
        match self {
            ImageDecoder::Pillow if bytes.starts_with(&[0xFF, 0xD8]) => {
                TURBO.with(|t| t.borrow_mut().decode(bytes))
            }
            ImageDecoder::Pillow if bytes.starts_with(b"\x89PNG\r\n\x1a\n") => decode_png(bytes),
            ImageDecoder::Pillow => Err("not a JPEG or PNG file".into()),
            ImageDecoder::Legacy => decode_legacy(bytes),
        }
        .map_err(|e| format!("cannot decode: {e}"))
    }
}

/// (width, height) from an encoded image's header, without decoding pixels.
pub(crate) fn bytes_dims(bytes: &[u8]) -> Result<(u32, u32), String> {
    reader_dims(std::io::Cursor::new(bytes))
}

/// The (width, height) in the header `r` starts with, the format guessed from its bytes; only
/// the header is read.
pub(crate) fn reader_dims(r: impl std::io::BufRead + std::io::Seek) -> Result<(u32, u32), String> {
    image::ImageReader::new(r)
        .with_guessed_format()
        .map_err(|e| format!("cannot read image size: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("cannot read image size: {e}"))
}

/// Why a JPEG's bytes are cut short, if they are: its last scan (after the last SOS marker,
/// `FF DA`) must be closed by an EOI marker (`FF D9`; bytes after it are allowed). Decoders pad
/// a truncated scan with grey and report at most a warning, so a half-downloaded file would
/// become a training sample; PIL refuses such files as "truncated" too. Entropy-coded data
/// cannot hold either marker (an `FF` byte there is followed by `00` or a restart marker).
fn jpeg_truncation(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (None, _) => Some("JPEG without image data (no start-of-scan marker)".into()),
        (Some(sos), eoi) if eoi.is_none_or(|e| e < sos) => Some(format!(
            "JPEG truncated: its image data starting at byte {sos} is not closed by an \
             end-of-image marker ({} bytes)",
            bytes.len()
        )),
        _ => None,
    }
}

/// The format-version-2 decoder: `image`'s guess of the format, then `to_rgb8`.
fn decode_legacy(bytes: &[u8]) -> Result<Image, String> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Image::new(w, h, 3, rgb.into_raw()).map_err(|e| e.to_string())
}

thread_local! {
    /// One TurboJPEG decompressor per thread: creating one allocates libjpeg's state.
    static TURBO: RefCell<Turbo> = const { RefCell::new(Turbo(std::ptr::null_mut())) };
}

/// A TurboJPEG decompressor handle, made on first use and destroyed with its thread.
struct Turbo(tj::tjhandle);

impl Drop for Turbo {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from tj3Init and is destroyed once.
            unsafe { tj::tj3Destroy(self.0) }
        }
    }
}

impl Turbo {
    fn handle(&mut self) -> Result<tj::tjhandle, String> {
        if self.0.is_null() {
            // SAFETY: plain constructor; null on failure, checked below.
            self.0 = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
            if self.0.is_null() {
                return Err("cannot start libjpeg-turbo's decompressor".into());
            }
        }
        Ok(self.0)
    }

    /// libjpeg-turbo's message for the last call on `h`.
    fn error(h: tj::tjhandle) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(h)) };
        format!("JPEG: {}", msg.to_string_lossy().trim())
    }

    /// The outcome of a call that returned `rc`: a warning (e.g. "extraneous bytes before
    /// marker", common in photos from the wild) leaves a complete header or image, which Pillow
    /// accepts silently; only fatal errors refuse the file.
    fn check(h: tj::tjhandle, rc: c_int) -> Result<(), String> {
        // SAFETY: reads the handle's error state.
        if rc != 0 && unsafe { tj::tj3GetErrorCode(h) } != tj::TJERR_TJERR_WARNING as c_int {
            return Err(Self::error(h));
        }
        Ok(())
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Image, String> {
        let h = self.handle()?;
        // SAFETY: `bytes` outlives the call; the handle is this thread's.
        let rc = unsafe { tj::tj3DecompressHeader(h, bytes.as_ptr(), bytes.len() as _) };
        Self::check(h, rc)?;
        // SAFETY: reads of parameters set by the header just read.
        let get = |p: tj::TJPARAM| unsafe { tj::tj3Get(h, p as c_int) };
        let (w, h_px) = (
            get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
            get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
        );
        if get(tj::TJPARAM_TJPARAM_PRECISION) != 8 {
            // Pillow refuses these too ("cannot handle 12-bit layers").
            return Err(format!(
                "JPEG of {}-bit samples (only 8-bit JPEGs are read, as Pillow reads them)",
                get(tj::TJPARAM_TJPARAM_PRECISION)
            ));
        }
        let (w, h_px) = (
            u32::try_from(w).map_err(|_| format!("JPEG width {w}"))?,
            u32::try_from(h_px).map_err(|_| format!("JPEG height {h_px}"))?,
        );
        let space = get(tj::TJPARAM_TJPARAM_COLORSPACE) as tj::TJCS;
        let (format, channels) = match space {
            tj::TJCS_TJCS_GRAY => (tj::TJPF_TJPF_GRAY, 1usize),
            tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK => (tj::TJPF_TJPF_CMYK, 4),
            _ => (tj::TJPF_TJPF_RGB, 3),
        };
        let pixels = w as usize * h_px as usize;
        let mut buf = vec![0u8; pixels * channels];
        let pitch = c_int::try_from(w as usize * channels)
            .map_err(|_| format!("JPEG {w} pixels wide: a row does not fit libjpeg-turbo"))?;
        // SAFETY: `buf` holds height rows of `pitch` bytes, as tj3Decompress8 writes.
        let rc = unsafe {
            tj::tj3Decompress8(
                h,
                bytes.as_ptr(),
                bytes.len() as _,
                buf.as_mut_ptr(),
                pitch,
                format as c_int,
            )
        };
        Self::check(h, rc)?;
        let rgb = match channels {
            1 => gray_to_rgb(&buf),
            4 => buf.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
            _ => buf,
        };
        Image::new(w, h_px, 3, rgb).map_err(|e| e.to_string())
    }
}

/// Pillow's `L` → `RGB`: the grey value in each channel.
fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&v| [v, v, v]).collect()
}

/// One CMYK pixel as libjpeg gives it (Adobe's polarity: 0 is full ink) to RGB, as Pillow does
/// it: the `CMYK;I` unpacker inverts, then `cmyk2rgb` computes `nk − nk·c/255` per channel with
/// `nk = 255 − k` and its rounded division by 255.
fn cmyk_to_rgb(px: &[u8]) -> [u8; 3] {
    let nk = i32::from(px[3]); // 255 − (255 − k)
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let ch = |v: u8| (nk - muldiv255(255 - i32::from(v), nk)).clamp(0, 255) as u8;
    [ch(px[0]), ch(px[1]), ch(px[2])]
}

/// A PNG as Pillow's `convert("RGB")` of it.
fn decode_png(bytes: &[u8]) -> Result<Image, String> {
    use png::{BitDepth, ColorType};
    // No allocation limit beyond the image itself: folders hold 12-MP photos and larger.
    let mut dec = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits { bytes: usize::MAX },
    );
    // Palettes to RGB, 1/2/4-bit grey to 8-bit (×255, ×85, ×17 as Pillow's unpackers), tRNS
    // to an alpha channel (dropped below, as convert("RGB") drops it).
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| format!("PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG: the image does not fit in memory")?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("PNG: {e}"))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width, info.height);
    let sixteen = info.bit_depth == BitDepth::Sixteen;
    let samples = match info.color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => return Err("PNG: palette left unexpanded".into()),
    };
    // Pillow reads 16-bit grey as `I;16` and clips it to 255 on the way to RGB; so too with an
    // alpha that came from tRNS. A true 16-bit grey-alpha file is Pillow's `LA;16B`, which
    // keeps the high byte, as `RGB;16B` and `RGBA;16B` do.
    let clip_grey = sixteen && reader.info().color_type == ColorType::Grayscale;
    let step = samples * if sixteen { 2 } else { 1 };
    let rgb: Vec<u8> = buf
        .chunks_exact(step)
        .flat_map(|p| match samples {
            1 | 2 if clip_grey => {
                let g = u16::from_be_bytes([p[0], p[1]]).min(255) as u8;
                [g, g, g]
            }
            1 | 2 => [p[0], p[0], p[0]],
            _ if sixteen => [p[0], p[2], p[4]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Image::new(w, h, 3, rgb).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_differ() {
        for d in ImageDecoder::ALL {
            assert_eq!(ImageDecoder::of_name(d.name()), Some(d));
        }
        assert_ne!(ImageDecoder::Pillow.name(), ImageDecoder::Legacy.name());
        assert_eq!(ImageDecoder::of_name("image 0.24"), None);
    }

    #[test]
    fn a_store_names_its_decoder_by_probe_or_version() {
        use formats::DecodeProbe;
        let probe = |name: &str| DecodeProbe {
            decoder: name.into(),
            samples: vec![0],
            pixels_xxh3: vec!["xxh3:0000000000000000".into()],
        };
        let of = ImageDecoder::of_store;
        assert_eq!(of(3, None).unwrap(), ImageDecoder::Pillow);
        assert_eq!(of(2, None).unwrap(), ImageDecoder::Legacy);
        assert_eq!(of(1, None).unwrap(), ImageDecoder::Legacy);
        let legacy = probe(ImageDecoder::Legacy.name());
        assert_eq!(of(2, Some(&legacy)).unwrap(), ImageDecoder::Legacy);
        let pillow = probe(ImageDecoder::Pillow.name());
        assert_eq!(of(3, Some(&pillow)).unwrap(), ImageDecoder::Pillow);
        assert_eq!(of(2, Some(&probe("none"))).unwrap(), ImageDecoder::Pillow);
        let e = of(3, Some(&probe("libjpeg 9f"))).unwrap_err().to_string();
        assert!(
            e.contains("decode_probe.decoder") && e.contains("libjpeg 9f"),
            "{e}"
        );
    }

    /// Pillow's cmyk2rgb on a few inverted CMYK values, worked by hand: no ink is white, full
    /// black ink is black whatever the colour, half cyan on no black is 255 − 128.
    #[test]
    fn cmyk_follows_pillows_arithmetic() {
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 100, 200, 0]), [0, 0, 0]);
        // c' = 255 − 127 = 128: 255 − (128·255 + 128 → 128) = 127.
        assert_eq!(cmyk_to_rgb(&[127, 255, 255, 255]), [127, 255, 255]);
        // k' = 155, nk = 100; c' = 55: 100 − muldiv255(55, 100) = 100 − 22 = 78.
        assert_eq!(cmyk_to_rgb(&[200, 255, 0, 100]), [78, 100, 0]);
    }

    /// The extremes decode (1×1, 60,000 px wide) and keep their size; a 12-bit JPEG header or
    /// garbage after a valid start is an error, not a panic.
    #[test]
    fn extreme_sizes_decode_and_bad_files_are_errors() {
        use image::ImageEncoder;
        for (w, h) in [(1u32, 1u32), (60_000, 2), (2, 60_000)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x % 251) as u8, (y % 241) as u8, 7])
            });
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&img)
                .unwrap();
            let mut png = Vec::new();
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
                .unwrap();
            for bytes in [&jpeg, &png] {
                let d = ImageDecoder::Pillow.decode(bytes).unwrap();
                assert_eq!((d.width, d.height, d.channels), (w, h, 3));
            }
            // PNG is lossless: the pixels come back as written.
            assert_eq!(
                ImageDecoder::Pillow.decode(&png).unwrap().data,
                img.into_raw()
            );
        }
        // A JPEG whose entropy-coded data is noise: libjpeg-turbo's error, not a panic.
        let mut bad = vec![0xFF, 0xD8];
        bad.extend(std::iter::repeat_n(0x55, 64));
        bad.extend([0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        let e = ImageDecoder::Pillow.decode(&bad).unwrap_err();
        assert!(e.starts_with("cannot decode: JPEG: "), "{e}");
        let e = ImageDecoder::Pillow
            .decode(b"\x89PNG\r\n\x1a\nshort")
            .unwrap_err();
        assert!(e.starts_with("cannot decode: PNG: "), "{e}");
    }

    #[test]
    fn non_images_and_truncated_jpegs_are_refused() {
        let e = ImageDecoder::Pillow.decode(b"GIF89a....").unwrap_err();
        assert!(e.contains("not a JPEG or PNG"), "{e}");
        let e = ImageDecoder::Pillow
            .decode(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 0])
            .unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = ImageDecoder::Pillow
            .decode(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 0, 0xFF, 0xD9])
            .unwrap_err();
        assert!(e.starts_with("cannot decode: JPEG: "), "{e}");
    }
}
