#!/usr/bin/env python3
# attrib_common.py: what the attribution oracle tests share. Run as a script it builds
# the fixtures: seeded torchvision models (resnet18, vgg11_bn, mobilenet_v2; BatchNorm
# statistics randomised so no layer is the identity) exported to ONNX, their weights
# for PyTorch, and an input batch of two real photographs (matplotlib's sample image,
# two crops, ImageNet preprocessing).
#
# usage: attrib_common.py FIXDIR        (writes FIXDIR/<model>/{model.onnx, model.pt})
#        and FIXDIR/input.npy; skipped when present and made by this script's version.
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision
from PIL import Image

MODELS = {"resnet18": 2018, "vgg11_bn": 2011, "mobilenet_v2": 2002}
PHOTO = "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE = 224


def _stamp():
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def build_model(name):
    """The seeded torch model (eval mode); identical on every call."""
    torch.manual_seed(MODELS[name])
    model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(MODELS[name] + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                mod.weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model.eval()


def load_model(fixdir, name):
    return build_model(name)


def photo_batch():
    img = Image.open(PHOTO).convert("RGB")
    w, h = img.size
    crops = [img, img.crop((0, 0, min(w, h) * 3 // 4, min(w, h) * 3 // 4))]
    out = []
    for im in crops:
        s = 256 / min(im.size)
        im = im.resize((max(SIZE, round(im.size[0] * s)), max(SIZE, round(im.size[1] * s))), Image.BILINEAR)
        l, t = (im.size[0] - SIZE) // 2, (im.size[1] - SIZE) // 2
        a = np.asarray(im.crop((l, t, l + SIZE, t + SIZE)), dtype=np.float32) / 255.0
        out.append(((a - MEAN) / STD).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out).astype(np.float32))


def model_path(fixdir, name):
    return os.path.join(fixdir, name, "model.onnx")


def input_batch(fixdir):
    return np.load(os.path.join(fixdir, "input.npy"))


def make_fixtures(fixdir):
    os.makedirs(fixdir, exist_ok=True)
    stamp = os.path.join(fixdir, "stamp")
    if os.path.exists(stamp) and open(stamp).read() == _stamp():
        return
    np.save(os.path.join(fixdir, "input.npy"), photo_batch())
    for name in MODELS:
        os.makedirs(os.path.join(fixdir, name), exist_ok=True)
        model = build_model(name)
        x = torch.zeros(1, 3, SIZE, SIZE)
        torch.onnx.export(model, x, model_path(fixdir, name), opset_version=13, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          do_constant_folding=True)
    with open(stamp, "w") as f:
        f.write(_stamp())


def run_loupe(cli, fixdir, name, method, args=(), x=None):
    """Loupe's raw attribution (as `--npy-out` writes it) for the fixture input."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(fixdir, "input.npy")
        if x is not None:
            inp = os.path.join(tmp, "x.npy")
            np.save(inp, x.astype(np.float32))
        out = os.path.join(tmp, "attr.npy")
        cmd = [cli, "explain", model_path(fixdir, name), inp, "--method", method, "--npy-out", out,
               "--no-report", "--device", "cpu", *[str(a) for a in args]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("loupe failed: %s\n%s" % (" ".join(cmd), p.stderr))
        return np.load(out)


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


class Checker:
    """Collects comparisons; exit() fails the test when any failed."""

    def __init__(self):
        self.failed = 0

    def close(self, label, ours, ref, tol):
        ours, ref = np.asarray(ours), np.asarray(ref)
        if ours.shape != ref.shape:
            print("FAIL %-44s shape %s vs reference %s" % (label, ours.shape, ref.shape))
            self.failed += 1
            return
        e = rel_l2(ours, ref)
        ok = e <= tol
        print("%s %-44s rel L2 %.2e (tol %.0e)" % ("ok  " if ok else "FAIL", label, e, tol))
        self.failed += not ok

    def true(self, label, cond, detail=""):
        print("%s %-44s %s" % ("ok  " if cond else "FAIL", label, detail))
        self.failed += not cond

    def exit(self):
        print("%d check(s) failed" % self.failed if self.failed else "all checks passed")
        sys.exit(1 if self.failed else 0)


if __name__ == "__main__":
    make_fixtures(sys.argv[1])
