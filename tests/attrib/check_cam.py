#!/usr/bin/env python3
# check_cam.py: the CAM family against pytorch-grad-cam 1.5.4 and Captum 0.7.0 on the
# fixture models and photos, targets top-1
# and a fixed class (CLASS). What is compared:
#   pytorch-grad-cam (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM, ScoreCAM,
#     AblationCAM): its output, min-max(cv2.resize(min-max(relu(cam)))), against the
#     per-image min-max of Loupe's raw map (relu(cam) upsampled half-pixel, as cv2):
#     min-max commutes with the linear upsampling, so the two are the same function.
#     EigenCAM: the library's principal direction gets Loupe's sign convention (map
#     correlated positively with each position's centred total activation); the test
#     says how many images numpy's SVD had the other sign. ScoreCAM runs one forward
#     per channel in both, so it uses a small early layer (resnet18 layer1: 64 ch,
#     mobilenet_v2 features.1: 16 ch; not vgg11_bn, 7.6 GMAC a forward). AblationCAM:
#     the library replaces the layer by its cached activations anyway, so it is run on
#     the network's tail (an Identity at the layer, fed the layer's activations) and its
#     layer-resolution result resized with cv2 and min-max'd as BaseCAM does; its
#     ablation value is 0 only when the layer's minimum is 0 (checked).
#   Captum LayerGradCam (relu_attributions) upsampled with LayerAttribution.interpolate
#     (bilinear), and GuidedGradCam (interpolate_mode="bilinear"): raw, unnormalised.
#   cam: raw, against relu(fc_weight[target] . activations) upsampled (F.interpolate
#     bilinear, align_corners=False) in NumPy/torch; vgg11_bn (no GAP -> linear head)
#     must fail with a clear message.
# Tolerance: relative L2 <= 1e-3 (or 3x the model's float64 sensitivity, if larger).
#
# usage: check_cam.py LOUPE FIXDIR MODEL
#        check_cam.py LOUPE FIXDIR errors
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import attrib_common as ac

TOL = 1e-3
# The fixed class: one whose Grad-CAM is not all negative on either photo in any of the
# (random) models; e.g. 281's vanishes under the ReLU on mobilenet_v2 (checked below).
CLASS = 100
# torch module of the CAM layer, its ONNX value (None: Loupe's default layer), and the
# small layer Score-CAM uses.
LAYERS = {
    "resnet18": ("layer4.1", None, ("layer1.1", "/layer1/layer1.1/relu_1/Relu_output_0")),
    # Loupe's default is the (identity) 7 x 7 AveragePool after features.28; the library's
    # usual layer is features[-1], so name it.
    "vgg11_bn": ("features.28", "/features/features.28/MaxPool_output_0", None),
    "mobilenet_v2": ("features.18", None, ("features.1", "/features/features.1/conv/conv.1/Conv_output_0")),
}


def nonzero(chk, what, ref):
    """A map that ReLU zeroed everywhere would compare equal to anything zero."""
    chk.true("%s reference is not all zero" % what, all(np.abs(r).max() > 0 for r in ref))


def minmax(a):
    a = np.asarray(a, dtype=np.float64)
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    return (a - lo) / np.maximum(hi - lo, 1e-30)


