//! Each dataset reader on small files the test writes, and their bad-input errors.

use datasets::{self as dataset, DataFormat, Dataset, write_idx, write_npy};
use std::io::Write;
use std::path::Path;

fn err(r: Result<Box<dyn Dataset>, datasets::DataError>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn mnist_files(dir: &Path, gz: bool) -> (Vec<u8>, Vec<u8>) {
    let images: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    let labels = vec![3u8, 0, 9];
    let (ip, lp) = (
        dir.join("train-images-idx3-ubyte"),
        dir.join("train-labels-idx1-ubyte"),
    );
    write_idx(&ip, &lp, 4, 5, &images, &labels).unwrap();
    if gz {
        for p in [&ip, &lp] {
            let raw = std::fs::read(p).unwrap();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&raw).unwrap();
            std::fs::write(p.with_extension("gz"), enc.finish().unwrap()).unwrap();
            std::fs::remove_file(p).unwrap();
        }
    }
    (images, labels)
}

#[test]
fn mnist_idx_plain_and_gzipped() {
    for gz in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let (images, labels) = mnist_files(t.path(), gz);
        assert_eq!(dataset::detect(t.path()).unwrap(), DataFormat::Mnist);
        let d = dataset::open(t.path(), None, "train").unwrap();
        assert_eq!((d.len(), d.classes(), d.channels()), (3, 10, 1));
        assert_eq!(d.dims(0).unwrap(), (5, 4));
        assert_eq!(d.label(2), Some(u32::from(labels[2])));
        let img = d.image(1).unwrap();
        assert_eq!((img.width, img.height), (5, 4));
        assert_eq!(img.data, images[20..40]);
        assert_eq!(d.fingerprint().samples, 3);
        let e = err(dataset::open(t.path(), None, "test"));
        assert!(
            e.contains("t10k-images-idx3-ubyte") && e.contains("missing"),
            "{e}"
        );
    }
}

#[test]
fn mnist_truncated_or_corrupt() {
    let t = tempfile::tempdir().unwrap();
    mnist_files(t.path(), false);
    let ip = t.path().join("train-images-idx3-ubyte");
    let good = std::fs::read(&ip).unwrap();
    std::fs::write(&ip, &good[..good.len() - 1]).unwrap();
    let e = err(dataset::open(t.path(), None, "train"));
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
    let mut bad = good.clone();
    bad[2] = 0x0d;
    std::fs::write(&ip, &bad).unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("not u8"));
    std::fs::write(&ip, &good).unwrap();
    let lp = t.path().join("train-labels-idx1-ubyte");
    // Two labels for the three images.
    write_idx(&t.path().join("scratch"), &lp, 4, 5, &[0; 40], &[1, 2]).unwrap();
    let e = err(dataset::open(t.path(), None, "train"));
    assert!(e.contains("2 labels for 3 images"), "{e}");
    std::fs::write(&ip, b"\x00\x00\x08").unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("bad magic"));
    // Zero samples.
    write_idx(&ip, &lp, 4, 5, &[], &[]).unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("no sample"));
}

fn cifar_record(label: &[u8], seed: u8) -> Vec<u8> {
    let mut r = label.to_vec();
    r.extend((0..3072).map(|i| (i as u8).wrapping_mul(seed)));
    r
}

#[test]
fn cifar_10_and_100() {
    let t = tempfile::tempdir().unwrap();
    let batch: Vec<u8> = [cifar_record(&[7], 3), cifar_record(&[2], 5)].concat();
    std::fs::write(t.path().join("test_batch.bin"), &batch).unwrap();
    let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
    std::fs::write(t.path().join("batches.meta.txt"), names).unwrap();
    assert_eq!(dataset::detect(t.path()).unwrap(), DataFormat::Cifar10);
    let d = dataset::open(t.path(), None, "test").unwrap();
    assert_eq!((d.len(), d.classes(), d.channels()), (2, 10, 3));
    assert_eq!(d.label(0), Some(7));
    assert_eq!(d.class_names().unwrap()[7], "class7");
    let img = d.image(1).unwrap();
    // Planar R, G, B → HWC: pixel 1's channels come from offsets 1, 1025, 2049.
    let p = |i: usize| (i as u8).wrapping_mul(5);
    assert_eq!(&img.data[3..6], &[p(1), p(1025), p(2049)]);
    std::fs::write(t.path().join("test_batch.bin"), &batch[..5000]).unwrap();
    let e = err(dataset::open(t.path(), None, "test"));
    assert!(
        e.contains("test_batch.bin") && e.contains("whole number"),
        "{e}"
    );

    let t = tempfile::tempdir().unwrap();
    let b: Vec<u8> = [cifar_record(&[1, 42], 1), cifar_record(&[3, 99], 2)].concat();
    std::fs::write(t.path().join("train.bin"), &b).unwrap();
    assert_eq!(dataset::detect(t.path()).unwrap(), DataFormat::Cifar100);
    let d = dataset::open(t.path(), None, "train").unwrap();
    assert_eq!(
        (d.classes(), d.label(0), d.label(1)),
        (100, Some(42), Some(99))
    );
    let bad: Vec<u8> = cifar_record(&[1, 100], 1);
    std::fs::write(t.path().join("train.bin"), &bad).unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("label 100"));
}

