#!/usr/bin/env python3
# export_models.py: builds the PyTorch oracle fixtures that tests/oracle/oracle_check.c
# compares Loupe against: torchvision classifiers as ONNX, an input, PyTorch's logits and
# input gradient, and (for two models) every intermediate activation under its ONNX name.
#
# usage: export_models.py OUTDIR [--models resnet18,mobilenet_v2] [--force]
#            [--emulate tf32,bf16] [--skip-without-cuda] [--lenient-acts]
# Writes OUTDIR/<model>/{model.onnx, input.npy, logits.npy, grad.npy, meta.json} (logits
# and grad from a float64 copy of the model; meta: class, opset, bounds, conditioning)
# and, for the models in --acts, OUTDIR/<model>/acts/{index.json, grad_index.json, *.npy}
# (ONNX value name -> activation / gradient). A model whose meta.json carries this
# script's hash is skipped, so repeated local runs are quick.
# The GPU oracle (ctest -L gpu, gpu.oracle.export.<model>) adds: --emulate, which stores in meta
# the error a correct engine with that convolution/GEMM precision would have
# (emu_<p>_err_logits, emu_<p>_err_grad; see emulated_errors); --skip-without-cuda, which
# prints "SKIPPED: ..." and exits 0 where torch sees no CUDA device (a machine that cannot
# run the GPU checks need not export for them; LOUPE_EXPORT_WITHOUT_CUDA=1 exports
# anyway); --lenient-acts, which leaves a model's intermediates out with a warning
# instead of failing when they cannot be made (a newer torch's export the interpreter
# below does not know), so the logits and gradient checks still run.
import argparse
import copy
import hashlib
import inspect
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F
import torchvision

# torch >= 2.9 warns on every TorchScript export; it is chosen on purpose (onnx_export).
warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
# model -> (opset, seed); opsets spread over 13..17 so the importer meets several.
MODELS = {
    "resnet18": (13, 1018),
    "resnet50": (17, 1050),
    "vgg11_bn": (14, 1011),
    "alexnet": (15, 1001),
    "squeezenet1_1": (16, 1111),
    "mobilenet_v2": (13, 1002),
    "densenet121": (17, 1121),
    "googlenet": (15, 1015),
}
WITH_ACTS = ("resnet18", "mobilenet_v2")
CALIBRATE_BN = ("googlenet",)  # see calibrate_bn
BATCH, SIZE = 2, 224
TOL = {"tol_logits": 1e-4, "tol_grad": 1e-3, "tol_acts": 1e-4}
# The ONNX interpreter below must reproduce PyTorch's own logits this closely, or the
# intermediate references are not trusted.
SELF_TOL = 1e-5
PERTURB = 1e-5


def script_hash():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build(name):
    ctor = getattr(torchvision.models, name)
    if name == "googlenet":
        return ctor(weights=None, aux_logits=False, transform_input=False, init_weights=True)
    return ctor(weights=None)


def randomise_bn(model, gen):
    # Random running statistics and affine parameters, so that BatchNormalization
    # folding (by the exporter or by Loupe) is really exercised rather than an identity.
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                mod.weight.copy_(0.5 + torch.rand(c, generator=gen))
                mod.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def calibrate_bn(model, x, gen):
    # Running statistics from the fixture batch itself, then var scaled by U(0.5, 2) and
    # mean shifted: for googlenet, whose trunc_normal(0.01) weights under random
    # statistics shrink the input gradient to ~1e-13, where PyTorch's own fp32 gradient
    # is 9% off its fp64 one; calibrated, it is a meaningful test again.
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for mod in bns:
        mod.reset_running_stats()
        mod.momentum = None  # cumulative: exactly this batch's statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        for mod in bns:
            c = mod.num_features
            mod.running_var.mul_(0.5 + 1.5 * torch.rand(c, generator=gen))
            mod.running_mean.add_(0.1 * torch.randn(c, generator=gen) * mod.running_var.sqrt())


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# ---- a small ONNX interpreter on torch.nn.functional -------------------------------
# It evaluates the exported graph node by node with PyTorch's own kernels, which gives
# PyTorch's value for every ONNX value name, including those no module returns (Add,
# Flatten, GlobalAveragePool). It is checked against the model's logits and hooks.
def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _sym_pads(pads, nd):
    if not pads:
        return [0] * nd
    if list(pads[:nd]) != list(pads[nd:]):
        raise ValueError("asymmetric pads %s" % (pads,))
    return list(pads[:nd])