def activations(model, module, x):
    out = {}
    h = module.register_forward_hook(lambda m, i, o: out.setdefault("a", o.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["a"]


def tail_of(name, model):
    """The network after the CAM layer, with an Identity standing for the layer."""
    head = model.fc if name == "resnet18" else model.classifier
    pool = model.avgpool if name != "mobilenet_v2" else torch.nn.AdaptiveAvgPool2d(1)
    return torch.nn.Sequential(torch.nn.Identity(), pool, torch.nn.Flatten(), head).eval()


def main_model(cli, fix, name):
    import pytorch_grad_cam as pgc
    import pytorch_grad_cam.eigen_cam as pgc_eigen
    from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.set_num_threads(2)
    t0 = time.time()
    # float32 references, except Captum's GuidedGradCam where the model has max-pools:
    # guided backprop reaches the input through them, and fp32 PyTorch breaks their ties
    # differently at saturated pixels (as check_grad.py, which runs Captum in float64).
    model = ac.load_model(fix, name)
    model64 = ac.load_model(fix, name).double() if name != "mobilenet_v2" else model
    for p in list(model.parameters()) + list(model64.parameters()):
        p.requires_grad_(False)
    x = torch.from_numpy(ac.input_batch(fix, name))
    x64 = x.to(next(model64.parameters()).dtype)
    with torch.no_grad():
        top1 = model64(x64).argmax(1).tolist()
    tol = ac.tolerance(fix, name, TOL)
    chk = ac.Checker()
    mods = dict(model.named_modules())
    mod_path, onnx_layer, score_layer = LAYERS[name]
    layer = mods[mod_path]
    layer64 = dict(model64.named_modules())[mod_path]
    larg = ("--layer", onnx_layer) if onnx_layer else ()
    run = lambda method, *a: ac.run_loupe(cli, fix, name, method, larg + a)
    size = x.shape[-2:]
    # With frozen weights the library's backward needs a graph: the layer's output is
    # made a leaf that requires grad (a hook registered before the library's), so the
    # backward runs through the tail only; the gradients it reads are the same.
    cut = lambda: layer.register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True))
    leaf = cut()

    cls_fixed = CLASS
    targets = {"top1": (top1, ()), "class %d" % cls_fixed: ([cls_fixed] * len(top1), ("--target", cls_fixed))}
    abl_top1 = None
    for tname, (cls, targ) in targets.items():
        tg = [ClassifierOutputTarget(c) for c in cls]
        ours_gc = None
        for cls_name, method in (("GradCAM", "gradcam"), ("GradCAMPlusPlus", "gradcam_pp"),
                                 ("XGradCAM", "xgradcam"), ("LayerCAM", "layercam")):
            with getattr(pgc, cls_name)(model=model, target_layers=[layer]) as cam:
                ref = cam(input_tensor=x, targets=tg)
            ours = run(method, *targ)
            ours_gc = ours if method == "gradcam" else ours_gc
            chk.true("%s shape" % method, ours.shape == (len(cls), 1) + tuple(size), str(ours.shape))
            chk.close("%s vs pytorch-grad-cam %s (%s)" % (method, cls_name, tname), minmax(ours[:, 0]), ref, tol)
            nonzero(chk, method, ref)

        t = torch.tensor(cls)
        gc = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        ref = LayerAttribution.interpolate(gc, tuple(size), interpolate_mode="bilinear").detach().numpy()
        chk.close("gradcam vs Captum LayerGradCam (%s)" % tname, ours_gc, ref, tol)
        if tname == "top1":  # float64 guided backprop is the slowest reference: one target
            leaf.remove()  # this one needs the whole graph
            ref = GuidedGradCam(model64, layer64).attribute(x64, target=t, interpolate_mode="bilinear")
            leaf = cut()
            chk.close("guided_gradcam vs Captum GuidedGradCam (%s)" % tname, run("guided_gradcam", *targ),
                      ref.detach().numpy(), tol)

        # Ablation-CAM: the library on the tail, at layer resolution, then BaseCAM's scaling.
        acts = activations(model, layer, x)
        chk.true("layer minimum is 0 (library ablates to 0)", all(float(a.min()) == 0 for a in acts))
        tail = tail_of(name, model)
        with pgc.AblationCAM(model=tail, target_layers=[tail[0]], batch_size=64) as cam:
            low = cam(input_tensor=acts, targets=tg)
        ref = np.stack([cv2.resize(np.float32(m), (size[1], size[0])) for m in low])
        ours = run("ablationcam", *targ)
        abl_top1 = ours if tname == "top1" else abl_top1
        chk.close("ablationcam vs pytorch-grad-cam AblationCAM (%s)" % tname, minmax(ours[:, 0]), minmax(ref), tol)
        nonzero(chk, "ablationcam", ref)

        # cam: the fc weights of the target class on the layer's activations.
        if name != "vgg11_bn":
            fc = model.fc if name == "resnet18" else model.classifier[1]
            a = acts.numpy()
            m = np.maximum(np.einsum("nk,nkhw->nhw", fc.weight.numpy()[cls], a), 0)
            ref = F.interpolate(torch.from_numpy(m[:, None]), size=tuple(size), mode="bilinear",
                                align_corners=False).numpy()
            chk.close("cam vs fc weights (%s)" % tname, run("cam", *targ), ref, tol)
        print("     (%.0f s)" % (time.time() - t0))

    # Eigen-CAM (no target), with the sign convention applied to the library's projection.
    flips = []
    orig = pgc_eigen.get_2d_projection

    def signed_projection(batch):
        proj = orig(batch.copy())
        for i, a in enumerate(batch):
            X = a.reshape(a.shape[0], -1).T
            X = X - X.mean(axis=0)
            flip = float(X.sum(axis=1) @ proj[i].ravel()) < 0
            flips.append(flip)
            if flip:
                proj[i] = -proj[i]
        return proj

    pgc_eigen.get_2d_projection = signed_projection
    with pgc.EigenCAM(model=model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=x)
    chk.close("eigencam vs pytorch-grad-cam EigenCAM", minmax(run("eigencam")[:, 0]), ref, tol)
    if score_layer:  # more positions than channels: Loupe takes the other eigenproblem
        mod, onnx_name = score_layer
        with pgc.EigenCAM(model=model, target_layers=[mods[mod]]) as cam:
            ref = cam(input_tensor=x)
        chk.close("eigencam --layer %s vs EigenCAM" % mod,
                  minmax(ac.run_loupe(cli, fix, name, "eigencam", ("--layer", onnx_name))[:, 0]), ref, tol)
    pgc_eigen.get_2d_projection = orig
    print("     (numpy's SVD sign flipped to the convention on %d of %d images)" % (sum(flips), len(flips)))

    leaf.remove()
    if score_layer:
        mod, onnx_name = score_layer
        with pgc.ScoreCAM(model=model, target_layers=[mods[mod]]) as cam:
            cam.batch_size = 32
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in top1])
        ours = ac.run_loupe(cli, fix, name, "scorecam", ("--layer", onnx_name, "--batch", 32))
        chk.close("scorecam --layer %s vs pytorch-grad-cam ScoreCAM (top1)" % mod, minmax(ours[:, 0]), ref, tol)
        if name == "mobilenet_v2":  # batch size must not change the answer (rows of both images mix)
            ours5 = ac.run_loupe(cli, fix, name, "scorecam", ("--layer", onnx_name, "--batch", 5))
            chk.close("scorecam --batch 5 vs --batch 32", ours5, ours, 1e-6)
        print("     (%.0f s)" % (time.time() - t0))
    if name == "resnet18":  # batch size must not change the answer (channels past the last batch)
        # Its weights are score differences, (s - s_k) / s, which magnify the last bits that
        # OpenBLAS's blocking changes with the batch size on some CPUs (1.5e-5 seen on an AVX2
        # EPYC, under 1e-6 on the AVX-512 machines before); a channel missed or repeated
        # changes a weight outright, not in its last bits.
        abl7 = ac.run_loupe(cli, fix, name, "ablationcam", larg + ("--batch", 7))
        chk.close("ablationcam --batch 7 vs 16", abl7, abl_top1, 1e-4)
    print("     (%.0f s)" % (time.time() - t0))
    chk.exit()