#[test]
fn npy_arrays() {
    let t = tempfile::tempdir().unwrap();
    let px: Vec<u8> = (0..2 * 3 * 4 * 3).map(|i| i as u8).collect();
    write_npy(
        &t.path().join("train_images.npy"),
        "|u1",
        &[2, 3, 4, 3],
        &px,
    )
    .unwrap();
    let labels: Vec<u8> = [5i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&t.path().join("train_labels.npy"), "<i8", &[2], &labels).unwrap();
    assert_eq!(dataset::detect(t.path()).unwrap(), DataFormat::Npy);
    let d = dataset::open(t.path(), None, "train").unwrap();
    assert_eq!(
        (d.len(), d.classes(), d.channels(), d.dims(0).unwrap()),
        (2, 6, 3, (4, 3))
    );
    assert_eq!(d.image(1).unwrap().data, px[36..]);
    assert_eq!(d.label(0), Some(5));
    write_npy(&t.path().join("train_images.npy"), "<f4", &[2, 3, 3], &px).unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("not u8"));
    write_npy(
        &t.path().join("train_images.npy"),
        "|u1",
        &[2, 3, 4, 3],
        &px[..50],
    )
    .unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("needs 72 bytes"));
    let neg: Vec<u8> = [-1i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        &t.path().join("train_images.npy"),
        "|u1",
        &[2, 3, 4, 3],
        &px,
    )
    .unwrap();
    write_npy(&t.path().join("train_labels.npy"), "<i8", &[2], &neg).unwrap();
    assert!(err(dataset::open(t.path(), None, "train")).contains("negative label"));
    // Malformed headers are errors, not panics.
    for header in [
        "{'descr': \u{e9}|u1', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<i8', 'fortran_order': False, 'shape': ), }",
        "{'descr': '<i8', 'fortran_order': False, 'shape': (99999999999999999999,), }",
    ] {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        std::fs::write(t.path().join("train_labels.npy"), &b).unwrap();
        let e = err(dataset::open(t.path(), None, "train"));
        assert!(e.contains("train_labels.npy"), "{e}");
    }
}

fn save(img: image::DynamicImage, path: &Path) {
    img.save(path).unwrap();
}

#[test]
fn image_folders_convert_and_refuse_clearly() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for c in ["cat", "dog"] {
        std::fs::create_dir_all(root.join("train").join(c)).unwrap();
    }
    let rgb = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
    save(
        image::DynamicImage::ImageRgb8(rgb.clone()),
        &root.join("train/cat/a.png"),
    );
    let gray = image::GrayImage::from_fn(5, 5, |x, _| image::Luma([x as u8 * 50]));
    save(
        image::DynamicImage::ImageLuma8(gray),
        &root.join("train/cat/b.png"),
    );
    let rgba = image::RgbaImage::from_fn(3, 2, |_, _| image::Rgba([10, 20, 30, 0]));
    save(
        image::DynamicImage::ImageRgba8(rgba),
        &root.join("train/dog/c.png"),
    );
    save(
        image::DynamicImage::ImageRgb8(rgb),
        &root.join("train/dog/d.jpg"),
    );
    std::fs::write(root.join("train/dog/.DS_Store"), b"junk").unwrap();

    assert_eq!(dataset::detect(root).unwrap(), DataFormat::ImageFolder);
    let d = dataset::open(root, None, "train").unwrap();
    assert_eq!((d.len(), d.classes(), d.channels()), (4, 2, 3));
    assert_eq!(d.class_names().unwrap(), ["cat", "dog"]);
    assert_eq!((d.label(1), d.label(2)), (Some(0), Some(1)));
    assert_eq!(d.dims(0).unwrap(), (6, 4));
    let a = d.image(0).unwrap();
    assert_eq!(&a.data[..3], &[0, 0, 7]);
    let b = d.image(1).unwrap();
    assert_eq!(&b.data[3..6], &[50, 50, 50], "grayscale replicated to RGB");
    let c = d.image(2).unwrap();
    assert_eq!(&c.data[..3], &[10, 20, 30], "alpha dropped");
    let jpg = d.image(3).unwrap();
    assert_eq!((jpg.width, jpg.height, jpg.channels), (6, 4, 3));

    // A PNG cut short: its header gives the size, decoding it fails naming file and sample.
    let whole = std::fs::read(root.join("train/cat/a.png")).unwrap();
    std::fs::write(root.join("train/dog/e.png"), &whole[..whole.len() - 20]).unwrap();
    let d = dataset::open(root, None, "train").unwrap();
    assert_eq!(d.dims(4).unwrap(), (6, 4));
    let e = d.image(4).unwrap_err().to_string();
    assert!(e.contains("e.png") && e.contains("sample 4"), "{e}");
    std::fs::remove_file(root.join("train/dog/e.png")).unwrap();
    // Not an image at all: opening names the file.
    std::fs::write(root.join("train/dog/e.jpg"), b"not a jpeg at all").unwrap();
    let e = err(dataset::open(root, None, "train"));
    assert!(
        e.contains("e.jpg") && e.contains("cannot read image size"),
        "{e}"
    );
    std::fs::remove_file(root.join("train/dog/e.jpg")).unwrap();
    std::fs::write(root.join("train/dog/notes.txt"), b"hello").unwrap();
    let e = err(dataset::open(root, None, "train"));
    assert!(
        e.contains("notes.txt") && e.contains("not a JPEG or PNG"),
        "{e}"
    );
    std::fs::remove_file(root.join("train/dog/notes.txt")).unwrap();
    std::fs::create_dir_all(root.join("train/emu")).unwrap();
    let e = err(dataset::open(root, None, "train"));
    assert!(e.contains("emu") && e.contains("empty class folder"), "{e}");
    let e = err(dataset::open(
        &root.join("train/cat"),
        Some(DataFormat::ImageFolder),
        "x",
    ));
    assert!(e.contains("no class sub-folders"), "{e}");
}

