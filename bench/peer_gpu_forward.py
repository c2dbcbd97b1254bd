#!/usr/bin/env python3
# peer_gpu_forward.py: the PyTorch peer of bench/gpu_forward.c. Exports the torchvision
# models (random init, seeded, eval mode) to ONNX for Loupe, writes a small validation
# batch with PyTorch's float64 logits and input gradient, then times PyTorch on the same
# models: forward images/s (torch.no_grad) and input-gradient images/s
# (torch.autograd.grad of logits[:, t].sum() w.r.t. the input only), with peak memory.
#
# usage: peer_gpu_forward.py --out DIR [--device cuda|cpu] [--models resnet50,resnet18,vgg16]
#            [--precisions fp32,tf32,bf16] [--batch-fwd 256] [--batch-grad 64]
#            [--seconds 1.0] [--max-iters 20] [--warmup 2] [--export-only] [--quick]
#            [--interleave]
#
# Precisions, as a PyTorch user gets them: cudnn.benchmark on throughout.
#   fp32: TF32 off for cuDNN convolutions and cuBLAS matmuls (IEEE fp32 math):
#         cudnn.allow_tf32 = False, set_float32_matmul_precision("highest").
#   tf32: TF32 on for both (True, "high").
#   bf16: torch.autocast(device_type, dtype=torch.bfloat16) with the model and the input in
#         channels_last (TF32 off for what autocast leaves in fp32): the usual AMP way.
# Timing: `warmup` calls, then calls each followed by a device synchronize until at least
# `seconds` have passed and 3 calls are done, or `max-iters` calls; images/s = batch x
# calls / elapsed. Peak memory: torch.cuda.max_memory_allocated after a reset just before
# the cell (weights and inputs included).
#
# Prints JSON lines on stdout, flushed as they happen (logs go to stderr):
#   {"kind": "info", ...}   torch/cuDNN versions, GPU name, modes
#   {"kind": "export", "model", "onnx", "opset", "exporter", "seconds"}
#   {"kind": "ref", "model", "class", "batch", "torch_err_logits_<p>", "torch_err_grad_<p>",
#       "grad_change_perturbed"}
#       DIR/<model>.{onnx,input.npy,logits.npy,grad.npy}: the validation batch and
#       PyTorch's float64 references (stored as float32); torch_err_*: PyTorch's own rel
#       L2 error against them at precision p; grad_change_perturbed: the float64 gradient's
#       rel L2 change for a 1e-5 relative input perturbation (max-pool near-ties)
#   {"kind": "cell", "model", "prec", "pass": "forward"|"grad", "batch", "ips", "iters",
#       "seconds", "peak_mib"}   (peak_mib -1 on the CPU)
#   {"kind": "error", "model", "prec", "pass", "message"}
#   {"kind": "model_done", "model"}   after each model's export and cells (models are done
#       one at a time, in --models order); with
#       --interleave the peer then waits for a line on stdin (gpu_forward measures Loupe on
#       that model meanwhile, so complete rows come early) and exits at end of input
#   {"kind": "done", "seconds"}
import argparse
import copy
import inspect
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torchvision

# model -> (opset, seed). Opsets as tests/oracle/export_models.py uses them (vgg16 as
# its vgg11_bn).
MODELS = {"resnet50": (17, 2050), "resnet18": (13, 2018), "vgg16": (14, 2016)}
VAL_BATCH, SIZE = 2, 224
PERTURB = 1e-5
T0 = time.perf_counter()
# torch >= 2.9 warns on every TorchScript export; it is chosen on purpose (export_onnx).
warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")


def emit(**kw):
    print(json.dumps(kw), flush=True)


def log(msg):
    print("peer_gpu_forward: %s" % msg, file=sys.stderr, flush=True)


