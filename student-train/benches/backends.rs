//! CPU backends for training: burn-flex against burn-ndarray on the same training step
//! (forward, cross-entropy, backward, SGD update), lenet5 on 28×28 and resnet20 on 32×32,
//! batch 64, in the same run. The faster one that builds everywhere is the CPU default.
//!
//! Run: `cargo bench -p student-train --bench backends`.

use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::Instant;
use student_train::loss::cross_entropy;
use student_train::models::{Lenet5Config, NormKind, ResnetConfig, Student};

const BATCH: usize = 64;

fn images_per_sec(
    device: &Device,
    make: &dyn Fn(&Device) -> Student,
    c: usize,
    side: usize,
    steps: usize,
) -> f64 {
    let mut model = make(device);
    let mut optim = SgdConfig::new().init();
    let x: Vec<f32> = (0..BATCH * c * side * side)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let mut y = vec![0f32; BATCH * 10];
    for i in 0..BATCH {
        y[i * 10 + i % 10] = 1.0;
    }
    let x = Tensor::<4>::from_data(TensorData::new(x, [BATCH, c, side, side]), device);
    let y = Tensor::<2>::from_data(TensorData::new(y, [BATCH, 10]), device);
    let mut step = |model: Student| {
        let loss = cross_entropy(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(0.01, model, grads);
        // Reading the loss back forces the work to finish before the clock is read.
        let _ = loss.into_data();
        model
    };
    for _ in 0..2 {
        model = step(model);
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        model = step(model);
    }
    (steps * BATCH) as f64 / t0.elapsed().as_secs_f64()
}

/// One measured model: how to build it and its input.
struct Case {
    name: &'static str,
    make: fn(&Device) -> Student,
    channels: usize,
    side: usize,
    steps: usize,
}

fn lenet5(d: &Device) -> Student {
    Student::Lenet5(
        Lenet5Config {
            channels: 1,
            size: 28,
            classes: 10,
            width: 1.0,
            norm: NormKind::None,
        }
        .init(d),
    )
}

fn resnet20(d: &Device) -> Student {
    Student::Resnet(ResnetConfig::cifar(20, 3, 10, 1.0, NormKind::Batch).init(d))
}

fn main() {
    let cases = [
        Case {
            name: "lenet5 28x28",
            make: lenet5,
            channels: 1,
            side: 28,
            steps: 30,
        },
        Case {
            name: "resnet20 32x32 (BatchNorm)",
            make: resnet20,
            channels: 3,
            side: 32,
            steps: 5,
        },
    ];
    println!("\n## CPU training step, batch {BATCH} (forward, CE, backward, SGD)");
    println!("| model | burn-flex images/s | burn-ndarray images/s | flex / ndarray |");
    println!("|---|---|---|---|");
    for c in &cases {
        let flex = images_per_sec(
            &Device::flex().autodiff(),
            &c.make,
            c.channels,
            c.side,
            c.steps,
        );
        // burn-ndarray is deprecated upstream; it is measured here to choose the CPU default.
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        let nd = images_per_sec(&ndarray.autodiff(), &c.make, c.channels, c.side, c.steps);
        println!("| {} | {flex:.0} | {nd:.0} | {:.2} |", c.name, flex / nd);
    }
}
