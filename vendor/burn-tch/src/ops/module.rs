use crate::{IntoKind, LibTorch, TchTensor};
use burn_backend::{
    IntDType, TensorMetadata,
    ops::{
        AttentionModuleOptions, BatchNormTrain, BatchNormTrainBackward, ConvOptions,
        ConvTransposeOptions, DeformConv2dBackward, DeformConvOptions, InterpolateMode,
        InterpolateOptions, MaxPool1dWithIndices, MaxPool2dBackward, MaxPool2dWithIndices,
        ModuleOps, attention::attention_fallback, conv::pad_asymmetric_conv_input,
    },
    tensor::{FloatTensor, IntTensor},
};

impl ModuleOps<Self> for LibTorch {
    fn embedding(weights: TchTensor, indices: TchTensor) -> TchTensor {
        // Workaround for MPS "Placeholder storage has not been allocated" error.
        // See: https://github.com/pytorch/pytorch/issues/123995
        // MPS uses lazy allocation and the embedding operation (which uses index_select)
        // can fail if the tensors haven't been materialized yet.
        // We work around this by performing the embedding on CPU and transferring back to MPS.
        if matches!(weights.tensor.device(), tch::Device::Mps) {
            let cpu_weights = weights.tensor.to(tch::Device::Cpu);
            let cpu_indices = indices.tensor.to(tch::Device::Cpu);
            let result = tch::Tensor::embedding(&cpu_weights, &cpu_indices, -1, false, false)
                .to(tch::Device::Mps);
            return TchTensor::new(result);
        }

        let tensor = tch::Tensor::embedding(&weights.tensor, &indices.tensor, -1, false, false);
        TchTensor::new(tensor)
    }

    fn embedding_backward(weights: TchTensor, output: TchTensor, indices: TchTensor) -> TchTensor {
        let [n_embedding, _d_model] = weights.shape().dims();

        // Workaround for MPS "Placeholder storage has not been allocated" error.
        // See: https://github.com/pytorch/pytorch/issues/123995
        if matches!(output.tensor.device(), tch::Device::Mps) {
            let cpu_output = output.tensor.to(tch::Device::Cpu);
            let cpu_indices = indices.tensor.to(tch::Device::Cpu);
            let result = tch::Tensor::embedding_backward(
                &cpu_output,
                &cpu_indices,
                n_embedding as i64,
                -1,
                false,
                false,
            )
            .to(tch::Device::Mps);
            return TchTensor::new(result);
        }

        let tensor = tch::Tensor::embedding_backward(
            &output.tensor,
            &indices.tensor,
            n_embedding as i64,
            -1,
            false,
            false,
        );

        TchTensor::new(tensor)
    }