def loupe_err(cli, fix, name, *args):
    cmd = [cli, "explain", ac.model_path(fix, name), ac.input_path(fix, name), "--no-report", "--device", "cpu",
           "--npy-out", "/dev/null", *[str(a) for a in args]]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


def main_errors(cli, fix):
    chk = ac.Checker()
    rc, err = loupe_err(cli, fix, "vgg11_bn", "--method", "cam")
    chk.true("cam on vgg11_bn (no GAP -> linear) fails", rc != 0 and "global average pooling" in err, err)
    rc, err = loupe_err(cli, fix, "resnet18", "--method", "gradcam", "--layer", "nope")
    chk.true("unknown layer names spatial layers", rc != 0 and "/layer4/layer4.1/relu_1/Relu_output_0" in err, err)
    rc, err = loupe_err(cli, fix, "resnet18", "--method", "gradcam", "--layer", "/Flatten")
    chk.true("non-spatial layer is refused", rc != 0 and "not a spatial map" in err and "layer4" in err, err)
    rc, err = loupe_err(cli, fix, "resnet18", "--method", "cam", "--layer", "/layer4/layer4.0/relu_1/Relu")
    chk.true("cam on a layer not feeding the pool fails", rc != 0 and "global average pooling" in err, err)
    # The default layer is the last spatial one before the classifier.
    d = ac.run_loupe(cli, fix, "resnet18", "gradcam")
    e = ac.run_loupe(cli, fix, "resnet18", "gradcam", ("--layer", "/layer4/layer4.1/relu_1/Relu_output_0"))
    chk.close("resnet18 default layer = layer4.1 output", d, e, 0)
    d = ac.run_loupe(cli, fix, "mobilenet_v2", "gradcam")
    e = ac.run_loupe(cli, fix, "mobilenet_v2", "gradcam", ("--layer", "/features/features.18/features.18.2/Clip"))
    chk.close("mobilenet_v2 default layer = features.18 output", d, e, 0)
    chk.exit()


if __name__ == "__main__":
    if sys.argv[3] == "errors":
        main_errors(sys.argv[1], sys.argv[2])
    else:
        main_model(sys.argv[1], sys.argv[2], sys.argv[3])
