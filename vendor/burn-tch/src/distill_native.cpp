// distill: two of LibTorch's backward kernels that `tch` 0.22 does not wrap (each takes a
// `bool[3]` output mask), so that burn-tch runs what PyTorch's autograd runs instead of burn's
// composed defaults (vendor/README.md has the figures):
// - `at::convolution_backward` (cuDNN on CUDA, oneDNN or im2col + GEMM on the CPU); burn's
//   default weight gradient is a convolution of the input with the output gradient over swapped
//   batch and channel dims, 2.4x slower here;
// - `at::native_batch_norm_backward`, the fused kernel behind `native_batch_norm`; burn's
//   default is ~25 elementwise ops and reductions.
// Tensors cross as `at::Tensor*`, the handle type of tch's C API (libtch's `tensor`). A failure
// returns 1 with LibTorch's message in `error`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/native_batch_norm_backward.h>
#include <array>
#include <cstring>
#include <exception>
#include <vector>

static int distill_fail(const std::exception &e, char *error, size_t error_len) {
    std::strncpy(error, e.what(), error_len - 1);
    error[error_len - 1] = '\0';
    return 1;
}

extern "C" int distill_convolution_backward(
    const at::Tensor *grad_output, const at::Tensor *input, const at::Tensor *weight,
    const int64_t *stride, const int64_t *padding, const int64_t *dilation, int64_t dims,
    int64_t groups, int want_input, int want_weight, at::Tensor **out_input,
    at::Tensor **out_weight, char *error, size_t error_len) {
    try {
        std::vector<int64_t> output_padding(dims, 0);
        auto grads = at::convolution_backward(
            *grad_output, *input, *weight, c10::nullopt, at::IntArrayRef(stride, dims),
            at::IntArrayRef(padding, dims), at::IntArrayRef(dilation, dims), false,
            output_padding, groups, {want_input != 0, want_weight != 0, false});
        if (want_input) *out_input = new at::Tensor(std::get<0>(grads));
        if (want_weight) *out_weight = new at::Tensor(std::get<1>(grads));
        return 0;
    } catch (const std::exception &e) {
        return distill_fail(e, error, error_len);
    }
}

// The training-mode batch-norm backward from the batch's mean and 1 / sqrt(var + eps), as
// `native_batch_norm` saved them: the gradients of input, weight (gamma) and bias (beta).
extern "C" int distill_batch_norm_backward(
    const at::Tensor *grad_output, const at::Tensor *input, const at::Tensor *weight,
    const at::Tensor *save_mean, const at::Tensor *save_invstd, double eps,
    at::Tensor **out_input, at::Tensor **out_weight, at::Tensor **out_bias, char *error,
    size_t error_len) {
    try {
        auto grads = at::native_batch_norm_backward(
            *grad_output, *input, *weight, c10::nullopt, c10::nullopt, *save_mean, *save_invstd,
            true, eps, {true, true, true});
        *out_input = new at::Tensor(std::get<0>(grads));
        *out_weight = new at::Tensor(std::get<1>(grads));
        *out_bias = new at::Tensor(std::get<2>(grads));
        return 0;
    } catch (const std::exception &e) {
        return distill_fail(e, error, error_len);
    }
}
