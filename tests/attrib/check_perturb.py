#!/usr/bin/env python3
# check_perturb.py: the input-modification family.
#   occlusion MODEL  Captum's Occlusion (window (3, P, P), strides (3, S, S)) on the
#                    fixture model and photos; the zero fill, and on resnet18 also the
#                    black, blur and mean fills as Captum baselines. rel L2 <= 1e-3.
#   rise MODEL       rise with fixed masks (--masks-npy) against the same formula
#                    (sum_k score(x M_k) M_k / (masks keep)) on the torch model.
#   props            tiny hand-made models whose answers are known: rise's masks (their
#                    mean is `keep`; each is a cropped bilinear upsampling of a binary
#                    grid), occlusion_random's discrepancy map of one unit (zero outside
#                    the reach of the unit's receptive field, close to the dense-grid
#                    expectation), batch-size invariance, and the patch-size error.
#
# usage: check_perturb.py LOUPE FIXDIR occlusion|rise MODEL
#        check_perturb.py LOUPE FIXDIR props
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import attrib_common as ac

TOL = 1e-3
MEAN, STD = ac.MEAN, ac.STD


def top1(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# The seeded mobilenet_v2's logits hardly depend on its input (the signal shrinks ~10x
# per stage under its randomised BatchNorm: logits of the two photos agree to 1e-7), so
# score drops there are float rounding. Its checks read the mean of one channel of
# features.2 instead, where the input still matters (--channel, Captum on a truncated net).
CHANNEL = {"mobilenet_v2": (3, "/features/features.2/conv/conv.2/Conv", 3)}


def target_of(name, model, x):
    """(loupe target args, forward function, Captum target) for the fixture model."""
    if name in CHANNEL:
        depth, value, c = CHANNEL[name]
        head = model.features[:depth]
        return ["--channel", "%s:%d" % (value, c)], lambda v: head(v)[:, c].mean(dim=(1, 2))[:, None], 0
    return [], model, top1(model, x)


def check_occlusion(cli, fix, name, chk):
    from captum.attr import Occlusion

    model = ac.load_model(fix, name)
    x = torch.from_numpy(ac.input_batch(fix, name))
    targs, fwd, t = target_of(name, model, x)
    occ = Occlusion(fwd)
    run = lambda *a: ac.run_loupe(cli, fix, name, "occlusion", targs + list(a))

    def ref(patch, stride, baselines=None):
        with torch.no_grad():
            return occ.attribute(x, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                 baselines=baselines, target=t, perturbations_per_eval=8).numpy()

    # resnet18: 224 = 6 x 32 + 32, so the 7th window of 48 starts at 192 and is cut at
    # the edge; the heavier models: 224 - 64 = 160 = 3 x 48 + 16, five windows a row,
    # overlapping, the last cut at 224.
    patch, stride = (48, 32) if name == "resnet18" else (64, 48)
    want = ref(patch, stride)
    # A map of rounding noise would make the comparison meaningless (see CHANNEL).
    chk.true("occlusion reference is not noise", np.abs(want).max() > 1e-5, "max |ref| %.2e" % np.abs(want).max())
    chk.close("occlusion P%d S%d zero" % (patch, stride), run("--patch", patch, "--stride", stride), want, TOL)
    if name != "resnet18":
        return
    black = torch.from_numpy(((0.0 - MEAN) / STD).reshape(1, 3, 1, 1))
    chk.close("occlusion P75 S75 black", run("--patch", 75, "--stride", 75, "--fill", "black"),
              ref(75, 75, black), TOL)  # windows at 0, 75, 150; the last cut by 1
    sigma = 5.0
    blurred = TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
    chk.close("occlusion P64 S48 blur", run("--patch", 64, "--stride", 48, "--fill", "blur", "--blur-sigma", sigma),
              ref(64, 48, blurred), TOL)
    chk.close("occlusion P112 S112 mean", run("--patch", 112, "--stride", 112, "--fill", "mean"),
              ref(112, 112, x.mean(dim=(2, 3), keepdim=True)), TOL)


def check_rise(cli, fix, name, chk):
    model = ac.load_model(fix, name)
    x = torch.from_numpy(ac.input_batch(fix, name))
    targs, fwd, t = target_of(name, model, x)
    n_masks, keep = 16, 0.4
    g = torch.Generator().manual_seed(7)
    # Smooth masks of any kind do: the check is the formula, not the generator.
    grids = (torch.rand(n_masks, 1, 7, 7, generator=g) < keep).float()
    masks = F.interpolate(grids, size=(256, 256), mode="bilinear", align_corners=False)
    masks = masks[:, :, 11:235, 20:244].contiguous()
    with torch.no_grad():
        scores = torch.stack([fwd(x * m)[torch.arange(len(x)), t] for m in masks])  # masks x N
    ref = torch.einsum("kn,khw->nhw", scores.double(), masks[:, 0].double()) / (n_masks * keep)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "masks.npy")
        np.save(path, masks.numpy())
        ours = ac.run_loupe(cli, fix, name, "rise", targs + ["--masks-npy", path, "--keep", keep, "--batch", 10])
    chk.close("rise fixed masks", ours, ref.numpy()[:, None], TOL)
    # The map is mostly mean score x mean mask; the part that tells pixels apart is what
    # is left, so compare that too.
    flat = (scores.double().mean(0)[:, None, None] * masks[:, 0].double().mean(0) / keep).numpy()[:, None]
    chk.close("rise fixed masks, mean-score part removed", ours - flat, ref.numpy()[:, None] - flat, TOL)


