//! WebDataset tar shards: an image folder packed into shards reads back as the same samples;
//! split selection, brace patterns and the dataset index; bad shards are errors naming the shard
//! and the key.

use datasets::{self as dataset, DataFormat, Dataset, ImageFolder, OpenOptions, WebDataset, wds};
use std::path::{Path, PathBuf};

/// A folder of 3 classes × 4 JPEGs and PNGs of varied sizes (structured noise).
fn folder(root: &Path) {
    for (c, class) in ["ant", "bee", "cow"].iter().enumerate() {
        let dir = root.join("train").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..4u32 {
            let (w, h) = (20 + 3 * i + c as u32, 16 + 2 * i);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = (x * 7 + y * 13 + i * 31 + c as u32 * 57) as u8;
                image::Rgb([v, v.wrapping_mul(3), 255 - v])
            });
            let ext = if i == 3 { "png" } else { "jpg" };
            img.save(dir.join(format!("img.{i}.{ext}"))).unwrap();
        }
    }
}

fn err<T>(r: Result<T, datasets::DataError>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn pack(root: &Path, out: &Path, max_bytes: u64) -> wds::PackSummary {
    let f = ImageFolder::open(root, "train").unwrap();
    wds::pack_folder(&f, out, "train", max_bytes, None, &|_| {}).unwrap()
}

#[test]
fn packed_shards_read_back_as_the_folder_sample_for_sample() {
    let t = tempfile::tempdir().unwrap();
    let (root, out) = (t.path().join("folder"), t.path().join("shards"));
    folder(&root);
    let s = pack(&root, &out, 4096);
    assert_eq!(s.samples, 12);
    assert!(s.shards.len() >= 3, "{s:?}");
    assert_eq!(s.shards[0], out.join("train-000000.tar"));

    let f = ImageFolder::open(&root, "train").unwrap();
    assert_eq!(dataset::detect(&out).unwrap(), DataFormat::Wds);
    let w = dataset::open(&out, None, "train").unwrap();
    assert_eq!(
        (w.format(), w.len(), w.classes(), w.channels()),
        ("wds", 12, 3, 3)
    );
    for i in 0..12 {
        assert_eq!(w.label(i), f.label(i), "sample {i}");
        assert_eq!(w.dims(i).unwrap(), f.dims(i).unwrap(), "sample {i}");
        assert_eq!(w.image(i).unwrap(), f.image(i).unwrap(), "sample {i}");
    }
    let starts = w.file_starts().unwrap().to_vec();
    assert_eq!(starts.len(), s.shards.len());
    assert_eq!(starts[0], 0);
    assert!(starts.windows(2).all(|p| p[0] < p[1]), "{starts:?}");
    // Each shard within the bound, unless one sample alone is larger.
    let mut ends = starts[1..].to_vec();
    ends.push(12);
    for (k, path) in s.shards.iter().enumerate() {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(
            size <= 4096 || ends[k] - starts[k] == 1,
            "{}: {size}",
            path.display()
        );
    }
    let direct = WebDataset::open(&out, "train", &OpenOptions::default()).unwrap();
    assert_eq!(direct.key(0), "ant/img_0");
    assert_eq!(direct.key(11), "cow/img_3");

    // The index is written once and reused; a brace pattern and the directory are one dataset.
    assert!(out.join(wds::INDEX_FILE).exists());
    let pattern = out.join(format!("train-{{000000..{:06}}}.tar", s.shards.len() - 1));
    let p = dataset::open(&pattern, None, "train").unwrap();
    assert_eq!(p.fingerprint(), w.fingerprint());
    // The same samples in other shards: the same fingerprint; one sample fewer: another.
    let (out2, out3) = (t.path().join("one"), t.path().join("fewer"));
    pack(&root, &out2, 1 << 30);
    let one = dataset::open(&out2.join("train-000000.tar"), None, "train").unwrap();
    assert_eq!(one.fingerprint(), w.fingerprint());
    std::fs::remove_file(root.join("train/cow/img.3.png")).unwrap();
    pack(&root, &out3, 1 << 30);
    let fewer = dataset::open(&out3, None, "train").unwrap();
    assert_ne!(
        fewer.fingerprint().content_xxh3,
        w.fingerprint().content_xxh3
    );

    // Packing is deterministic: the same folder gives the same bytes.
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    pack(&root, &a, 1 << 30);
    pack(&root, &b, 1 << 30);
    assert_eq!(
        std::fs::read(a.join("train-000000.tar")).unwrap(),
        std::fs::read(b.join("train-000000.tar")).unwrap()
    );
    // Packing over existing shards is refused.
    let f = ImageFolder::open(&root, "train").unwrap();
    let e = err(wds::pack_folder(&f, &a, "train", 1 << 30, None, &|_| {}));
    assert!(
        e.contains("train-000000.tar") && e.contains("already exists"),
        "{e}"
    );
    // Shuffled: a permutation of the same samples (and labels follow their images).
    let sh = t.path().join("shuffled");
    wds::pack_folder(&f, &sh, "train", 1 << 30, Some(5), &|_| {}).unwrap();
    let s = WebDataset::open(&sh, "train", &OpenOptions::default()).unwrap();
    let keys: Vec<&str> = (0..s.len()).map(|i| s.key(i)).collect();
    assert_ne!(
        keys,
        (0..f.len()).map(|i| direct.key(i)).collect::<Vec<_>>()
    );
    for i in 0..s.len() {
        let class = keys[i as usize].split('/').next().unwrap();
        assert_eq!(["ant", "bee", "cow"][s.label(i).unwrap() as usize], class);
    }
}

#[test]
fn splits_options_and_a_changed_shard() {
    let t = tempfile::tempdir().unwrap();
    let (root, out) = (t.path().join("folder"), t.path().join("shards"));
    folder(&root);
    let f = ImageFolder::open(&root, "train").unwrap();
    wds::pack_folder(&f, &out, "train", 1 << 30, None, &|_| {}).unwrap();
    wds::pack_folder(&f, &out, "val", 1 << 30, None, &|_| {}).unwrap();
    std::fs::rename(out.join("val-000000.tar"), out.join("x-validation-0.tar")).unwrap();
    let train = WebDataset::open(&out, "train", &OpenOptions::default()).unwrap();
    assert_eq!(train.shards(), [out.join("train-000000.tar")]);
    // `test` falls back to the validation shards; an unknown split names the ones there are.
    let test = WebDataset::open(&out, "test", &OpenOptions::default()).unwrap();
    assert_eq!(test.shards(), [out.join("x-validation-0.tar")]);
    let e = err(WebDataset::open(&out, "holdout", &OpenOptions::default()));
    assert!(
        e.contains("holdout") && e.contains("train, validation"),
        "{e}"
    );

    // --classes: more classes than the labels show; fewer is an error naming the sample.
    let opts = OpenOptions {
        label_key: None,
        classes: Some(1000),
        default_classes: None,
        ..OpenOptions::default()
    };
    assert_eq!(
        dataset::open_with(&out, None, "train", &opts)
            .unwrap()
            .classes(),
        1000
    );
    // A store's class count stands in for --classes on shards; a folder keeps its own.
    let opts = OpenOptions {
        default_classes: Some(10),
        ..OpenOptions::default()
    };
    assert_eq!(
        dataset::open_with(&out, None, "train", &opts)
            .unwrap()
            .classes(),
        10
    );
    assert_eq!(
        dataset::open_with(&root, None, "train", &opts)
            .unwrap()
            .classes(),
        3
    );
    let opts = OpenOptions {
        label_key: None,
        classes: Some(2),
        default_classes: None,
        ..OpenOptions::default()
    };
    let e = err(dataset::open_with(&out, None, "train", &opts));
    assert!(
        e.contains("cow/img_0") && e.contains("not below `classes` 2"),
        "{e}"
    );
    // Another label key: this data has none of it.
    let opts = OpenOptions {
        label_key: Some("cls2".into()),
        classes: None,
        default_classes: None,
        ..OpenOptions::default()
    };
    let e = err(dataset::open_with(&out, None, "train", &opts));
    assert!(
        e.contains("train-000000.tar") && e.contains("ant/img_0") && e.contains(".cls2"),
        "{e}"
    );
    // A label key for a format without label members.
    let e = err(dataset::open_with(&root, None, "train", &opts));
    assert!(e.contains("`label_key`"), "{e}");

    // A shard replaced under the index: scanned again, not trusted.
    std::fs::remove_file(root.join("train/ant/img.0.jpg")).unwrap();
    let f = ImageFolder::open(&root, "train").unwrap();
    let t2 = tempfile::tempdir().unwrap();
    wds::pack_folder(&f, t2.path(), "train", 1 << 30, None, &|_| {}).unwrap();
    std::fs::copy(
        t2.path().join("train-000000.tar"),
        out.join("train-000000.tar"),
    )
    .unwrap();
    let again = WebDataset::open(&out, "train", &OpenOptions::default()).unwrap();
    assert_eq!(again.len(), 11);
    assert_eq!(again.key(0), "ant/img_1");
    assert_eq!(again.image(0).unwrap(), f.image(0).unwrap());
}

/// A tar of `members` (name, bytes), as any writer makes them.
fn tar_of(path: &Path, members: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 9]));
    let mut v = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    v
}