/// A folder of `n` PNGs per class (`w`×`h`) under `root/split/cCLASS/`.
fn png_folder(root: &Path, split: &str, classes: usize, n: usize, w: u32, h: u32) {
    for c in 0..classes {
        let dir = root.join(split).join(format!("c{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img =
                image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, i as u8]));
            save(
                image::DynamicImage::ImageRgb8(img),
                &dir.join(format!("{i}.png")),
            );
        }
    }
}

#[test]
fn image_sizes_come_from_the_dataset_index_until_a_file_changes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    png_folder(root, "train", 2, 3, 7, 5);
    let d = dataset::open(root, None, "train").unwrap();
    assert_eq!(d.dims(4).unwrap(), (7, 5));
    assert_eq!(d.uniform_dims().unwrap(), (7, 5));
    let index = root.join("train").join(dataset::folder_index::INDEX_FILE);
    assert!(index.exists());
    let fp = d.fingerprint().clone();
    // Replace a file by garbage of the same size and the same mtime: the index still answers,
    // so the second open read no header (a read would fail on the garbage).
    let f = root.join("train/c1/0.png");
    let md = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, vec![7u8; md.len() as usize]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(md.modified().unwrap())
        .unwrap();
    let again = dataset::open(root, None, "train").unwrap();
    assert_eq!(again.dims(3).unwrap(), (7, 5));
    assert_eq!(
        again.fingerprint(),
        &fp,
        "the fingerprint comes from the same entries"
    );
    // A changed mtime invalidates the entry: the header is read again, and here it is garbage.
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let e = err(dataset::open(root, None, "train"));
    assert!(
        e.contains("0.png") && e.contains("cannot read image size"),
        "{e}"
    );
    // A new image of another size: the index is rebuilt, and a size must then be given.
    let img = image::RgbImage::from_fn(9, 5, |_, _| image::Rgb([1, 2, 3]));
    save(image::DynamicImage::ImageRgb8(img), &f);
    let d = dataset::open(root, None, "train").unwrap();
    assert_eq!(d.dims(3).unwrap(), (9, 5));
    let e = d.uniform_dims().unwrap_err().to_string();
    assert!(
        e.contains("0.png") && e.contains("images differ in size") && e.contains("`size`"),
        "{e}"
    );
    // A damaged index is ignored and rewritten.
    std::fs::write(&index, b"DSTLIDX1 garbage").unwrap();
    let d = dataset::open(root, None, "train").unwrap();
    assert_eq!(d.dims(3).unwrap(), (9, 5));
    assert!(dataset::folder_index::load(&root.join("train")).is_some());
}

