#!/usr/bin/env python3
# attrib_common.py: what the attribution oracle tests share. Run as a script it builds
# the fixtures: seeded torchvision models (resnet18, vgg11_bn, mobilenet_v2; BatchNorm
# statistics randomised so no layer is the identity) exported to ONNX, and per model
# an input batch of two real photographs (crops of matplotlib's sample photo,
# ImageNet preprocessing) chosen where the model is smoothest, with that smoothness.
#
# usage: attrib_common.py FIXDIR   (writes FIXDIR/<model>/{model.onnx, input.npy,
#        meta.json}; skipped when present and made by this version of the script)
import hashlib
import json
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
    """The seeded torch model (eval mode); identical on every call. BatchNorm statistics
    and affine parameters are randomised so no layer is the identity. (Measuring them on
    the photo crops instead gives livelier logits but puts so many ReLU inputs near zero
    that no crop is smooth for mobilenet_v2: even fp32 PyTorch is 9e-3 off float64
    there. As it is, mobilenet_v2's logits hardly depend on the input, so its
    perturbation checks score a channel rather than a class.)"""
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


def photo_crops():
    """Candidate inputs: crops of the photo at several places and scales, ImageNet-normalised."""
    img = Image.open(PHOTO).convert("RGB")
    w, h = img.size
    side = min(w, h)
    boxes = [(0, 0, w, h)]
    for frac in (3 / 4, 5 / 8, 1 / 2):
        s = int(side * frac)
        for l, t in ((0, 0), (w - s, 0), (0, h - s), (w - s, h - s), ((w - s) // 2, (h - s) // 2)):
            boxes.append((l, t, l + s, t + s))
    for box in boxes:
        im = img.crop(box)
        sc = 256 / min(im.size)
        im = im.resize((max(SIZE, round(im.size[0] * sc)), max(SIZE, round(im.size[1] * sc))), Image.BILINEAR)
        l, t = (im.size[0] - SIZE) // 2, (im.size[1] - SIZE) // 2
        a = np.asarray(im.crop((l, t, l + SIZE, t + SIZE)), dtype=np.float32) / 255.0
        yield ((a - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def sensitivity(model64, x):
    """How much the float64 input gradient of the top-1 logit moves under a 1e-6 relative
    perturbation of x. At a non-smooth point (a max-pool near-tie, a ReLU input near 0) a
    float32 engine cannot agree with any other to 1e-3, so such inputs make no oracle."""
    gen = torch.Generator().manual_seed(5)
    xs = torch.from_numpy(x[None]).double()

    def grad(v):
        v = v.clone().requires_grad_(True)
        y = model64(v)
        y[0, int(y.argmax())].backward()
        return v.grad.numpy()

    g0 = grad(xs)
    g1 = grad(xs * (1 + 1e-6 * torch.randn(xs.shape, generator=gen, dtype=torch.float64)))
    return rel_l2(g1, g0)


def photo_batch(model64, n=2):
    """The n crops at which the model is smoothest, and the worst sensitivity among them."""
    scored = []
    for x in photo_crops():
        scored.append((sensitivity(model64, x), len(scored), x))
        if sum(1 for sc in scored if sc[0] < 1e-9) >= n:
            break
    scored.sort(key=lambda t: (t[0], t[1]))
    best = scored[:n]
    return np.ascontiguousarray(np.stack([b[2] for b in best])), max(b[0] for b in best)


def model_path(fixdir, name):
    return os.path.join(fixdir, name, "model.onnx")


def input_path(fixdir, name):
    return os.path.join(fixdir, name, "input.npy")


def input_batch(fixdir, name):
    """The model's input batch: the two photo crops where it is smoothest."""
    return np.load(input_path(fixdir, name))


def tolerance(fixdir, name, tol=1e-3):
    """tol, or 3x the float64 sensitivity of the model at its input where that is larger
    (VGG has a max-pool near-tie at every crop of the photo; see sensitivity())."""
    with open(os.path.join(fixdir, name, "meta.json")) as f:
        return max(tol, 3 * json.load(f)["sensitivity"])


def make_fixtures(fixdir):
    os.makedirs(fixdir, exist_ok=True)
    stamp = os.path.join(fixdir, "stamp")
    if os.path.exists(stamp) and open(stamp).read() == _stamp():
        return
    for name in MODELS:
        os.makedirs(os.path.join(fixdir, name), exist_ok=True)
        model = build_model(name)
        x, sens = photo_batch(build_model(name).double())
        np.save(input_path(fixdir, name), x)
        with open(os.path.join(fixdir, name, "meta.json"), "w") as f:
            json.dump({"sensitivity": sens}, f)
        x = torch.zeros(1, 3, SIZE, SIZE)
        torch.onnx.export(model, x, model_path(fixdir, name), opset_version=13, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          do_constant_folding=True)
    with open(stamp, "w") as f:
        f.write(_stamp())


def run_loupe(cli, fixdir, name, method, args=(), x=None):
    """Loupe's raw attribution (as `--npy-out` writes it) for the fixture input."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = input_path(fixdir, name)
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

    def close(self, label, ours, ref, tol, scale=None):
        """rel L2 of ours against ref; relative to ||scale|| instead of ||ref|| when given."""
        ours, ref = np.asarray(ours), np.asarray(ref)
        if ours.shape != ref.shape:
            print("FAIL %-44s shape %s vs reference %s" % (label, ours.shape, ref.shape))
            self.failed += 1
            return
        e = rel_l2(ours, ref) if scale is None else rel_l2(ours, ref) * np.linalg.norm(ref) / max(
            np.linalg.norm(np.asarray(scale, dtype=np.float64)), 1e-30)
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