def interpret(model_proto, x):
    env = {"input": x}
    for init in model_proto.graph.initializer:
        env[init.name] = torch.from_numpy(onnx.numpy_helper.to_array(init).copy())
    for node in model_proto.graph.node:
        a = _attrs(node)
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Identity":
            y = ins[0]
        elif op == "Constant":
            y = torch.from_numpy(onnx.numpy_helper.to_array(a["value"]).copy())
        elif op == "Conv":
            y = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                         stride=a.get("strides", [1, 1]), padding=_sym_pads(a.get("pads"), 2),
                         dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
        elif op == "Relu":
            y = F.relu(ins[0])
        elif op == "Clip":
            lo = ins[1].item() if len(ins) > 1 and ins[1] is not None else None
            hi = ins[2].item() if len(ins) > 2 and ins[2] is not None else None
            y = torch.clamp(ins[0], lo, hi)
        elif op == "MaxPool":
            y = F.max_pool2d(ins[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]),
                             _sym_pads(a.get("pads"), 2), a.get("dilations", [1, 1]),
                             ceil_mode=bool(a.get("ceil_mode", 0)))
        elif op == "GlobalAveragePool":
            y = ins[0].mean(dim=(2, 3), keepdim=True)
        elif op == "Concat":
            y = torch.cat(ins, dim=a["axis"])
        elif op == "Add":
            y = ins[0] + ins[1]
        elif op == "Flatten":
            y = torch.flatten(ins[0], a.get("axis", 1))
        elif op == "Gemm":
            A = ins[0].t() if a.get("transA", 0) else ins[0]
            B = ins[1].t() if a.get("transB", 0) else ins[1]
            y = a.get("alpha", 1.0) * (A @ B)
            if len(ins) > 2:
                y = y + a.get("beta", 1.0) * ins[2]
        else:
            raise ValueError("interpreter: no rule for %s (node %s)" % (op, node.name))
        env[node.output[0]] = y
    return env


# ---- PyTorch hooks: the model's own module outputs, for a cross-check ------------------
def hook_calls(model, x):
    calls = []
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, q=q: calls.append((q, mod, out.detach().clone())))
        for q, m in model.named_modules() if len(list(m.children())) == 0]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return calls


def scope_map(model):
    # ONNX node names of torch 1.13 exports: "/layer1/layer1.0/conv1/Conv". Each scope part
    # is a module's name relative to its nearest non-Sequential ancestor
    # ("/features/features.1/conv/conv.0/conv.0.2" is features.1.conv.0.2).
    out = {"": ""}
    seqs = (torch.nn.Sequential, torch.nn.ModuleList)

    def walk(mod, qual, scope, anchor):
        for child_name, child in mod.named_children():
            q = qual + "." + child_name if qual else child_name
            rel = q[len(anchor) + 1:] if anchor else q
            s = scope + "/" + rel
            out[s] = q
            walk(child, q, s, anchor if isinstance(child, seqs) else q)
    walk(model, "", "", "")
    return out


