//! What a model expects of its input, as its ONNX file's `metadata_props` say it: the keys of
//! timm's `pretrained_cfg` (`mean`, `std`, `interpolation`, `crop_pct`). `distill label` takes
//! them from a teacher file when the flags do not say otherwise; `distill export` writes them
//! into students.
//!
//! Values are text, as ONNX metadata is: `mean` and `std` a list of numbers (JSON `[0.485,
//! 0.456, 0.406]`, Python's tuple `(0.485, 0.456, 0.406)` or bare `0.485,0.456,0.406`), for
//! inputs of pixel/255; `interpolation` `bilinear` or `bicubic` (quotes allowed); `crop_pct` a
//! number in (0, 1].

use crate::error::FormatError;
use crate::recipe::Interpolation;

/// The metadata keys read and written, timm's names.
pub const KEYS: [&str; 4] = ["mean", "std", "interpolation", "crop_pct"];

/// A model's declared pre-processing; a key the file lacks is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preprocessing {
    /// Per-channel mean of pixel/255.
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation of pixel/255.
    pub std: Option<Vec<f32>>,
    /// The resampling filter the model was trained and evaluated with.
    pub interpolation: Option<Interpolation>,
    /// The evaluation centre crop's fraction of the resized shorter side.
    pub crop_pct: Option<f64>,
}

