//! Batches onto the device. A batch crosses as u8 pixels (a quarter of f32) and is finished
//! there: `pixels / 255`, a mixup row's `λ·(a/255) + (1−λ)·(b/255)`, then `(x − mean) · 1/std`,
//! each the same IEEE operation `formats::apply` and `replay::normalize` do on the CPU, so the
//! device gets the inputs the CPU would have made, bit for bit (tested on burn-flex).

use burn::tensor::{DType, Device, Int, Tensor, TensorCreationOptions, TensorData};
use replay::batch::Inputs;

/// The `[n, c, h, w]` f32 input tensor of a batch's inputs on `device`, normalized with `mean`
/// and `std` (ignored for inputs already normalized on the CPU).
pub fn upload(
    inputs: Inputs,
    n: usize,
    (c, h, w): (usize, usize, usize),
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Tensor<4> {
    let shape = [n, c, h, w];
    let p = match inputs {
        Inputs::F32(v) => return Tensor::<4>::from_data(TensorData::new(v, shape), device),
        Inputs::U8(p) => p,
    };
    let u8s = |v: Vec<u8>| {
        Tensor::<4, Int>::from_data(
            TensorData::new(v, shape),
            TensorCreationOptions::new(device.clone()).with_dtype(DType::U8),
        )
        .float()
        .div_scalar(255.0)
    };
    let mut x = u8s(p.pixels);
    if let Some(m) = p.mix {
        let per_row =
            |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, 1, 1, 1]), device);
        x = x.mul(per_row(m.lambda)) + u8s(m.partner).mul(per_row(m.rest));
    }
    let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
    let per_channel =
        |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 1]), device);
    x.sub(per_channel(mean.to_vec())).mul(per_channel(inv))
}
