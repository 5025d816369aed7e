//! The decode probe: a guard on bit-identical replay. Replay holds only while the same decoder
//! turns the same bytes into the same pixels, and JPEG decoders change rounding between
//! releases and CPUs. A store records which decoder labelled it and a hash of the decoded pixels
//! of a few fixed samples; a student run decodes those samples again and refuses the store when
//! a hash differs, naming the sample, instead of training on inputs the teacher never saw.

use super::Dataset;
use crate::error::DataError;
use formats::DecodeProbe;
use xxhash_rust::xxh3::Xxh3;

/// Samples a probe decodes.
pub const PROBE_SAMPLES: u32 = 8;

/// The samples a probe of a `len`-sample split decodes: up to [`PROBE_SAMPLES`], evenly spaced.
pub fn probe_samples(len: u32) -> Vec<u32> {
    let n = PROBE_SAMPLES.min(len);
    let mut v: Vec<u32> = (0..n)
        .map(|i| (u64::from(i) * u64::from(len) / u64::from(n)) as u32)
        .collect();
    v.dedup();
    v
}

/// Hash of sample `index` as decoded now.
pub fn sample_hash(data: &dyn Dataset, index: u32) -> Result<String, DataError> {
    let img = data.image(index)?;
    let mut h = Xxh3::new();
    h.update(&img.width.to_le_bytes());
    h.update(&img.height.to_le_bytes());
    h.update(&[img.channels]);
    h.update(&img.data);
    Ok(format!("xxh3:{:016x}", h.digest()))
}

/// The probe of `data` as this build decodes it.
pub fn decode_probe(data: &dyn Dataset) -> Result<DecodeProbe, DataError> {
    let samples = probe_samples(data.len());
    let pixels_xxh3 = samples
        .iter()
        .map(|&s| sample_hash(data, s))
        .collect::<Result<_, _>>()?;
    Ok(DecodeProbe {
        decoder: data.decoder().into(),
        samples,
        pixels_xxh3,
    })
}

/// Decodes the probe's samples again; the first one whose pixels differ, as
/// `(sample, what the store recorded, what this build decodes)`.
pub fn probe_mismatch(
    data: &dyn Dataset,
    probe: &DecodeProbe,
) -> Result<Option<(u32, String, String)>, DataError> {
    for (&s, want) in probe.samples.iter().zip(&probe.pixels_xxh3) {
        if s >= data.len() {
            return Ok(Some((s, want.clone(), "no such sample".into())));
        }
        let got = sample_hash(data, s)?;
        if &got != want {
            return Ok(Some((s, want.clone(), got)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageDecoder;

    #[test]
    fn probe_samples_are_spread_and_distinct() {
        assert_eq!(probe_samples(3), vec![0, 1, 2]);
        assert_eq!(probe_samples(80), vec![0, 10, 20, 30, 40, 50, 60, 70]);
        assert_eq!(probe_samples(1), vec![0]);
    }

    /// The decoder string names the versions Cargo.lock resolves, so a bump cannot go unsaid.
    #[test]
    fn the_decoder_string_matches_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("workspace Cargo.lock");
        let version = |name: &str| -> Vec<String> {
            let needle = format!("name = \"{name}\"\nversion = \"");
            lock.match_indices(&needle)
                .map(|(at, _)| {
                    let rest = &lock[at + needle.len()..];
                    rest[..rest.find('"').unwrap()].to_string()
                })
                .collect()
        };
        let names = [
            (ImageDecoder::Legacy, "image", "0.25.10"),
            (ImageDecoder::Legacy, "zune-jpeg", "0.5.15"),
            (ImageDecoder::Pillow, "turbojpeg-sys", "1.2.0"),
        ];
        for (decoder, name, want) in names {
            assert_eq!(
                version(name),
                vec![want.to_string()],
                "{name} in Cargo.lock"
            );
            assert!(
                decoder.name().contains(&format!("{name} {want}")),
                "{}",
                decoder.name()
            );
        }
        let png = version("png");
        for d in ImageDecoder::ALL {
            assert!(
                png.iter()
                    .any(|v| d.name().contains(&format!("png {}", &v[..4]))),
                "png {png:?} vs {}",
                d.name()
            );
        }
    }
}