def rel_l2(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def set_tf32(on):
    # The two calls that stay consistent from torch 1.12 to 2.11: there, setting the new
    # fp32_precision knobs piecemeal leaves the legacy flags in a state torch's own TF32
    # check (also asked by cuBLAS matmuls) refuses; these two keep both views in step.
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")
    return "cudnn.allow_tf32=%s, float32_matmul_precision=%s" % (
        torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())


def export_onnx(model, x, path, opset):
    """TorchScript exporter as tests/oracle/export_models.py uses it; torch >= 2.9 makes
    the dynamo exporter the default, so dynamo=False is passed where that parameter
    exists. Falls back to the dynamo exporter (opset >= 18) if the TorchScript one is gone."""
    params = inspect.signature(torch.onnx.export).parameters
    kw = dict(opset_version=opset, do_constant_folding=True, input_names=["input"],
              output_names=["logits"])
    if "training" in params and hasattr(torch.onnx, "TrainingMode"):
        kw["training"] = torch.onnx.TrainingMode.EVAL
    if "dynamo" in params:
        kw["dynamo"] = False
    try:
        torch.onnx.export(model, (x,), path, **kw)
        return "torchscript"
    except Exception as e:  # noqa: BLE001 - any failure: try the other exporter
        if "dynamo" not in params:
            raise
        log("TorchScript exporter failed (%s: %s); trying dynamo=True" % (type(e).__name__, e))
    torch.onnx.export(model, (x,), path, opset_version=max(opset, 18), dynamo=True,
                      input_names=["input"], output_names=["logits"], external_data=False)
    return "dynamo"


class Runner:
    """One model on the device in one precision: forward and input-gradient calls."""

    def __init__(self, model, dev, prec):
        self.dev, self.prec = dev, prec
        self.bf16 = prec == "bf16"
        if dev.type == "cuda":
            set_tf32(prec == "tf32")
        self.mf = torch.channels_last if self.bf16 else torch.contiguous_format
        self.model = model.to(memory_format=self.mf)

    def prep(self, x):
        return x.to(self.dev).contiguous(memory_format=self.mf)

    def _ctx(self):
        if self.bf16:
            return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.dev.type, enabled=False)

    def forward(self, x):
        with torch.no_grad(), self._ctx():
            return self.model(x)

    def grad(self, x, t):
        xg = x.detach().requires_grad_(True)
        with self._ctx():
            y = self.model(xg)
        (g,) = torch.autograd.grad(y[:, t].float().sum(), xg)
        return y, g


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, batch, dev, a):
    for _ in range(a.warmup):
        fn()
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        sync(dev)
        n += 1
        el = time.perf_counter() - t0
        if n >= a.max_iters or (el >= a.seconds and n >= min(3, a.max_iters)):
            return batch * n / el, n, el


