#!/usr/bin/env python3
"""check_gelu.py LOUPE OUT_DIR: ONNX's Gelu (opset 20, what torch >= 2.9's default exporter
writes for nn.GELU, e.g. in ConvNeXt) against PyTorch's F.gelu, both approximations.

Each model is Conv -> Gelu -> GlobalAveragePool -> Flatten -> Gemm, written with
onnx.helper (Debian's torch exports up to opset 17, where GELU is spelled with Erf).
Loupe's logits (`loupe predict --logits-out`) and input_x_gradient (`loupe explain`,
x times the gradient of each row's top logit) must match PyTorch's float64 run to rel L2
2e-6 / 2e-5; DeepLIFT's attributions through it must sum to f(x) - f(baseline). An
unknown `approximate` value must be refused, naming it."""
import os
import subprocess
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper


def model(path, w, b, fw, fb, approximate):
    attrs = {} if approximate is None else {"approximate": approximate}
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Gelu", ["c"], ["g"], name="gelu", **attrs),
        helper.make_node("GlobalAveragePool", ["g"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1, name="fc"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))]
    g = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 9, 9])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 8  # what this onnx writes; Gelu's opset is newer than its checker
    onnx.save(m, path)


def loupe(cli, *args):
    p = subprocess.run([cli, *args], capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def main():
    cli, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(20)
    x = rng.randn(2, 3, 9, 9).astype(np.float32) * 2
    w = (rng.randn(8, 3, 3, 3) * 0.5).astype(np.float32)
    b = (rng.randn(8) * 0.5).astype(np.float32)
    fw = rng.randn(5, 8).astype(np.float32)
    fb = rng.randn(5).astype(np.float32)
    np.save(os.path.join(out, "x.npy"), x)
    d = [torch.from_numpy(a).double() for a in (w, b, fw, fb)]

    def torch_logits(v, approx):  # the ONNX model in float64
        z = F.gelu(F.conv2d(v, d[0], d[1], padding=1), approximate=approx)
        return F.linear(z.mean((2, 3)), d[2], d[3])
    failed = 0
    for approx in (None, "none", "tanh"):
        tag = approx or "default"
        path = os.path.join(out, "gelu_%s.onnx" % tag)
        model(path, w, b, fw, fb, approx)
        xt = torch.from_numpy(x).double().requires_grad_(True)
        ref = torch_logits(xt, approx or "none")
        top = ref.argmax(1)
        (grad,) = torch.autograd.grad(ref[torch.arange(2), top].sum(), xt)
        ref_ixg = (xt * grad).detach().numpy()
        logits, attr = os.path.join(out, "logits_%s.npy" % tag), os.path.join(out, "ixg_%s.npy" % tag)
        rc, err = loupe(cli, "predict", path, os.path.join(out, "x.npy"), "--device", "cpu", "--logits-out", logits)
        rc2, err2 = loupe(cli, "explain", path, os.path.join(out, "x.npy"), "--method", "input_x_gradient",
                          "--device", "cpu", "--no-report", "--npy-out", attr, "-o", os.path.join(out, "explain"))
        if rc or rc2:
            print("FAIL  Gelu %-8s loupe failed: %s" % (tag, err or err2))
            failed += 1
            continue
        # fp32 against float64 gives ~2e-7 here; the two approximations differ by 3e-5 in
        # the logits and 4e-4 in the attribution, so the bounds tell them apart.
        for what, ours, want, tol in (("logits", np.load(logits), ref.detach().numpy(), 2e-6),
                                      ("x * d top / dx", np.load(attr), ref_ixg, 2e-5)):
            e = rel_l2(ours.reshape(want.shape), want)
            ok = e <= tol
            failed += not ok
            print("%s  Gelu %-8s %-16s rel L2 %.2e (bound %g)" % ("PASS" if ok else "FAIL", tag, what, e, tol))
    # DeepLIFT rescales Gelu (an elementwise nonlinearity): its attributions sum to
    # f(x) - f(baseline) for each row's target, as Captum's do (summation to delta).
    for approx in ("none", "tanh"):
        path, base = os.path.join(out, "gelu_%s.onnx" % approx), os.path.join(out, "base.npy")
        xb = rng.uniform(-1, 1, x.shape).astype(np.float32)
        np.save(base, xb)
        attr = os.path.join(out, "dl_%s.npy" % approx)
        rc, err = loupe(cli, "explain", path, os.path.join(out, "x.npy"), "--method", "deeplift", "--baseline", base,
                        "--device", "cpu", "--no-report", "--npy-out", attr, "-o", os.path.join(out, "explain"))
        fx, fbase = (torch_logits(torch.from_numpy(v).double(), approx) for v in (x, xb))
        top = fx.argmax(1)
        delta = (fx[torch.arange(2), top] - fbase[torch.arange(2), top]).numpy()
        e = float(np.max(np.abs(np.load(attr).reshape(2, -1).sum(1) - delta)) / np.max(np.abs(delta))) \
            if rc == 0 else float("inf")
        ok = e <= 1e-5
        failed += not ok
        print("%s  Gelu %-8s deeplift sums to f(x) - f(baseline): rel err %.2e (bound 1e-05)%s"
              % ("PASS" if ok else "FAIL", approx, e, "" if rc == 0 else " " + err))
    bad = os.path.join(out, "gelu_bad.onnx")
    model(bad, w, b, fw, fb, "erf")
    rc, err = loupe(cli, "info", bad)
    ok = rc != 0 and "approximate='erf'" in err and "gelu_bad.onnx" in err
    failed += not ok
    print("%s  Gelu approximate='erf' refused: %s" % ("PASS" if ok else "FAIL", err or "(exit 0)"))
    print("check_gelu: %d failed" % failed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