# ---- tiny models with known answers ------------------------------------------------------
class Tiny(torch.nn.Module):
    """conv (3 -> 1, k x k, all-ones weight times w, bias b, no padding), then the mean: logits N x 1."""

    def __init__(self, k, w, b):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, k, bias=True)
        with torch.no_grad():
            self.conv.weight.fill_(w)
            self.conv.bias.fill_(b)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def export(model, path, size):
    torch.onnx.export(model.eval(), torch.zeros(1, 3, size, size), path, opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})


def run_cli(cli, onnx, x, method, args, expect_fail=False):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "a.npy")
        np.save(inp, x.astype(np.float32))
        cmd = [cli, "explain", onnx, inp, "--method", method, "--npy-out", out, "--no-report", "--device", "cpu",
               *[str(a) for a in args]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if expect_fail:
            return p
        if p.returncode != 0:
            raise RuntimeError("loupe failed: %s\n%s" % (" ".join(cmd), p.stderr))
        return np.load(out)


def upsample_operator(cells, ch, size):
    """U (up x cells): torch's half-pixel bilinear upsampling of a 1-D grid of `cells` to (cells+1) ch."""
    eye = torch.eye(cells).reshape(cells, 1, cells)
    up = F.interpolate(eye, size=(cells + 1) * ch, mode="linear", align_corners=False)[:, 0]
    return up.numpy().T.astype(np.float64)  # up x cells


def explain_mask(m, cells, ch, size):
    """Finds (dy, dx, G) with m = crop(U G U^T); returns the fit's residual and G."""
    u = upsample_operator(cells, ch, size)
    best = None
    for axis in (0, 1):
        errs = []
        for d in range(ch):
            a = u[d:d + size]
            proj = a @ np.linalg.pinv(a)
            r = m - proj @ m if axis == 0 else m - m @ proj.T
            errs.append(np.abs(r).max())
        best = (best or ()) + (int(np.argmin(errs)),)
    dy, dx = best
    ay, ax = u[dy:dy + size], u[dx:dx + size]
    g = np.linalg.pinv(ay) @ m @ np.linalg.pinv(ax).T
    resid = np.abs(ay @ np.round(g) @ ax.T - m).max()
    return resid, g, dy, dx


def check_props(cli, fix, chk):
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        # rise on a constant model: score c for any input, so S = c mean_k M_k / keep.
        const = os.path.join(tmp, "const.onnx")
        export(Tiny(1, 0.0, 2.0), const, 96)
        x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
        keep = 0.3
        s = run_cli(cli, const, x, "rise", ["--masks", 3000, "--keep", keep, "--cells", 7])
        mean_mask = s * keep / 2.0
        chk.true("rise shape", s.shape == (1, 1, 96, 96), str(s.shape))
        chk.true("rise mean mask = keep", abs(mean_mask.mean() - keep) < 0.01,
                 "mean %.4f, keep %.2f" % (mean_mask.mean(), keep))
        chk.true("rise mask mean flat", np.abs(mean_mask - keep).max() < 0.06,
                 "max |mean_k M_k(p) - keep| %.4f" % np.abs(mean_mask - keep).max())
        # One mask at a time: M = S keep / c must be a cropped upsampled binary grid.
        # 96 / 7 -> cells of 14 pixels, upsampled to 112, cropped at [0, 14).
        kept, shifts = [], set()
        for seed in range(1, 7):
            m = run_cli(cli, const, x, "rise", ["--masks", 1, "--keep", 0.5, "--seed", seed])[0, 0] * 0.5 / 2.0
            resid, g, dy, dx = explain_mask(m.astype(np.float64), 7, 14, 96)
            binary = np.abs(g - np.round(g)).max()
            chk.true("rise mask seed %d is an upsampled grid" % seed, resid < 1e-5 and binary < 1e-4,
                     "residual %.1e, |G - round G| %.1e, shift (%d, %d)" % (resid, binary, dy, dx))
            kept.append(np.round(g).mean())
            shifts.add((dy, dx))
        chk.true("rise masks differ in shift", len(shifts) > 1, str(sorted(shifts)))
        chk.true("rise kept cells ~ keep", 0.35 < np.mean(kept) < 0.65, "%.3f of 6 x 49 cells" % np.mean(kept))

        # occlusion_random on one unit of a 5 x 5 all-ones conv: with x = 1 and the zero
        # fill, occluder k drops the unit by 3 |k n RF| (RF the unit's 5 x 5 window).
        lin = os.path.join(tmp, "lin.onnx")
        export(Tiny(5, 1.0, 0.0), lin, 32)
        ones = np.ones((1, 3, 32, 32), np.float32)
        P, (uy, ux) = 6, (10, 12)
        neuron = ["--neuron", "/conv/Conv:0:%d:%d" % (uy, ux), "--patch", P, "--fill", "zero"]
        d = run_cli(cli, lin, ones, "occlusion_random", neuron + ["--masks", 12000, "--batch", 64])[0, 0]
        # The dense expectation: every position equally likely.
        num, den = np.zeros((32, 32)), np.zeros((32, 32))
        for a in range(32 - P + 1):
            for b in range(32 - P + 1):
                oy = max(0, min(a + P, uy + 5) - max(a, uy))
                ox = max(0, min(b + P, ux + 5) - max(b, ux))
                num[a:a + P, b:b + P] += 3.0 * oy * ox
                den[a:a + P, b:b + P] += 1
        dense = num / den
        reach = dense > 0  # pixels some occluder overlapping the RF covers
        chk.true("occlusion_random zero beyond reach", np.all(d[~reach] == 0),
                 "max |D| outside %.2e" % np.abs(d[~reach]).max())
        chk.true("occlusion_random positive within reach", np.all(d[reach] > 0),
                 "min D inside %.3f" % d[reach].min())
        peak = np.unravel_index(np.argmax(d), d.shape)
        chk.true("occlusion_random peak in the RF", uy <= peak[0] < uy + 5 and ux <= peak[1] < ux + 5, str(peak))
        chk.close("occlusion_random ~ dense expectation", d, dense, 0.05)
        d2 = run_cli(cli, lin, ones, "occlusion_random", neuron + ["--masks", 12000, "--batch", 7])[0, 0]
        chk.true("occlusion_random batch-invariant", np.array_equal(d, d2), "max diff %.1e" % np.abs(d - d2).max())

        # rise on the linear model: the masks (and so the map) do not depend on --batch.
        xr = np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32)
        r1 = run_cli(cli, lin, xr, "rise", ["--masks", 50, "--cells", 4, "--batch", 16])
        r2 = run_cli(cli, lin, xr, "rise", ["--masks", 50, "--cells", 4, "--batch", 3])
        chk.true("rise batch-invariant", np.allclose(r1, r2, rtol=1e-5, atol=1e-6),
                 "max diff %.1e" % np.abs(r1 - r2).max())

        # occlusion on the linear model, class target, stride = patch: each window's
        # drop is the sum of its pixels (3 channels) over 25 taps / 28^2 outputs.
        cnt = np.array([sum(o <= q < o + 5 for o in range(28)) for q in range(32)], np.float64)
        weight = 3.0 * np.outer(cnt, cnt) / 28 ** 2  # d logit / d x[c, y, x]
        drop = weight.reshape(4, 8, 4, 8).sum(axis=(1, 3))
        want = np.broadcast_to(np.kron(drop, np.ones((8, 8))), (1, 3, 32, 32))
        chk.close("occlusion P8 S8 linear model", run_cli(cli, lin, ones, "occlusion", ["--patch", 8, "--stride", 8]),
                  want, TOL)
        p = run_cli(cli, lin, ones, "occlusion", ["--patch", 40], expect_fail=True)
        chk.true("occlusion patch > image fails", p.returncode != 0 and "larger than the image (32 x 32)" in p.stderr
                 and "40 x 40" in p.stderr, p.stderr.strip()[-200:])


def main():
    cli, fix, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(2)
    chk = ac.Checker()
    if mode == "occlusion":
        check_occlusion(cli, fix, sys.argv[4], chk)
    elif mode == "rise":
        check_rise(cli, fix, sys.argv[4], chk)
    elif mode == "props":
        check_props(cli, fix, chk)
    else:
        sys.exit("unknown mode %s" % mode)
    chk.exit()


if __name__ == "__main__":
    main()
