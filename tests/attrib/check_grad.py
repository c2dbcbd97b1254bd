#!/usr/bin/env python3
# check_grad.py: the gradient family against Captum on the same model and input —
# Saliency, InputXGradient, NoiseTunnel (smoothgrad / smoothgrad_sq / vargrad over the
# raw gradient) with Captum's own noise replayed into Loupe, IntegratedGradients
# (Gauss-Legendre and Riemann trapezoid; zero, blurred and file baselines),
# GradientShap with Captum's draws replayed, GuidedBackprop, Deconvolution, and
# LayerGradientXActivation for --layer. Captum runs in float64. Deterministic methods:
# relative L2 <= 1e-3 (or 3x the model's float64 sensitivity at its input, if larger).
#
# usage: check_grad.py LOUPE FIXDIR MODEL
import math
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from captum.attr import (Deconvolution, GradientShap, GuidedBackprop, InputXGradient, IntegratedGradients,
                         LayerGradientXActivation, NeuronGradient, NoiseTunnel, Saliency)

import attrib_common as ac

TOL = 1e-3  # raised per model to 3x its float64 sensitivity where larger (attrib_common.tolerance)
# (torch module path, ONNX value) of an inner layer for the layer attribution check
LAYERS = {
    "resnet18": ("layer3", "/layer3/layer3.1/relu_1/Relu"),
    "vgg11_bn": ("features.20", "/features/features.20/Relu"),
    "mobilenet_v2": ("features.10", "/features/features.10/Add"),
}


def sampling_checks(chk, model, x, top1, noise_base, ig, run, tol):
    """IG with the zero and blurred baselines, the NoiseTunnel family, GradientShap.
    These evaluate the net at noisy points whose smoothness nobody checked; at some a
    max-pool window is a near-tie and float engines part ways (resnet18: up to 4e-3 off
    float64 Captum, mobilenet_v2: 2e-5), so their bound is 1e-2."""
    tol = max(tol, 1e-2)
    ref = ig.attribute(x, target=top1, n_steps=16, method="gausslegendre", internal_batch_size=16).detach().numpy()
    chk.close("integrated_gradients gl16 zero", run("integrated_gradients", "--steps", 16), ref, tol)
    sigma = 4.0
    blurred = TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
    ref = ig.attribute(x, baselines=blurred, target=top1, n_steps=8, method="riemann_trapezoid",
                       internal_batch_size=16).detach().numpy()
    chk.close("integrated_gradients trapezoid8 blur baseline",
              run("integrated_gradients", "--steps", 8, "--ig-rule", "riemann_trapezoid", "--baseline", "blur",
                  "--blur-sigma", sigma), ref, tol)

    # NoiseTunnel: record the noise Captum draws, replay it in Loupe.
    drawn = []
    real_normal = torch.normal

    def recording_normal(*a, **k):
        t = real_normal(*a, **k)
        drawn.append(t.clone())
        return t

    samples, std = 4, 0.3
    for kind in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        drawn.clear()
        torch.normal = recording_normal
        try:
            ref = NoiseTunnel(Saliency(model)).attribute(x, nt_type=kind, nt_samples=samples, stdevs=std,
                                                         target=top1, abs=False).detach().numpy()
        finally:
            torch.normal = real_normal
        noise = torch.cat(drawn).detach().numpy().reshape(len(x), samples, *x.shape[1:]).transpose(1, 0, 2, 3, 4)
        with ac.tempfile.TemporaryDirectory() as tmp:
            f = tmp + "/noise.npy"
            np.save(f, np.ascontiguousarray(noise, dtype=np.float32))
            ours = run(kind, "--samples", samples, "--noise-npy", f)
            # VarGrad is E[g^2] - E[g]^2: where the gradient hardly varies (mobilenet_v2
            # here) float32 gradients fix it only to about eps x E[g^2], so it is measured
            # against the size of E[g^2] (the same noise's smoothgrad_sq).
            scale = run("smoothgrad_sq", "--samples", samples, "--noise-npy", f) if kind == "vargrad" else None
        chk.close(kind + " (Captum's noise replayed)" + (", rel. E[g^2]" if scale is not None else ""), ours, ref,
                  tol, scale)

    # GradientShap: Captum draws baseline indices and alphas with numpy, noise with torch.
    alphas = []
    real_uniform = np.random.uniform

    def recording_uniform(*a, **k):
        u = real_uniform(*a, **k)
        alphas.append(np.array(u))
        return u

    drawn.clear()
    np.random.seed(3)
    np.random.uniform, torch.normal = recording_uniform, recording_normal
    try:
        # one baseline: Captum draws which row of a baseline batch each sample uses
        ref = GradientShap(model).attribute(x, baselines=torch.from_numpy(noise_base[:1]).double(), n_samples=samples,
                                            stdevs=0.2, target=top1).detach().numpy()
    finally:
        np.random.uniform, torch.normal = real_uniform, real_normal
    noise = torch.cat(drawn).detach().numpy().reshape(len(x), samples, *x.shape[1:]).transpose(1, 0, 2, 3, 4)
    al = np.concatenate(alphas).reshape(len(x), samples).T
    with ac.tempfile.TemporaryDirectory() as tmp:
        np.save(tmp + "/n.npy", np.ascontiguousarray(noise, dtype=np.float32))
        np.save(tmp + "/a.npy", np.ascontiguousarray(al, dtype=np.float32))
        np.save(tmp + "/b.npy", noise_base[:1])
        ours = run("gradient_shap", "--samples", samples, "--noise-npy", tmp + "/n.npy", "--alphas-npy",
                   tmp + "/a.npy", "--baseline", tmp + "/b.npy")
    chk.close("gradient_shap (Captum's draws replayed)", ours, ref, tol)


