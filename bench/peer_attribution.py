#!/usr/bin/env python3
# peer_attribution.py: the Captum / pytorch-grad-cam peer of bench/attribution.c.
#   --prepare DIR: a seeded torchvision model exported to DIR/model.onnx, an input batch
#     DIR/input.npy (the photo crop repeated), and Captum's float64 saliency of its first
#     image as DIR/saliency_ref.npy (the C program validates against it before timing).
#   --time: the same methods in the peer libraries on the same model and batch (median of
#     --iters runs after a warm-up); one JSON object {method: seconds per call, ...}.
# usage: peer_attribution.py --model resnet50 --batch 8 --dir DIR --prepare
#        peer_attribution.py --model resnet50 --batch 8 --dir DIR --time --methods a,b --ig-steps 32 ...
import argparse
import json
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "attrib"))
import attrib_common as ac  # noqa: E402
from peer_cpu_forward import median_seconds  # noqa: E402  (this folder is on sys.path)


def build(name):
    torch.manual_seed(1234)
    return getattr(torchvision.models, name)(weights=None).eval()


def last_conv(model):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1]


def peers(model, a):
    """method -> (callable over (x, target)), as Captum / pytorch-grad-cam would be used."""
    from captum import attr as C
    out = {
        "saliency": lambda x, t: C.Saliency(model).attribute(x, target=t),
        "input_x_gradient": lambda x, t: C.InputXGradient(model).attribute(x, target=t),
        "guided_backprop": lambda x, t: C.GuidedBackprop(model).attribute(x, target=t),
        "deconvnet": lambda x, t: C.Deconvolution(model).attribute(x, target=t),
        "smoothgrad": lambda x, t: C.NoiseTunnel(C.Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=a.samples, nt_samples_batch_size=a.batch, stdevs=0.15, target=t,
            abs=False),
        "integrated_gradients": lambda x, t: C.IntegratedGradients(model).attribute(
            x, target=t, n_steps=a.ig_steps, internal_batch_size=a.batch),
        "gradient_shap": lambda x, t: C.GradientShap(model).attribute(
            x, baselines=torch.zeros_like(x[:1]), n_samples=a.samples, target=t),
        "occlusion": lambda x, t: C.Occlusion(model).attribute(
            x, sliding_window_shapes=(3, a.patch, a.patch), strides=(3, a.stride, a.stride), target=t,
            perturbations_per_eval=a.batch),
    }
    layer = last_conv(model)
    out["gradcam"] = lambda x, t: C.LayerGradCam(model, layer).attribute(x, target=t)
    out["guided_gradcam"] = lambda x, t: C.GuidedGradCam(model, layer).attribute(x, target=t)
    try:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def score(x, t):
            with ScoreCAM(model=model, target_layers=[layer]) as cam:
                cam.batch_size = a.batch
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
        out["scorecam"] = score
    except ImportError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--methods", default="")
    ap.add_argument("--per-image", default="", help="methods timed on one image")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--samples", type=int, default=25)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--stride", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = build(a.model)
    for p in model.parameters():
        p.requires_grad_(False)
    if a.prepare:
        os.makedirs(a.dir, exist_ok=True)
        # The first photo crop where the model is smooth (no max-pool near-tie), so that
        # validation measures Loupe and not float rounding at a tie (tests/attrib).
        m64 = build(a.model).double()
        crops = list(ac.photo_crops())
        x1 = next((c for c in crops if ac.sensitivity(m64, c) < 1e-9), crops[0])
        x = np.ascontiguousarray(np.repeat(x1[None], a.batch, axis=0))
        np.save(os.path.join(a.dir, "input.npy"), x)
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), os.path.join(a.dir, "model.onnx"), opset_version=13,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        from captum.attr import Saliency
        x64 = torch.from_numpy(x[:1]).double()
        with torch.no_grad():
            t = m64(x64).argmax(1)
        ref = Saliency(m64).attribute(x64, target=t).detach().numpy()
        np.save(os.path.join(a.dir, "saliency_ref.npy"), ref.astype(np.float32))
        # The validation bound: 1e-3, or 3x fp32 PyTorch's own distance from float64 if
        # larger (a deep net at random init loses digits in any fp32 engine).
        s32 = Saliency(model).attribute(torch.from_numpy(x[:1]), target=t).detach().numpy()
        with open(os.path.join(a.dir, "bound.txt"), "w") as f:
            f.write("%.3e\n" % max(1e-3, 3 * ac.rel_l2(s32, ref)))
        return
    x = torch.from_numpy(np.load(os.path.join(a.dir, "input.npy")))
    with torch.no_grad():
        t = model(x).argmax(1)
    fns = peers(model, a)
    res = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    one = set(filter(None, a.per_image.split(",")))
    for meth in filter(None, a.methods.split(",")):
        if meth not in fns:
            continue
        xi, ti = (x[:1], t[:1]) if meth in one else (x, t)
        res[meth] = median_seconds(lambda: fns[meth](xi, ti), a.iters if meth not in one else 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
