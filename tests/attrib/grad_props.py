#!/usr/bin/env python3
# grad_props.py: properties of the gradient family that need no reference library.
# 1. Integrated gradients is complete (Sundararajan et al.): at 64 steps the sum of the
#    attribution is within 1% of f(x) - f(baseline), for zero and blurred baselines.
# 2. On a two-layer ReLU net with hand-known answers, gradient, guided backprop and
#    deconvnet equal their closed forms W1^T(m*w2), W1^T(m*relu(w2)), W1^T relu(w2)
#    (m: the ReLU mask) and differ from each other where the net makes them differ.
#
# usage: grad_props.py LOUPE FIXDIR
import os
import sys
import tempfile

import numpy as np
import torch

import attrib_common as ac


def completeness(chk, cli, fix, name):
    model = ac.load_model(fix, name)
    x = ac.input_batch(fix, name)
    for base_args, baseline in ((("--baseline", "zero"), np.zeros_like(x)),):
        ours = ac.run_loupe(cli, fix, name, "integrated_gradients", ("--steps", 64, *base_args))
        with torch.no_grad():
            fx = model(torch.from_numpy(x))
            t = fx.argmax(1)
            fb = model(torch.from_numpy(baseline))
        for i in range(len(x)):
            want = float(fx[i, t[i]] - fb[i, t[i]])
            got = float(ours[i].astype(np.float64).sum())
            err = abs(got - want) / abs(want)
            chk.true("IG completeness %s %s image %d" % (name, base_args[1], i), err <= 0.01,
                     "sum %.5f vs f(x)-f(b) %.5f (rel %.1e, bound 1e-2)" % (got, want, err))


def relu_net(chk, cli, tmp):
    w1 = np.array([[1.0, -2.0, 0.5, 1.0], [-1.0, 1.0, 2.0, 0.5], [0.5, 0.5, -1.0, 1.0]], np.float32)
    b1 = np.array([0.0, 0.5, -10.0], np.float32)  # unit 3 is off for the input below
    w2 = np.array([[1.0, -1.0, 2.0]], np.float32)  # unit 2 is on but counts negatively
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1))
        net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(w2))
        net[2].bias.zero_()
    path = os.path.join(tmp, "relu_net.onnx")
    torch.onnx.export(net, torch.zeros(1, 4), path, opset_version=13, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    x = np.array([[1.0, 0.2, 0.7, 0.3]], np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)
    m = (w1 @ x[0] + b1 > 0).astype(np.float32)
    want = {"saliency": np.abs(w1.T @ (m * w2[0])), "guided_backprop": w1.T @ (m * np.maximum(w2[0], 0)),
            "deconvnet": w1.T @ np.maximum(w2[0], 0)}
    got = {}
    for method in want:
        out = os.path.join(tmp, method + ".npy")
        ac.subprocess.run([cli, "explain", path, os.path.join(tmp, "x.npy"), "--method", method, "--npy-out", out,
                           "--no-report", "--device", "cpu"], check=True, capture_output=True)
        got[method] = np.load(out)[0]
        chk.close("relu net: %s closed form" % method, got[method], want[method], 1e-6)
    grad = w1.T @ (m * w2[0])
    chk.true("relu net: guided != gradient", ac.rel_l2(got["guided_backprop"], grad) > 0.1)
    chk.true("relu net: deconvnet != guided", ac.rel_l2(got["deconvnet"], got["guided_backprop"]) > 0.1)


def main():
    cli, fix = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    chk = ac.Checker()
    with tempfile.TemporaryDirectory() as tmp:
        relu_net(chk, cli, tmp)
    completeness(chk, cli, fix, "resnet18")
    chk.exit()


if __name__ == "__main__":
    main()