impl Preprocessing {
    /// The pre-processing `entries` (an ONNX file's `metadata_props`) declare; other keys are
    /// ignored. A value that cannot be parsed is an error naming the key.
    pub fn from_metadata(entries: &[(String, String)]) -> Result<Self, FormatError> {
        let mut p = Preprocessing::default();
        for (key, value) in entries {
            let v = value.trim();
            let bad = |why: &str| FormatError::invalid(key.clone(), format!("{value:?}: {why}"));
            match key.as_str() {
                "mean" | "std" => {
                    let list = parse_floats(v).ok_or_else(|| bad("not a list of numbers"))?;
                    if key == "std" && list.iter().any(|s| *s <= 0.0) {
                        return Err(bad("a standard deviation must be positive"));
                    }
                    if key == "mean" {
                        p.mean = Some(list);
                    } else {
                        p.std = Some(list);
                    }
                }
                "interpolation" => {
                    let name = v.trim_matches(|c| c == '"' || c == '\'');
                    p.interpolation = Some(Interpolation::parse(name, key)?);
                }
                "crop_pct" => {
                    let c: f64 = v.parse().map_err(|_| bad("not a number"))?;
                    if !(c > 0.0 && c <= 1.0) {
                        return Err(bad("not in (0, 1]"));
                    }
                    p.crop_pct = Some(c);
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The pre-processing a serialized ONNX model declares (only its top-level fields are
    /// walked, so a mapped teacher's weights are never paged in). The error says what is wrong;
    /// the caller names the file.
    pub fn of_model(model: &[u8]) -> Result<Self, String> {
        let entries = read_metadata(model)?;
        Self::from_metadata(&entries).map_err(|e| e.to_string())
    }

    /// `metadata_props` entries for the keys that are set, in [`KEYS`] order.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let list = |v: &[f32]| {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("[{}]", items.join(", "))
        };
        let mut out = Vec::new();
        if let Some(m) = &self.mean {
            out.push(("mean".into(), list(m)));
        }
        if let Some(s) = &self.std {
            out.push(("std".into(), list(s)));
        }
        if let Some(i) = self.interpolation {
            out.push(("interpolation".into(), i.name().into()));
        }
        if let Some(c) = self.crop_pct {
            out.push(("crop_pct".into(), c.to_string()));
        }
        out
    }
}

/// `[a, b]`, `(a, b)` or `a,b` as numbers; `None` unless every item is one.
fn parse_floats(v: &str) -> Option<Vec<f32>> {
    let inner = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .or_else(|| v.strip_prefix('(').and_then(|s| s.strip_suffix(')')))
        .unwrap_or(v);
    let list: Vec<f32> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f32>().ok().filter(|x| x.is_finite()))
        .collect::<Option<_>>()?;
    (!list.is_empty()).then_some(list)
}

/// The `metadata_props` (ModelProto field 14, `StringStringEntryProto` key 1, value 2) of a
/// serialized ONNX model, walking only its top-level fields.
pub fn read_metadata(model: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = |what: &str| format!("not an ONNX model ({what})");
    let mut out = Vec::new();
    let mut r = Reader(model);
    while !r.0.is_empty() {
        let key = r.varint().ok_or_else(|| bad("cut short"))?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                r.varint().ok_or_else(|| bad("cut short"))?;
            }
            1 => r.skip(8).ok_or_else(|| bad("cut short"))?,
            5 => r.skip(4).ok_or_else(|| bad("cut short"))?,
            2 => {
                let body = r.bytes().ok_or_else(|| bad("cut short"))?;
                if field == 14 {
                    let (mut k, mut v) = (String::new(), String::new());
                    let mut e = Reader(body);
                    while !e.0.is_empty() {
                        let key = e.varint().ok_or_else(|| bad("bad metadata entry"))?;
                        match (key >> 3, key & 7) {
                            (n @ (1 | 2), 2) => {
                                let s = e.bytes().ok_or_else(|| bad("bad metadata entry"))?;
                                let s = String::from_utf8(s.to_vec())
                                    .map_err(|_| bad("metadata that is not UTF-8"))?;
                                if n == 1 { k = s } else { v = s }
                            }
                            _ => return Err(bad("bad metadata entry")),
                        }
                    }
                    out.push((k, v));
                }
            }
            _ => return Err(bad(&format!("wire type {wire} in field {field}"))),
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (b, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn timm_style_values_parse() {
        let p = Preprocessing::from_metadata(&meta(&[
            ("mean", "(0.485, 0.456, 0.406)"),
            ("std", "[0.229, 0.224, 0.225]"),
            ("interpolation", "'bicubic'"),
            ("crop_pct", "0.95"),
            ("architecture", "resnet50"),
        ]))
        .unwrap();
        assert_eq!(p.mean, Some(vec![0.485, 0.456, 0.406]));
        assert_eq!(p.std, Some(vec![0.229, 0.224, 0.225]));
        assert_eq!(p.interpolation, Some(Interpolation::Bicubic));
        assert_eq!(p.crop_pct, Some(0.95));
        let bare = Preprocessing::from_metadata(&meta(&[("mean", "0.5,0.5,0.5")])).unwrap();
        assert_eq!(bare.mean, Some(vec![0.5; 3]));
        assert_eq!(bare.std, None);
        // What export writes reads back the same.
        assert_eq!(Preprocessing::from_metadata(&p.to_metadata()).unwrap(), p);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v, why) in [
            ("mean", "0.5;0.5", "not a list of numbers"),
            ("std", "[0.2, 0]", "positive"),
            ("interpolation", "lanczos", "not a filter"),
            ("crop_pct", "1.5", "(0, 1]"),
            ("crop_pct", "big", "not a number"),
        ] {
            let e = Preprocessing::from_metadata(&meta(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(k) && e.contains(why), "{k}={v}: {e}");
        }
    }

    #[test]
    fn metadata_is_read_from_the_model_the_writer_makes() {
        let m = crate::onnx::Model {
            graph_name: "g".into(),
            producer: "test".into(),
            opset: 17,
            nodes: vec![],
            initializers: vec![crate::onnx::Initializer {
                name: "w".into(),
                dims: vec![3],
                data: crate::onnx::InitData::Float(vec![1.0, 2.0, 3.0]),
            }],
            inputs: vec![],
            outputs: vec![],
            metadata: meta(&[("mean", "[0.5]"), ("note", "ü")]),
        };
        assert_eq!(
            read_metadata(&m.to_bytes()).unwrap(),
            meta(&[("mean", "[0.5]"), ("note", "ü")])
        );
        let bytes = m.to_bytes();
        assert!(read_metadata(&bytes[..bytes.len() - 3]).is_err());
        assert!(read_metadata(b"\x0f\x0f\x0f").is_err());
    }
}