fn open_dir(d: &Path) -> Result<WebDataset, datasets::DataError> {
    WebDataset::open(d, "train", &OpenOptions::default())
}

#[test]
fn bad_shards_name_the_shard_and_the_key() {
    let t = tempfile::tempdir().unwrap();
    let j = jpeg();
    let dir = |name: &str| -> PathBuf {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // Good: other members are ignored, a JSON beside the image is fine.
    let good = dir("good");
    tar_of(
        &good.join("a.tar"),
        &[
            ("k1.jpg", &j),
            ("k1.cls", b"3\n"),
            ("k1.json", b"{}"),
            ("k2.jpeg", &j),
            ("k2.cls", b"0"),
        ],
    );
    let d = open_dir(&good).unwrap();
    assert_eq!(
        (d.len(), d.classes(), d.label(0), d.label(1)),
        (2, 4, Some(3), Some(0))
    );

    // Truncated inside a member, and exactly at a member boundary (no end-of-archive block).
    let whole = std::fs::read(good.join("a.tar")).unwrap();
    let cut = dir("cut");
    std::fs::write(cut.join("a.tar"), &whole[..512 + j.len() / 2]).unwrap();
    let e = err(open_dir(&cut));
    assert!(
        e.contains("a.tar") && e.contains("truncated") && e.contains("k1.jpg"),
        "{e}"
    );
    let boundary = dir("boundary");
    let end = whole.len() - whole.iter().rev().take_while(|&&b| b == 0).count();
    let end = end.div_ceil(512) * 512;
    std::fs::write(boundary.join("a.tar"), &whole[..end]).unwrap();
    let e = err(open_dir(&boundary));
    assert!(
        e.contains("a.tar") && e.contains("truncated") && e.contains("k2.cls"),
        "{e}"
    );

    // A sample without a label, one without an image, a label that is no number.
    let nolabel = dir("nolabel");
    tar_of(
        &nolabel.join("s.tar"),
        &[("k1.jpg", &j), ("k1.cls", b"1"), ("k2.jpg", &j)],
    );
    let e = err(open_dir(&nolabel));
    assert!(
        e.contains("s.tar") && e.contains("\"k2\"") && e.contains("no label member .cls"),
        "{e}"
    );
    // Read unlabelled, samples need no label member (and a labelled index entry serves too).
    let unlabelled = OpenOptions {
        unlabelled: true,
        ..OpenOptions::default()
    };
    let d = WebDataset::open(&nolabel, "train", &unlabelled).unwrap();
    assert_eq!(
        (d.len(), d.classes(), d.label(0), d.labelled()),
        (2, 0, None, false)
    );
    let d = WebDataset::open(&good, "train", &unlabelled).unwrap();
    assert_eq!((d.len(), d.label(0)), (2, None));
    assert_eq!(
        d.fingerprint().content_xxh3,
        open_dir(&good).unwrap().fingerprint().content_xxh3
    );
    let noimage = dir("noimage");
    tar_of(
        &noimage.join("s.tar"),
        &[("k1.webp", b"RIFF"), ("k1.cls", b"1")],
    );
    let e = err(open_dir(&noimage));
    assert!(
        e.contains("\"k1\"") && e.contains("no image member") && e.contains("webp"),
        "{e}"
    );
    let nan = dir("nan");
    tar_of(&nan.join("s.tar"), &[("k1.jpg", &j), ("k1.cls", b"dog")]);
    let e = err(open_dir(&nan));
    assert!(
        e.contains("\"k1\"") && e.contains("not a class number"),
        "{e}"
    );

    // Duplicate keys: apart in one shard, and across two shards.
    let dup = dir("dup");
    tar_of(
        &dup.join("s.tar"),
        &[
            ("k1.jpg", &j),
            ("k1.cls", b"1"),
            ("k2.jpg", &j),
            ("k2.cls", b"1"),
            ("k1.cls", b"2"),
        ],
    );
    let e = err(open_dir(&dup));
    assert!(
        e.contains("s.tar") && e.contains("duplicate key \"k1\""),
        "{e}"
    );
    let dup2 = dir("dup2");
    tar_of(&dup2.join("a.tar"), &[("k1.jpg", &j), ("k1.cls", b"1")]);
    tar_of(&dup2.join("b.tar"), &[("k1.jpg", &j), ("k1.cls", b"1")]);
    let e = err(open_dir(&dup2));
    assert!(
        e.contains("b.tar") && e.contains("duplicate key \"k1\"") && e.contains("a.tar"),
        "{e}"
    );

    // A brace pattern naming a shard that is not there.
    let e = err(dataset::open(&good.join("{a,b}.tar"), None, "train"));
    assert!(e.contains("b.tar") && e.contains("no such shard"), "{e}");
    // An image that does not decode: the error names shard, sample and key.
    let junk = dir("junk");
    let mut bad = j.clone();
    bad.truncate(j.len() / 2);
    tar_of(&junk.join("s.tar"), &[("k1.jpg", &bad), ("k1.cls", b"1")]);
    match open_dir(&junk) {
        Ok(d) => {
            let e = d.image(0).unwrap_err().to_string();
            assert!(
                e.contains("s.tar") && e.contains("k1") && e.contains("cannot decode"),
                "{e}"
            );
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("s.tar") && e.contains("k1"), "{e}");
        }
    }
}
