#!/usr/bin/env python3
# peer_cpu_forward.py: the PyTorch CPU peer of bench/cpu_forward.c. Times the same
# torchvision models at the same batch: forward (torch.no_grad) and the input gradient
# (torch.autograd.grad w.r.t. the input only), median of --iters runs after a warm-up.
# usage: peer_cpu_forward.py --models resnet18,resnet50 --batch 8 --iters 5
# Prints one JSON object: {"threads": T, "torch": V, "models": {name: {"forward_ips": ..,
# "grad_ips": ..}}}.
import argparse
import json
import os
import statistics
import time

import torch
import torchvision


def median_seconds(fn, iters):
    fn()  # warm-up: allocator, OpenMP pool, oneDNN primitives
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    for name in args.models.split(","):
        model = getattr(torchvision.models, name)(weights=None).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = torch.randn(args.batch, 3, 224, 224)

        def forward():
            with torch.no_grad():
                model(x)

        def grad():
            xg = x.clone().requires_grad_(True)
            y = model(xg)
            torch.autograd.grad(y[:, 0].sum(), xg)

        out["models"][name] = {
            "forward_ips": args.batch / median_seconds(forward, args.iters),
            "grad_ips": args.batch / median_seconds(grad, args.iters),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
