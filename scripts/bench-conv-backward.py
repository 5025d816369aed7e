"""The weight gradients of resnet20's 19 convolutions (batch 64, 32x32, PyTorch on this CPU): burn's
default (a convolution of the input by the output gradient, batch and channel dims swapped), against
ATen's convolution_backward (what PyTorch's autograd and distill's patched burn-tch run, see
vendor/README.md) and a recompute-then-autograd route. Needs torch (a throwaway venv, as for tch:cpu):
    target/torch-venv/bin/python scripts/bench-conv-backward.py
Prints milliseconds per training step for each route and the ratio to convolution_backward."""
import torch, time
import torch.nn.functional as F
torch.manual_seed(0)
def bench(f, n=30):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n*1e3
tot = {"swapped conv (burn default)":0, "convolution_backward (PyTorch)":0, "recompute fwd + autograd":0}
# resnet20's 3x3 convolutions: the stem and stage 1 (16 channels, 32 px), stages 2 and 3 each
# opening with a stride-2 convolution.
layers = ([(3, 16, 32, 1)] + [(16, 16, 32, 1)] * 6 + [(16, 32, 32, 2)] + [(32, 32, 16, 1)] * 5
          + [(32, 64, 16, 2)] + [(64, 64, 8, 1)] * 5)
assert len(layers) == 19
for (cin, cout, hw, stride) in layers:
    x = torch.randn(64, cin, hw, hw); w = torch.randn(cout, cin, 3, 3)
    ho = (hw + 2 - 3)//stride + 1
    dy = torch.randn(64, cout, ho, ho)
    def a():
        g = F.conv2d(x.transpose(0,1), dy.transpose(0,1), None, 1, 1, stride).transpose(0,1)
        return g[:, :, :3, :3]
    def b():
        return torch.ops.aten.convolution_backward(dy, x, w, None, [stride]*2, [1,1], [1,1], False, [0,0], 1, [False, True, False])[1]
    def c():
        wl = w.detach().requires_grad_()
        out = F.conv2d(x, wl, None, stride, 1)
        return torch.autograd.grad(out, [wl], dy)[0]
    ga, gb, gc = a(), b(), c()
    assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-2), (ga-gb).abs().max()
    for k, f in zip(tot, (a, b, c)): tot[k] += bench(f)
base = tot["convolution_backward (PyTorch)"]
for k, v in tot.items():
    print(f"{k:34} {v:7.1f} ms per step ({v / base:.2f}x convolution_backward)")