def main():
    cli, fix, name = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(2)
    # Captum runs on a float64 copy of the model: fp32 PyTorch breaks max-pool ties
    # differently at saturated pixels (1e-3 off float64 on resnet18 here), Loupe does not.
    model = ac.load_model(fix, name).double()
    for p in model.parameters():
        p.requires_grad_(False)
    x_np = ac.input_batch(fix, name)
    x = torch.from_numpy(x_np).double()
    with torch.no_grad():
        top1 = model(x).argmax(1)
    tol = ac.tolerance(fix, name, TOL)
    chk = ac.Checker()
    run = lambda method, *args: ac.run_loupe(cli, fix, name, method, args)

    chk.close("saliency", run("saliency"), Saliency(model).attribute(x, target=top1).detach().numpy(), tol)
    chk.close("saliency --target 7", run("saliency", "--target", 7),
              Saliency(model).attribute(x, target=7).detach().numpy(), tol)
    chk.close("input_x_gradient", run("input_x_gradient"), InputXGradient(model).attribute(x, target=top1).detach().numpy(), tol)
    chk.close("guided_backprop", run("guided_backprop"), GuidedBackprop(model).attribute(x, target=top1).detach().numpy(), tol)
    chk.close("deconvnet", run("deconvnet"), Deconvolution(model).attribute(x, target=top1).detach().numpy(), tol)

    # A uniform-noise baseline (a file) keeps the path away from the flat images near a
    # constant baseline, where every max-pool window is a near-tie and no two float
    # engines agree (the zero baseline's first Gauss-Legendre node is at alpha 0.005).
    noise_base = np.random.default_rng(11).uniform(-2, 2, size=x_np.shape).astype(np.float32)
    ig = IntegratedGradients(model)
    with ac.tempfile.TemporaryDirectory() as tmp:
        bfile = tmp + "/base.npy"
        np.save(bfile, noise_base)
        ref = ig.attribute(x, baselines=torch.from_numpy(noise_base).double(), target=top1, n_steps=16,
                           method="gausslegendre", internal_batch_size=16).detach().numpy()
        chk.close("integrated_gradients gl16 noise baseline",
                  run("integrated_gradients", "--steps", 16, "--baseline", bfile), ref, tol)
    # The sampling methods run the same code on every model: checked on the two cheaper ones
    # (VGG in float64 takes minutes per pass on two cores).
    if name != "vgg11_bn":
        sampling_checks(chk, model, x, top1, noise_base, ig, run, tol)

    mod_path, onnx_name = LAYERS[name]
    layer = dict(model.named_modules())[mod_path]
    # Neuron and channel targets (Captum's NeuronGradient; the channel mean by autograd),
    # at the unit most active in both images, so that neither gradient is trivially zero.
    acts = {}
    hook = layer.register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
    xg = x.clone().requires_grad_(True)
    model(xg)
    hook.remove()
    c, yy, xx = np.unravel_index(int(acts["a"].detach().min(0).values.argmax()), acts["a"].shape[1:])
    ref = NeuronGradient(model, layer).attribute(x, neuron_selector=(int(c), int(yy), int(xx))).detach().numpy()
    unit = "%d:%d:%d" % (c, yy, xx)
    chk.true("neuron %s gradient is not zero" % unit, np.abs(ref).sum() > 0)
    chk.close("saliency --neuron %s:%s" % (mod_path, unit), run("saliency", "--neuron", onnx_name + ":" + unit),
              np.abs(ref), tol)
    (g,) = torch.autograd.grad(acts["a"][:, 7].mean(dim=(1, 2)).sum(), xg)
    chk.close("input_x_gradient --channel %s:7" % mod_path, run("input_x_gradient", "--channel", onnx_name + ":7"),
              (g * x).detach().numpy(), tol)
    ref = LayerGradientXActivation(model, layer).attribute(x, target=top1).detach().numpy()
    chk.close("input_x_gradient --layer " + mod_path, run("input_x_gradient", "--layer", onnx_name), ref, tol)
    chk.exit()


if __name__ == "__main__":
    main()