def cross_check(model, model_proto, env, x):
    """Compares interpreter values with hook outputs of the leaf module named by each
    node's scope (a Conv with the BatchNorm the exporter folded into it). Returns the
    number of values checked; raises on a mismatch."""
    calls = hook_calls(model, x)
    smap = scope_map(model)
    per_mod = {}
    for i, (q, mod, out) in enumerate(calls):
        per_mod.setdefault(q, []).append(i)
    checked = 0
    for node in model_proto.graph.node:
        if node.op_type not in ("Conv", "Relu", "Clip", "MaxPool", "Gemm"):
            continue
        parts = node.name.split("/")[:-1]
        scope, call = "/".join(parts), 0
        if scope not in smap and "_" in parts[-1]:
            base, _, k = parts[-1].rpartition("_")
            scope, call = "/".join(parts[:-1] + [base]), int(k)
        q = smap.get(scope)
        if q is None or q not in per_mod or call >= len(per_mod[q]):
            continue
        idx = per_mod[q][call]
        ref = calls[idx][2]
        if node.op_type == "Conv" and idx + 1 < len(calls) and \
                isinstance(calls[idx + 1][1], torch.nn.BatchNorm2d):
            ref = calls[idx + 1][2]
        got = env[node.output[0]]
        if tuple(got.shape) != tuple(ref.shape):
            raise RuntimeError("cross-check %s: shape %s vs hook %s of %s" %
                               (node.name, tuple(got.shape), tuple(ref.shape), q))
        e = rel_l2(got.numpy(), ref.numpy())
        if e > SELF_TOL:
            raise RuntimeError("cross-check %s vs module %s: rel L2 %.3g" % (node.name, q, e))
        checked += 1
    return checked


def write_acts(model, model_proto, x, logits, t, outdir):
    env = interpret(model_proto, x.clone().requires_grad_(True))
    for v in env.values():
        if v.requires_grad:
            v.retain_grad()
    env[model_proto.graph.output[0].name][:, t].sum().backward()
    grads = {k: v.grad for k, v in env.items() if v.requires_grad and v.grad is not None}
    env = {k: v.detach() for k, v in env.items()}
    out_name = model_proto.graph.output[0].name
    e = rel_l2(env[out_name].numpy(), logits)
    if e > SELF_TOL:
        raise RuntimeError("interpreter logits differ from PyTorch's: rel L2 %.3g" % e)
    n_hook = cross_check(model, model_proto, env, x)
    adir = os.path.join(outdir, "acts")
    os.makedirs(adir, exist_ok=True)
    # Gradients of sum(logits[:, t]) w.r.t. each activation, from the same interpreted
    # graph: they say which op's backward goes wrong when the input gradient does.
    index, gindex = {}, {}
    for node in model_proto.graph.node:
        if node.op_type in ("Constant", "Identity"):
            continue  # weights and scalars, not activations
        for name in node.output:
            fname = "%04d.npy" % len(index)
            np.save(os.path.join(adir, fname), env[name].numpy().astype(np.float32))
            index[name] = fname
            if name in grads and name != model_proto.graph.output[0].name:
                gname = "g%04d.npy" % len(gindex)
                np.save(os.path.join(adir, gname), grads[name].numpy().astype(np.float32))
                gindex[name] = gname
    with open(os.path.join(adir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with open(os.path.join(adir, "grad_index.json"), "w") as f:
        json.dump(gindex, f, indent=1)
    return len(index), len(gindex), n_hook


# ---- emulated reduced precision: what a correct tf32 / bf16 engine would get ------------
# Loupe's tf32 and bf16 round the inputs and weights of convolutions and GEMMs (and, in
# backward, the incoming gradient of their input-gradient product) and accumulate in fp32;
# bf16 convolutions also store their output, and their input gradient, in bf16 (cuDNN's
# NHWC bf16 tensors), so those are rounded too (found running the CUDA emulator).
# The same roundings applied to the float64 model give the error such an engine has
# whatever its kernels (max-pool routing flips included); the GPU oracle bounds Loupe at
# 3x that, when above the design's bounds.
def round_to(t, fmt):
    if fmt == "bf16":
        return t.float().bfloat16().to(t.dtype)
    i = t.float().view(torch.int32)  # tf32: 10 mantissa bits, round to nearest
    return ((i + 0x1000) & -0x2000).view(torch.float32).to(t.dtype)


class _RoundFwd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt):
        return round_to(x, fmt)

    @staticmethod
    def backward(ctx, g):
        return g, None


class _RoundBwd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt):
        ctx.fmt = fmt
        return x.clone()  # not a view: in-place ReLUs follow

    @staticmethod
    def backward(ctx, g):
        return round_to(g, ctx.fmt), None