    fn conv1d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvOptions<1>,
    ) -> TchTensor {
        let (x, options) = pad_asymmetric_conv_input::<LibTorch, 1>(x, options);
        let tensor = tch::Tensor::conv1d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding_begin().map(|i| i as i64),
            options.dilation.map(|i| i as i64),
            options.groups as i64,
        );

        TchTensor::new(tensor)
    }

    fn conv2d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvOptions<2>,
    ) -> TchTensor {
        let (x, options) = pad_asymmetric_conv_input::<LibTorch, 2>(x, options);
        let tensor = tch::Tensor::conv2d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding_begin().map(|i| i as i64),
            options.dilation.map(|i| i as i64),
            options.groups as i64,
        );

        TchTensor::new(tensor)
    }

    // distill: the input and weight gradients from LibTorch's `convolution_backward`
    // (src/distill_native.cpp), not burn's transposed convolution and swapped-dims convolution.
    #[cfg(distill_native)]
    fn conv2d_x_backward(
        x: TchTensor,
        weight: TchTensor,
        output_grad: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        let size = x.tensor.size();
        let (asymmetric, padding) = (options.is_asymmetric(), options.padding);
        let (x, options) = pad_asymmetric_conv_input::<LibTorch, 2>(x, options);
        let (grad, _) = native::conv_backward(&x, &weight, &output_grad, &options, true, false);
        let mut grad = grad.expect("input gradient requested");
        if asymmetric {
            // The gradient of the padded input: keep the part over the real one.
            for (d, (begin, _)) in padding.iter().enumerate() {
                let dim = d as i64 + 2;
                grad = grad.narrow(dim, *begin as i64, size[d + 2]);
            }
        }
        TchTensor::new(grad)
    }

    #[cfg(distill_native)]
    fn conv2d_weight_backward(
        x: TchTensor,
        weight: TchTensor,
        output_grad: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        let (x, options) = pad_asymmetric_conv_input::<LibTorch, 2>(x, options);
        let (_, grad) = native::conv_backward(&x, &weight, &output_grad, &options, false, true);
        TchTensor::new(grad.expect("weight gradient requested"))
    }

    // distill: the bias gradient as one reduction over batch and pixels; burn's default swaps
    // dims 0 and 1 and reshapes first (a copy of the output gradient).
    fn conv2d_bias_backward(x: TchTensor, bias: TchTensor, output_grad: TchTensor) -> TchTensor {
        let _ = (x, bias);
        TchTensor::new(
            output_grad
                .tensor
                .sum_dim_intlist([0i64, 2, 3].as_slice(), false, None),
        )
    }

    fn conv3d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvOptions<3>,
    ) -> TchTensor {
        let tensor = tch::Tensor::conv3d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding_begin().map(|i| i as i64),
            options.dilation.map(|i| i as i64),
            options.groups as i64,
        );

        TchTensor::new(tensor)
    }

    fn deform_conv2d(
        _x: TchTensor,
        _offset: TchTensor,
        _weight: TchTensor,
        _mask: Option<TchTensor>,
        _bias: Option<TchTensor>,
        _options: DeformConvOptions<2>,
    ) -> TchTensor {
        unimplemented!("Torch bindings don't support deform_conv2d");
    }

    fn deform_conv2d_backward(
        _x: TchTensor,
        _offset: TchTensor,
        _weight: TchTensor,
        _mask: Option<TchTensor>,
        _bias: Option<TchTensor>,
        _out_grad: TchTensor,
        _options: DeformConvOptions<2>,
    ) -> DeformConv2dBackward<Self> {
        unimplemented!("Torch bindings don't support deform_conv2d");
    }

    fn conv_transpose1d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvTransposeOptions<1>,
    ) -> TchTensor {
        let tensor = tch::Tensor::conv_transpose1d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding.map(|i| i as i64),
            options.padding_out.map(|i| i as i64),
            options.groups as i64,
            options.dilation.map(|i| i as i64),
        );

        TchTensor::new(tensor)
    }

    fn conv_transpose2d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvTransposeOptions<2>,
    ) -> TchTensor {
        let tensor = tch::Tensor::conv_transpose2d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding.map(|i| i as i64),
            options.padding_out.map(|i| i as i64),
            options.groups as i64,
            options.dilation.map(|i| i as i64),
        );

        TchTensor::new(tensor)
    }

    fn conv_transpose3d(
        x: TchTensor,
        weight: TchTensor,
        bias: Option<TchTensor>,
        options: ConvTransposeOptions<3>,
    ) -> TchTensor {
        let tensor = tch::Tensor::conv_transpose3d(
            &x.tensor,
            &weight.tensor,
            bias.map(|t| t.tensor),
            options.stride.map(|i| i as i64),
            options.padding.map(|i| i as i64),
            options.padding_out.map(|i| i as i64),
            options.groups as i64,
            options.dilation.map(|i| i as i64),
        );

        TchTensor::new(tensor)
    }

    fn avg_pool1d(
        x: TchTensor,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        count_include_pad: bool,
        ceil_mode: bool,
    ) -> TchTensor {
        let tensor = tch::Tensor::avg_pool1d(
            &x.tensor,
            [kernel_size as i64],
            [stride as i64],
            [padding as i64],
            ceil_mode,
            count_include_pad,
        );

        TchTensor::new(tensor)
    }
    fn avg_pool2d(
        x: TchTensor,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        count_include_pad: bool,
        ceil_mode: bool,
    ) -> TchTensor {
        let tensor = tch::Tensor::avg_pool2d(
            &x.tensor,
            [kernel_size[0] as i64, kernel_size[1] as i64],
            [stride[0] as i64, stride[1] as i64],
            [padding[0] as i64, padding[1] as i64],
            ceil_mode,
            count_include_pad,
            None,
        );

        TchTensor::new(tensor)
    }

    fn avg_pool2d_backward(
        x: TchTensor,
        grad: TchTensor,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        count_include_pad: bool,
        ceil_mode: bool,
    ) -> TchTensor {
        let tensor = tch::Tensor::avg_pool2d_backward(
            &x.tensor,
            &grad.tensor,
            [kernel_size[0] as i64, kernel_size[1] as i64],
            [stride[0] as i64, stride[1] as i64],
            [padding[0] as i64, padding[1] as i64],
            ceil_mode,
            count_include_pad,
            None,
        );

        TchTensor::new(tensor)
    }

    fn max_pool1d(
        x: TchTensor,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        ceil_mode: bool,
    ) -> TchTensor {
        let tensor = tch::Tensor::max_pool1d(
            &x.tensor,
            kernel_size as i64,
            stride as i64,
            padding as i64,
            dilation as i64,
            ceil_mode,
        );

        TchTensor::new(tensor)
    }

    fn max_pool1d_with_indices(
        x: TchTensor,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        ceil_mode: bool,
        indices_dtype: IntDType,
    ) -> MaxPool1dWithIndices<Self> {
        let (tensor, indices) = tch::Tensor::max_pool1d_with_indices(
            &x.tensor,
            kernel_size as i64,
            stride as i64,
            padding as i64,
            dilation as i64,
            ceil_mode,
        );

        MaxPool1dWithIndices::new(
            TchTensor::new(tensor),
            TchTensor::new(indices.to_kind(indices_dtype.into_kind())),
        )
    }

    fn max_pool2d(
        x: TchTensor,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> TchTensor {
        let tensor = tch::Tensor::max_pool2d(
            &x.tensor,
            [kernel_size[0] as i64, kernel_size[1] as i64],
            [stride[0] as i64, stride[1] as i64],
            [padding[0] as i64, padding[1] as i64],
            [dilation[0] as i64, dilation[1] as i64],
            ceil_mode,
        );

        TchTensor::new(tensor)
    }

    fn max_pool2d_with_indices(
        x: TchTensor,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
        indices_dtype: IntDType,
    ) -> MaxPool2dWithIndices<Self> {
        let (tensor, indices) = tch::Tensor::max_pool2d_with_indices(
            &x.tensor,
            [kernel_size[0] as i64, kernel_size[1] as i64],
            [stride[0] as i64, stride[1] as i64],
            [padding[0] as i64, padding[1] as i64],
            [dilation[0] as i64, dilation[1] as i64],
            ceil_mode,
        );

        MaxPool2dWithIndices::new(
            TchTensor::new(tensor),
            TchTensor::new(indices.to_kind(indices_dtype.into_kind())),
        )
    }

    fn max_pool2d_with_indices_backward(
        x: TchTensor,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
        output_grad: TchTensor,
        indices: TchTensor,
    ) -> MaxPool2dBackward<Self> {
        let grad = tch::Tensor::max_pool2d_with_indices_backward(
            &x.tensor,
            &output_grad.tensor,
            [kernel_size[0] as i64, kernel_size[1] as i64],
            [stride[0] as i64, stride[1] as i64],
            [padding[0] as i64, padding[1] as i64],
            [dilation[0] as i64, dilation[1] as i64],
            ceil_mode,
            &indices.tensor,
        );

        MaxPool2dBackward::new(TchTensor::new(grad))
    }

    fn adaptive_avg_pool2d(x: TchTensor, output_size: [usize; 2]) -> TchTensor {
        let tensor = tch::Tensor::adaptive_avg_pool2d(&x.tensor, output_size.map(|e| e as i64));

        TchTensor::new(tensor)
    }

    fn adaptive_avg_pool2d_backward(x: TchTensor, grad: TchTensor) -> TchTensor {
        let tensor = tch::Tensor::internal_adaptive_avg_pool2d_backward(&x.tensor, &grad.tensor);

        TchTensor::new(tensor)
    }

    fn adaptive_avg_pool3d(x: TchTensor, output_size: [usize; 3]) -> TchTensor {
        let tensor = tch::Tensor::adaptive_avg_pool3d(&x.tensor, output_size.map(|e| e as i64));

        TchTensor::new(tensor)
    }

    fn adaptive_avg_pool3d_backward(x: TchTensor, grad: TchTensor) -> TchTensor {
        let tensor = tch::Tensor::internal_adaptive_avg_pool3d_backward(&x.tensor, &grad.tensor);

        TchTensor::new(tensor)
    }

    fn adaptive_avg_pool1d(x: TchTensor, output_size: usize) -> TchTensor {
        let tensor = tch::Tensor::adaptive_avg_pool1d(&x.tensor, output_size as i64);

        TchTensor::new(tensor)
    }

    fn interpolate(
        x: TchTensor,
        output_size: [usize; 2],
        options: InterpolateOptions,
    ) -> TchTensor {
        let output_size = output_size.map(|e| e as i64);

        let align_corners = options.align_corners;
        let tensor = match options.mode {
            InterpolateMode::Nearest => {
                tch::Tensor::upsample_nearest2d(&x.tensor, output_size, None, None)
            }
            InterpolateMode::NearestExact => {
                panic!("nearest exact interpolation is not supported by PyTorch/tch backend")
            }
            InterpolateMode::Bilinear => {
                tch::Tensor::upsample_bilinear2d(&x.tensor, output_size, align_corners, None, None)
            }
            InterpolateMode::Bicubic => {
                tch::Tensor::upsample_bicubic2d(&x.tensor, output_size, align_corners, None, None)
            }
            InterpolateMode::Lanczos3 => {
                panic!("lanczos3 interpolation is not supported by PyTorch/tch backend")
            }
        };

        TchTensor::new(tensor)
    }

    fn interpolate_backward(
        x: TchTensor,
        grad: TchTensor,
        output_size: [usize; 2],
        options: InterpolateOptions,
    ) -> TchTensor {
        let output_size = output_size.map(|e| e as i64);
        let [n, c, h_in, w_in] = x.shape().dims();
        let input_size = [n as i64, c as i64, h_in as i64, w_in as i64];
        let align_corners = options.align_corners;

        let tensor = match options.mode {
            InterpolateMode::Nearest => tch::Tensor::upsample_nearest2d_backward(
                &grad.tensor,
                output_size,
                input_size,
                None,
                None,
            ),
            InterpolateMode::NearestExact => {
                panic!(
                    "nearest exact interpolation backward is not supported by PyTorch/tch backend"
                )
            }
            InterpolateMode::Bilinear => tch::Tensor::upsample_bilinear2d_backward(
                &grad.tensor,
                output_size,
                input_size,
                align_corners,
                None,
                None,
            ),
            InterpolateMode::Bicubic => tch::Tensor::upsample_bicubic2d_backward(
                &grad.tensor,
                output_size,
                input_size,
                align_corners,
                None,
                None,
            ),
            InterpolateMode::Lanczos3 => {
                panic!("lanczos3 interpolation backward is not supported by PyTorch/tch backend")
            }
        };

        TchTensor::new(tensor)
    }

    fn attention(
        query: TchTensor,
        key: TchTensor,
        value: TchTensor,
        mask: Option<TchTensor>,
        attn_bias: Option<TchTensor>,
        options: AttentionModuleOptions,
    ) -> TchTensor {
        if attn_bias.is_some() {
            return attention_fallback::<Self>(query, key, value, mask, attn_bias, options);
        }

        TchTensor::new(tch::Tensor::scaled_dot_product_attention(
            &query.tensor,
            &key.tensor,
            &value.tensor,
            mask.map(|m| m.tensor),
            0.,
            options.is_causal,
            options.scale,
            false,
        ))
    }

    fn layer_norm(
        tensor: TchTensor,
        gamma: TchTensor,
        beta: Option<TchTensor>,
        epsilon: f64,
    ) -> TchTensor {
        let shape = tensor.shape();
        let last_dim = shape[shape.num_dims() - 1] as i64;

        let tensor = tensor.tensor.layer_norm(
            [last_dim],
            Some(&gamma.tensor),
            beta.as_ref().map(|b| &b.tensor),
            epsilon,
            true,
        );

        TchTensor::new(tensor)
    }

    // distill: the three batch-norm entry points as LibTorch's kernels. burn's defaults compose
    // them of ~25 tensor ops, with a `swap_dims` + `reshape` (a layout copy of the activation) per
    // reduction; here the training forward is one fused `native_batch_norm` (what PyTorch's
    // `BatchNorm2d` runs) and the backward reduces over every dim but 1 in place of copying.

    fn batch_norm(
        x: TchTensor,
        gamma: TchTensor,
        beta: TchTensor,
        mean: TchTensor,
        variance: TchTensor,
        epsilon: f64,
    ) -> TchTensor {
        TchTensor::new(x.tensor.batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            Some(&mean.tensor),
            Some(&variance.tensor),
            false,
            0.0,
            epsilon,
            true,
        ))
    }

    fn batch_norm_train(
        x: TchTensor,
        gamma: TchTensor,
        beta: TchTensor,
        epsilon: f64,
    ) -> BatchNormTrain<Self> {
        let (output, mean, invstd) = x.tensor.native_batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            None::<&tch::Tensor>,
            None::<&tch::Tensor>,
            true,
            0.0,
            epsilon,
        );
        // LibTorch saves 1 / sqrt(var + eps); burn's contract returns the biased variance (what
        // the running statistics and the backward take).
        // Both are f32 for a half-precision input on CUDA: keep the input's kind.
        let kind = x.tensor.kind();
        let variance = (invstd.square().reciprocal() - epsilon).clamp_min(0.0);
        BatchNormTrain::new(
            TchTensor::new(output),
            TchTensor::new(mean.to_kind(kind)),
            TchTensor::new(variance.to_kind(kind)),
        )
    }

    // distill: LibTorch's fused backward (src/distill_native.cpp), what PyTorch's autograd runs
    // for `BatchNorm2d`: one kernel against the seven passes of the composed form below.
    #[cfg(distill_native)]
    fn batch_norm_train_backward(
        x: TchTensor,
        gamma: TchTensor,
        mean: TchTensor,
        variance: TchTensor,
        epsilon: f64,
        output_grad: TchTensor,
    ) -> BatchNormTrainBackward<Self> {
        // The saved statistics in gamma's kind: the kernel takes them in the parameters' type
        // (f32 beside a half-precision input on CUDA).
        let kind = gamma.tensor.kind();
        let invstd = (&variance.tensor + epsilon).rsqrt().to_kind(kind);
        let mean = mean.tensor.to_kind(kind);
        let (x_grad, gamma_grad, beta_grad) =
            native::batch_norm_backward(&output_grad, &x, &gamma, &mean, &invstd, epsilon);
        BatchNormTrainBackward::new(
            TchTensor::new(x_grad),
            TchTensor::new(gamma_grad),
            TchTensor::new(beta_grad),
        )
    }

    // distill: without the shim, the backward in seven passes with no layout copies.
    #[cfg(not(distill_native))]
    fn batch_norm_train_backward(
        x: TchTensor,
        gamma: TchTensor,
        mean: TchTensor,
        variance: TchTensor,
        epsilon: f64,
        output_grad: TchTensor,
    ) -> BatchNormTrainBackward<Self> {
        let size = x.tensor.size();
        let channels = size[1];
        let mut per_channel = vec![1i64; size.len()];
        per_channel[1] = channels;
        let reduce: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
        let n = (x.tensor.numel() as i64 / channels.max(1)) as f64;
        let dy = &output_grad.tensor;

        let invstd = (&variance.tensor + epsilon).rsqrt();
        // Centred input (no cancellation in the dot product, as in ATen's CPU kernel).
        let centred = &x.tensor - mean.tensor.view(per_channel.as_slice());
        let beta_grad = dy.sum_dim_intlist(reduce.as_slice(), false, None);
        let dot = (&centred * dy).sum_dim_intlist(reduce.as_slice(), false, None);
        let gamma_grad = &dot * &invstd;
        // dx = s * (dy - mean(dy) - x̂ * mean(dy * x̂)) with s = gamma * invstd, x̂ = centred * invstd,
        // written as dy * s + centred * b + c with per-channel b and c: three passes.
        let scale = &gamma.tensor * &invstd;
        let b = -(&scale * invstd.square() * &dot) / n;
        let c = -(&scale * &beta_grad) / n;
        let mut x_grad = centred * b.view(per_channel.as_slice());
        let _ = x_grad.g_add_(&c.view(per_channel.as_slice()));
        let _ = x_grad.addcmul_(dy, &scale.view(per_channel.as_slice()));

        BatchNormTrainBackward::new(
            TchTensor::new(x_grad),
            TchTensor::new(gamma_grad),
            TchTensor::new(beta_grad),
        )
    }

    fn has_ctc_loss_backward() -> bool {
        true
    }

    fn ctc_loss(
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        input_lengths: IntTensor<Self>,
        target_lengths: IntTensor<Self>,
        blank: usize,
    ) -> FloatTensor<Self> {
        // PyTorch's CTC requires int64 for targets and length tensors.
        let targets_i64 = targets.tensor.to_kind(tch::Kind::Int64);
        let input_lengths_i64 = input_lengths.tensor.to_kind(tch::Kind::Int64);
        let target_lengths_i64 = target_lengths.tensor.to_kind(tch::Kind::Int64);

        // Reduction::None returns per-sample losses [N], matching the trait contract.
        let tensor = tch::Tensor::ctc_loss_tensor(
            &log_probs.tensor,
            &targets_i64,
            &input_lengths_i64,
            &target_lengths_i64,
            blank as i64,
            tch::Reduction::None,
            false,
        );

        TchTensor::new(tensor)
    }

    fn ctc_loss_backward(
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        input_lengths: IntTensor<Self>,
        target_lengths: IntTensor<Self>,
        grad_loss: FloatTensor<Self>,
        blank: usize,
    ) -> FloatTensor<Self> {
        let targets_i64 = targets.tensor.to_kind(tch::Kind::Int64);
        let input_lengths_i64 = input_lengths.tensor.to_kind(tch::Kind::Int64);
        let target_lengths_i64 = target_lengths.tensor.to_kind(tch::Kind::Int64);

        // Recompute forward to get neg_log_likelihood and log_alpha (LibTorch's
        // backward needs both). PyTorch caches log_alpha during the autograd
        // forward; our trait has no caching slot for it, so we redo the alpha
        // recursion here. This is still a single-call into LibTorch's fused
        // kernel and avoids the ~40T host-side dispatches.
        let (neg_log_likelihood, log_alpha) = tch::Tensor::internal_ctc_loss_tensor(
            &log_probs.tensor,
            &targets_i64,
            &input_lengths_i64,
            &target_lengths_i64,
            blank as i64,
            false,
        );

        let grad = tch::Tensor::internal_ctc_loss_backward_tensor(
            &grad_loss.tensor,
            &log_probs.tensor,
            &targets_i64,
            &input_lengths_i64,
            &target_lengths_i64,
            &neg_log_likelihood,
            &log_alpha,
            blank as i64,
            false,
        );

        TchTensor::new(grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_backend::{
        TensorData, Tolerance,
        ops::{FloatTensorOps, IntTensorOps},
        read_sync,
    };

    type B = crate::LibTorch;

    #[test]
    fn ctc_loss_uniform() {
        // T=3, N=1, C=2, blank=0, target=[1, 1].
        // Only valid alignment is (1, 0, 1) with prob (1/2)^3.
        // Loss = -ln(1/8) = 3 * ln(2)
        let device = Default::default();
        let log_probs_data = vec![(0.5f32).ln(); 3 * 2];
        let log_probs = B::float_from_data(TensorData::new(log_probs_data, [3, 1, 2]), &device);
        let targets = B::int_from_data(TensorData::from([[1i64, 1]]), &device);
        let input_lengths = B::int_from_data(TensorData::from([3i64]), &device);
        let target_lengths = B::int_from_data(TensorData::from([2i64]), &device);

        let loss =
            <B as ModuleOps<B>>::ctc_loss(log_probs, targets, input_lengths, target_lengths, 0);

        let out = read_sync(B::float_into_data(loss)).unwrap();
        let expected = TensorData::from([3.0f32 * 2.0f32.ln()]);
        out.assert_approx_eq::<f32>(&expected, Tolerance::rel_abs(1e-3, 1e-3));
    }
}

/// distill: the bindings of src/distill_native.cpp.
#[cfg(distill_native)]
mod native {
    use crate::TchTensor;
    use burn_backend::ops::ConvOptions;
    use std::ffi::{CStr, c_char, c_int};
    use torch_sys::C_tensor;

    unsafe extern "C" {
        fn distill_convolution_backward(
            grad_output: *const C_tensor,
            input: *const C_tensor,
            weight: *const C_tensor,
            stride: *const i64,
            padding: *const i64,
            dilation: *const i64,
            dims: i64,
            groups: i64,
            want_input: c_int,
            want_weight: c_int,
            out_input: *mut *mut C_tensor,
            out_weight: *mut *mut C_tensor,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;

        fn distill_batch_norm_backward(
            grad_output: *const C_tensor,
            input: *const C_tensor,
            weight: *const C_tensor,
            save_mean: *const C_tensor,
            save_invstd: *const C_tensor,
            eps: f64,
            out_input: *mut *mut C_tensor,
            out_weight: *mut *mut C_tensor,
            out_bias: *mut *mut C_tensor,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
    }

    /// Calls a shim function with an error buffer; panics with LibTorch's message on failure,
    /// as every other op of this backend does.
    fn call(op: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) {
        let mut error = [0 as c_char; 512];
        if f(error.as_mut_ptr(), error.len()) != 0 {
            // SAFETY: the shim NUL-terminates the message within the buffer.
            let message = unsafe { CStr::from_ptr(error.as_ptr()) };
            panic!("{op}: {}", message.to_string_lossy());
        }
    }

    /// Takes ownership of a tensor the shim allocated (null: not asked for).
    fn own(p: *mut C_tensor) -> Option<tch::Tensor> {
        // SAFETY: a non-null pointer is a fresh `at::Tensor` nothing else owns.
        (!p.is_null()).then(|| unsafe { tch::Tensor::from_ptr(p) })
    }

    /// The requested gradients of a convolution with symmetric padding.
    pub(super) fn conv_backward<const N: usize>(
        x: &TchTensor,
        weight: &TchTensor,
        output_grad: &TchTensor,
        options: &ConvOptions<N>,
        want_input: bool,
        want_weight: bool,
    ) -> (Option<tch::Tensor>, Option<tch::Tensor>) {
        let stride = options.stride.map(|v| v as i64);
        let padding = options.padding_begin().map(|v| v as i64);
        let dilation = options.dilation.map(|v| v as i64);
        let mut input_grad: *mut C_tensor = std::ptr::null_mut();
        let mut weight_grad: *mut C_tensor = std::ptr::null_mut();
        // SAFETY: the tensors outlive the call; the shim writes the out pointers only for the
        // gradients asked for.
        call("convolution_backward", |error, len| unsafe {
            distill_convolution_backward(
                output_grad.tensor.as_ptr(),
                x.tensor.as_ptr(),
                weight.tensor.as_ptr(),
                stride.as_ptr(),
                padding.as_ptr(),
                dilation.as_ptr(),
                N as i64,
                options.groups as i64,
                want_input as c_int,
                want_weight as c_int,
                &mut input_grad,
                &mut weight_grad,
                error,
                len,
            )
        });
        (own(input_grad), own(weight_grad))
    }

    /// The gradients of input, gamma and beta of a training-mode batch norm, from the batch's
    /// mean and `1 / sqrt(var + eps)`.
    pub(super) fn batch_norm_backward(
        output_grad: &TchTensor,
        x: &TchTensor,
        gamma: &TchTensor,
        mean: &tch::Tensor,
        invstd: &tch::Tensor,
        epsilon: f64,
    ) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
        let mut grads: [*mut C_tensor; 3] = [std::ptr::null_mut(); 3];
        let [gx, gw, gb] = &mut grads;
        // SAFETY: the tensors outlive the call; on success the shim writes all three pointers.
        call("native_batch_norm_backward", |error, len| unsafe {
            distill_batch_norm_backward(
                output_grad.tensor.as_ptr(),
                x.tensor.as_ptr(),
                gamma.tensor.as_ptr(),
                mean.as_ptr(),
                invstd.as_ptr(),
                epsilon,
                gx,
                gw,
                gb,
                error,
                len,
            )
        });
        let [gx, gw, gb] = grads.map(|p| own(p).expect("the shim returned all three gradients"));
        (gx, gw, gb)
    }
}