def build(name, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export_and_reference(name, a, dev):
    opset, seed = MODELS[name]
    model = build(name, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(VAL_BATCH, 3, SIZE, SIZE, generator=gen)
    t = int(torch.randint(0, 1000, (1,), generator=gen))
    path = os.path.join(a.out, name + ".onnx")
    t0 = time.perf_counter()
    exporter = export_onnx(model, torch.randn(1, 3, SIZE, SIZE, generator=gen), path, opset)
    emit(kind="export", model=name, onnx=path, opset=opset, exporter=exporter,
         seconds=round(time.perf_counter() - t0, 2))
    # References in float64 (NCHW, no autocast), on the device: a fp32 reference would
    # carry fp32 PyTorch's own error (~1e-3 on some input gradients).
    m64 = copy.deepcopy(model).double().to(dev)
    r64 = Runner(m64, dev, "fp32")
    l64, g64 = r64.grad(x.double().to(dev), t)
    logits, grad = l64.detach().cpu().numpy(), g64.cpu().numpy()
    # Conditioning, as export_models.py measures it: the gradient's change when the input
    # moves by PERTURB relative. Max-pool windows whose top two values are that close route
    # the gradient to either; any other fp32 engine's rounding flips some of them.
    xp = x.double() * (1 + PERTURB * torch.randn(x.shape, generator=gen, dtype=torch.float64))
    _, gp = r64.grad(xp.to(dev), t)
    grad_change = rel_l2(gp.cpu().numpy(), grad)
    del m64, r64, l64, g64, gp
    np.save(os.path.join(a.out, name + ".input.npy"), x.numpy())
    np.save(os.path.join(a.out, name + ".logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(a.out, name + ".grad.npy"), grad.astype(np.float32))
    model = model.to(dev)
    info = {"kind": "ref", "model": name, "class": t, "batch": VAL_BATCH,
            "grad_change_perturbed": grad_change}
    for p in a.precisions:  # PyTorch's own error at each precision
        r = Runner(model, dev, p)
        yl, g = r.grad(r.prep(x), t)
        info["torch_err_logits_" + p] = rel_l2(yl.detach().float().cpu().numpy(), logits)
        info["torch_err_grad_" + p] = rel_l2(g.float().cpu().numpy(), grad)
    model.to(memory_format=torch.contiguous_format)
    emit(**info)
    return model, t


def time_model(name, model, t, a, dev):
    gen = torch.Generator().manual_seed(MODELS[name][1] + 1)
    inputs = {"forward": torch.randn(a.batch_fwd, 3, SIZE, SIZE, generator=gen),
              "grad": torch.randn(a.batch_grad, 3, SIZE, SIZE, generator=gen)}
    for p in a.precisions:
        r = Runner(model, dev, p)
        for pas, batch in (("forward", a.batch_fwd), ("grad", a.batch_grad)):
            try:
                x = r.prep(inputs[pas])
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                fn = (lambda: r.forward(x)) if pas == "forward" else (lambda: r.grad(x, t))
                ips, n, el = measure(fn, batch, dev, a)
                peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else -1
                emit(kind="cell", model=name, prec=p, **{"pass": pas}, batch=batch, ips=ips,
                     iters=n, seconds=round(el, 3), peak_mib=round(peak, 1))
            except Exception as e:  # noqa: BLE001 - report the cell and go on (OOM and such)
                emit(kind="error", model=name, prec=p, **{"pass": pas},
                     message="%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
            finally:
                x = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer of bench/gpu_forward.c")
    ap.add_argument("--out", required=True, help="folder for the ONNX files and references")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--batch-fwd", type=int, default=256)
    ap.add_argument("--batch-grad", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--max-iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--export-only", action="store_true", help="exports and references, no timing")
    ap.add_argument("--interleave", action="store_true",
                    help="after each model's cells, wait for a line on stdin")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test: resnet18, fp32, batch 2, one call, no warm-up")
    a = ap.parse_args()
    if a.quick:
        a.models, a.precisions, a.batch_fwd, a.batch_grad = "resnet18", "fp32", 2, 2
        a.seconds, a.max_iters, a.warmup = 0.0, 1, 0
    a.models = a.models.split(",")
    a.precisions = a.precisions.split(",")
    for m in a.models:
        if m not in MODELS:
            sys.exit("peer_gpu_forward: unknown model '%s' (known: %s)" % (m, ", ".join(MODELS)))
    for p in a.precisions:
        if p not in ("fp32", "tf32", "bf16"):
            sys.exit("peer_gpu_forward: unknown precision '%s'" % p)
    if a.device == "cuda" and not torch.cuda.is_available():
        if not a.export_only:
            sys.exit("peer_gpu_forward: torch %s sees no CUDA device" % torch.__version__)
        a.device = "cpu"  # exports and float64 references need none (Loupe on the CUDA emulator)
    dev = torch.device(a.device)
    os.makedirs(a.out, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    emit(kind="info", torch=torch.__version__, torchvision=torchvision.__version__,
         cudnn=torch.backends.cudnn.version() if dev.type == "cuda" else None,
         device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
         cudnn_benchmark=True, bf16="autocast(bfloat16) + channels_last",
         fp32="TF32 off (" + (set_tf32(False) if dev.type == "cuda" else "cpu") + ")")
    failed = 0
    for name in a.models:  # export, reference and cells, one model at a time
        try:
            model, t = export_and_reference(name, a, dev)
            if not a.export_only:
                time_model(name, model, t, a, dev)
            del model
        except Exception as e:  # noqa: BLE001 - report it; Loupe's rows say so too
            failed += 1
            emit(kind="error", model=name, prec="", **{"pass": "export"},
                 message="%s: %s" % (type(e).__name__, e))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        emit(kind="model_done", model=name)
        if a.interleave and not sys.stdin.readline():
            log("stdin closed: stopping")
            break
    emit(kind="done", seconds=round(time.perf_counter() - T0, 1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