def emulated_errors(model64, x64, t, logits64, grad64, fmt):
    emu = copy.deepcopy(model64)
    with torch.no_grad():
        for mod in emu.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                mod.weight.copy_(round_to(mod.weight, fmt))
                conv16 = fmt == "bf16" and isinstance(mod, torch.nn.Conv2d)
                if conv16:  # dx and y in bf16 as well
                    mod.register_forward_pre_hook(
                        lambda m, inp: (_RoundFwd.apply(_RoundBwd.apply(inp[0], fmt), fmt),))
                    mod.register_forward_hook(
                        lambda m, inp, out: _RoundBwd.apply(_RoundFwd.apply(out, fmt), fmt))
                else:
                    mod.register_forward_pre_hook(lambda m, inp: (_RoundFwd.apply(inp[0], fmt),))
                    mod.register_forward_hook(lambda m, inp, out: _RoundBwd.apply(out, fmt))
    logits, grad = logits_and_grad(emu, x64, t)
    return rel_l2(logits, logits64), rel_l2(grad, grad64)


def onnx_export(model, x, path, opset):
    # torch >= 2.9 defaults to the dynamo exporter: ask for the TorchScript one, which
    # these fixtures (node names, folded BatchNorm) are made with.
    params = inspect.signature(torch.onnx.export).parameters
    kw = dict(opset_version=opset, do_constant_folding=True, input_names=["input"],
              output_names=["logits"])
    if "training" in params and hasattr(torch.onnx, "TrainingMode"):
        kw["training"] = torch.onnx.TrainingMode.EVAL
    if "dynamo" in params:
        kw["dynamo"] = False
    torch.onnx.export(model, x, path, **kw)


def logits_and_grad(model, x, t):
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(logits[:, t].sum(), xg)
    return logits.detach().numpy(), grad.numpy()


