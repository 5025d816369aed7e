//! A stream over a list of a labelled and an unlabelled dataset (issue 28's labelled + transfer
//! set): a record has a hard label exactly when its sample and its mix partner both do, and
//! `hard_rows()` counts those rows, the records a cross-entropy term averages over.

use datasets::{DataList, Dataset, OpenOptions, write_idx};
use replay::sampler::{Sampler, load_recipe};
use replay::stream::{Source, Stream, StreamConfig};
use std::path::Path;
use std::sync::Arc;

const N: u32 = 24;

/// `N` 8×8 digits of split train under `dir`, class `i % 10`.
fn digits(dir: &Path, salt: u8) {
    let images: Vec<u8> = (0..N as usize * 64)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect();
    let labels: Vec<u8> = (0..N as u8).map(|i| i % 10).collect();
    write_idx(
        &dir.join("train-images-idx3-ubyte"),
        &dir.join("train-labels-idx1-ubyte"),
        8,
        8,
        &images,
        &labels,
    )
    .unwrap();
}

#[test]
fn lists_carry_hard_labels_only_where_sample_and_partner_have_one() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for (d, salt) in [(&a, 0), (&b, 100)] {
        std::fs::create_dir_all(d).unwrap();
        digits(d, salt);
    }
    let labelled = datasets::open(&a, None, "train").unwrap();
    let transfer = OpenOptions {
        unlabelled: true,
        ..OpenOptions::default()
    };
    let unlabelled = datasets::open_with(&b, None, "train", &transfer).unwrap();
    let list = DataList::new(vec![labelled, unlabelled]).unwrap();
    assert_eq!(
        (list.len(), list.classes(), list.labelled()),
        (2 * N, 10, true)
    );
    assert_eq!((list.label(3), list.label(N + 3)), (Some(3), None));
    assert_eq!(list.parts().len(), 2);
    let f = list.fingerprint();
    assert_eq!(
        (f.format.as_str(), f.samples, f.labelled),
        ("list", 48, false)
    );
    let data: Arc<dyn Dataset> = Arc::new(list);

    // usi mixes half the records, with partners from both parts.
    let recipe = load_recipe("usi").unwrap();
    let sampler = Arc::new(Sampler::new(&recipe, 3, 2 * N, 8, 8).unwrap());
    let stream = Stream::new(
        Arc::clone(&data),
        Source::Sampler(Arc::clone(&sampler)),
        StreamConfig::training(8, 1, 0, vec![0.5], vec![0.5], (8, 8)),
    )
    .unwrap();
    let samples: Vec<u32> = (0..2 * N).collect();
    let batch = stream.make_batch(0, &samples, None, None).unwrap();
    let (mut want, mut mixed_across) = (0, 0);
    for (i, &s) in samples.iter().enumerate() {
        let p = sampler.sample(0, s, &|j| data.dims(j)).unwrap();
        let partner = p.mix.as_ref().map(|m| m.partner);
        let has = s < N && partner.is_none_or(|q| q < N);
        mixed_across += usize::from(s < N && partner.is_some_and(|q| q >= N));
        want += usize::from(has);
        let row = &batch.hard[i * 10..(i + 1) * 10];
        let sum: f32 = row.iter().sum();
        assert_eq!(sum > 0.5, has, "sample {s}, partner {partner:?}: {row:?}");
        assert_eq!(batch.has_hard[i], has, "sample {s}");
        assert_eq!(batch.labels[i] == replay::batch::NO_LABEL, s >= N);
    }
    assert_eq!(batch.hard_rows(), want);
    assert!(
        mixed_across > 0,
        "some labelled samples mixed with unlabelled ones"
    );
    assert!(want > 0 && want < N as usize);
}