#[test]
fn imagenet_layout_tests_on_val_and_names_missing_splits() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    png_folder(root, "train", 2, 2, 4, 4);
    png_folder(root, "val", 2, 1, 4, 4);
    let test = dataset::open(root, None, "test").unwrap();
    assert_eq!(test.len(), 2, "test falls back to val/");
    let e = err(dataset::open(root, None, "holdout"));
    assert!(
        e.contains("no split \"holdout\"") && e.contains("train/, val/"),
        "{e}"
    );
    // Without split folders the root's sub-folders are the classes, as before.
    let flat = root.join("train");
    assert_eq!(
        dataset::open(&flat, Some(DataFormat::ImageFolder), "x")
            .unwrap()
            .len(),
        4
    );
}

fn open_unlabelled(path: &Path) -> Result<Box<dyn Dataset>, datasets::DataError> {
    let opts = dataset::OpenOptions {
        unlabelled: true,
        ..Default::default()
    };
    dataset::open_with(path, None, "train", &opts)
}

#[test]
fn unlabelled_folders_are_every_image_at_any_depth_in_path_order() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    png_folder(root, "train", 2, 2, 4, 3);
    let labelled = dataset::open(root, None, "train").unwrap();
    let d = open_unlabelled(root).unwrap();
    // Class folders read without classes: the same files in the same order, so the same
    // content fingerprint; no labels, no classes.
    assert_eq!(
        (d.len(), d.classes(), d.label(0), d.labelled()),
        (4, 0, None, false)
    );
    assert!(d.class_names().is_none());
    let (a, b) = (labelled.fingerprint(), d.fingerprint());
    assert_eq!((&a.content_xxh3, a.labelled), (&b.content_xxh3, true));
    assert_ne!(a.labels_xxh3, b.labels_xxh3);
    assert!(a.mismatch(b).unwrap().starts_with("dataset.labelled"));
    for i in 0..4 {
        assert_eq!(
            d.image(i).unwrap(),
            labelled.image(i).unwrap(),
            "sample {i}"
        );
    }
    // Deeper folders and images beside the class folders count; hidden ones do not; the order
    // is by path, component by component ("c0/x/…" after "c0/1.png", "c0-b" after "c0").
    png_folder(&root.join("train/c0"), "x", 1, 1, 5, 5);
    png_folder(&root.join("train/c0-b"), ".hidden", 1, 1, 5, 5);
    std::fs::copy(root.join("train/c1/0.png"), root.join("train/top.png")).unwrap();
    std::fs::copy(root.join("train/c1/0.png"), root.join("train/c0-b/z.png")).unwrap();
    let d = open_unlabelled(root).unwrap();
    assert_eq!(d.len(), 7);
    let dims: Vec<(u32, u32)> = (0..7).map(|i| d.dims(i).unwrap()).collect();
    // c0/0, c0/1, c0/x/c0/0 (5×5), c0-b/z, c1/0, c1/1, top.
    assert_eq!(dims[2], (5, 5));
    assert_eq!(dims.iter().filter(|d| **d == (5, 5)).count(), 1);
    // With images beside the class folders, reading with classes is refused as before.
    let e = err(dataset::open(root, None, "train"));
    assert!(e.contains("nested folders"), "{e}");
    // A folder holding images directly (no split, no class folders) is a transfer set too.
    let flat = root.join("flat");
    png_folder(&flat, "", 1, 3, 4, 4);
    let only = flat.join("c0");
    let d = open_unlabelled(&only).unwrap();
    assert_eq!(d.len(), 3);
    let e = err(dataset::open(&only, Some(DataFormat::ImageFolder), "train"));
    assert!(
        e.contains("no class sub-folders") && e.contains("`unlabelled`"),
        "{e}"
    );
    // A file of another kind is named.
    std::fs::write(only.join("notes.txt"), b"hi").unwrap();
    let e = err(open_unlabelled(&only));
    assert!(
        e.contains("notes.txt") && e.contains("not a JPEG or PNG"),
        "{e}"
    );
}

#[test]
fn unlabelled_arrays_keep_their_pixels_and_drop_their_labels() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    mnist_files(dir, false);
    let labelled = dataset::open(dir, None, "train").unwrap();
    let d = open_unlabelled(dir).unwrap();
    assert_eq!(
        (d.len(), d.classes(), d.label(1), d.labelled()),
        (3, 0, None, false)
    );
    assert_eq!(d.image(2).unwrap(), labelled.image(2).unwrap());
    let (a, b) = (labelled.fingerprint(), d.fingerprint());
    assert_eq!((&a.format, &a.content_xxh3), (&b.format, &b.content_xxh3));
    assert!(!b.labelled);
    // Settings about hard labels make no sense then, and say so.
    let opts = dataset::OpenOptions {
        unlabelled: true,
        classes: Some(10),
        ..Default::default()
    };
    let e = err(dataset::open_with(dir, None, "train", &opts));
    assert!(e.contains("`classes`") && e.contains("`unlabelled`"), "{e}");
}