def export_one(name, outdir, h, acts_models, emulate=(), lenient_acts=False):
    opset, seed = MODELS[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(name).eval()
    randomise_bn(model, gen)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    t = int(torch.randint(0, 1000, (1,), generator=gen))
    if name in CALIBRATE_BN:
        calibrate_bn(model, x, gen)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "model.onnx")
    onnx_export(model, x, path, opset)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    ops = {}
    for n in proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1

    # References in float64. How well conditioned each quantity is: PyTorch's own float32
    # error against them, and (for the gradient) its change when the input moves by
    # PERTURB relative, about the forward rounding noise of a different fp32 engine: a
    # max-pool window whose top two values are that close routes its gradient to either,
    # a real discontinuity. A bound below 3x either could fail any fp32 engine, so it is
    # raised to that (and the meta file says so).
    logits32, grad32 = logits_and_grad(model, x, t)
    model64 = copy.deepcopy(model).double()
    logits64, grad64 = logits_and_grad(model64, x.double(), t)
    xp = x * (1 + PERTURB * torch.randn(x.shape, generator=gen))
    _, grad_p = logits_and_grad(model, xp, t)
    logits, grad = logits64.astype(np.float32), grad64.astype(np.float32)
    tol = dict(TOL)
    cond = {"torch_fp32_err_logits": rel_l2(logits32, logits64),
            "torch_fp32_err_grad": rel_l2(grad32, grad64),
            "grad_change_perturbed": rel_l2(grad_p, grad64)}
    tol["tol_logits"] = max(TOL["tol_logits"], 3 * cond["torch_fp32_err_logits"])
    tol["tol_grad"] = max(TOL["tol_grad"], 3 * cond["torch_fp32_err_grad"],
                          3 * cond["grad_change_perturbed"])
    np.save(os.path.join(outdir, "input.npy"), x.numpy())
    np.save(os.path.join(outdir, "logits.npy"), logits)
    np.save(os.path.join(outdir, "grad.npy"), grad)
    meta = {"model": name, "opset": opset, "seed": seed, "class": t, "batch": BATCH,
            "size": SIZE, **tol, **cond, "op_types": ops, "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "logits_norm": float(np.linalg.norm(logits)),
            "grad_norm": float(np.linalg.norm(grad))}
    for fmt in emulate:
        meta["emu_%s_err_logits" % fmt], meta["emu_%s_err_grad" % fmt] = emulated_errors(
            model64, x.double(), t, logits64, grad64, fmt)
    if name in acts_models:
        try:
            meta["acts_count"], meta["act_grads_count"], meta["acts_hook_checked"] = \
                write_acts(model, proto, x, logits32, t, outdir)
        except Exception as e:  # noqa: BLE001 - --lenient-acts: any failure of the extras
            if not lenient_acts:
                raise
            shutil.rmtree(os.path.join(outdir, "acts"), ignore_errors=True)
            print("%-14s warning: intermediates left out (%s: %s)" % (name, type(e).__name__, e))
    meta["script_hash"] = h  # last: a crash before this leaves the fixture stale
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def fresh(outdir, h, emulate=()):
    try:
        with open(os.path.join(outdir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    need = ["model.onnx", "input.npy", "logits.npy", "grad.npy"]
    if meta.get("acts_count"):
        need.append("acts/index.json")
    if any("emu_%s_err_grad" % fmt not in meta for fmt in emulate):
        return False
    return meta.get("script_hash") == h and all(
        os.path.exists(os.path.join(outdir, n)) for n in need)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--acts", default=",".join(WITH_ACTS),
                    help="models whose intermediates (values and gradients) are written")
    ap.add_argument("--emulate", default="",
                    help="tf32,bf16: store the error of a correct engine at these precisions")
    ap.add_argument("--skip-without-cuda", action="store_true",
                    help="print SKIPPED and exit 0 where torch sees no CUDA device")
    ap.add_argument("--lenient-acts", action="store_true",
                    help="leave intermediates out (with a warning) where they cannot be made")
    args = ap.parse_args()
    emulate = [f for f in args.emulate.split(",") if f]
    for fmt in emulate:
        if fmt not in ("tf32", "bf16"):
            sys.exit("export_models.py: --emulate takes tf32 and bf16, not '%s'" % fmt)
    if args.skip_without_cuda and not torch.cuda.is_available() and \
            os.environ.get("LOUPE_EXPORT_WITHOUT_CUDA") != "1":
        print("SKIPPED: no CUDA device for torch %s (the GPU fixtures are made where the GPU "
              "checks run; LOUPE_EXPORT_WITHOUT_CUDA=1 exports anyway)" % torch.__version__)
        return
    h = script_hash()
    # OMP_NUM_THREADS, where set, bounds it (its first level): check.sh runs several exports at once.
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        threads = 0
    torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit("export_models.py: unknown model '%s' (known: %s)" % (name, ", ".join(MODELS)))
        outdir = os.path.join(args.outdir, name)
        if not args.force and fresh(outdir, h, emulate):
            print("%-14s cached" % name)
            continue
        meta = export_one(name, outdir, h, args.acts.split(","), emulate, args.lenient_acts)
        extra = ""
        if "acts_count" in meta:
            extra = " acts=%d grads=%d (hook-checked %d)" % (
                meta["acts_count"], meta["act_grads_count"], meta["acts_hook_checked"])
        extra += "".join(" emulated %s err %.1e/%.1e" % (
            fmt, meta["emu_%s_err_logits" % fmt], meta["emu_%s_err_grad" % fmt]) for fmt in emulate)
        print("%-14s opset %d class %d |logits| %.3g |grad| %.3g torch fp32 err %.1e/%.1e "
              "perturbed grad %.1e bounds %.0e/%.1e%s ops: %s" % (
            name, meta["opset"], meta["class"], meta["logits_norm"], meta["grad_norm"],
            meta["torch_fp32_err_logits"], meta["torch_fp32_err_grad"],
            meta["grad_change_perturbed"], meta["tol_logits"],
            meta["tol_grad"], extra,
            " ".join("%s:%d" % kv for kv in sorted(meta["op_types"].items()))))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
