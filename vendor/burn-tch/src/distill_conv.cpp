// distill: LibTorch's own convolution backward (`at::convolution_backward`, what PyTorch's
// autograd runs: cuDNN on CUDA, oneDNN or im2col + GEMM on the CPU). `tch` 0.22 does not wrap it
// (its `bool[3]` argument), and burn's default weight gradient is a convolution of the input with
// the output gradient over swapped batch and channel dims, 2.4x slower here (vendor/README.md).
// Tensors cross as `at::Tensor*`, the handle type of tch's C API (libtch's `tensor`).
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>
#include <array>
#include <cstring>
#include <exception>
#include <vector>

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
        std::strncpy(error, e.what(), error_len - 1);
        error[error_len - 1] = '\0';
        return 1;
    }
}
