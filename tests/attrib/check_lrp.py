#!/usr/bin/env python3
# check_lrp.py: Loupe's lrp and deeplift against zennit 0.5.1 and Captum 0.7.0.
#
# usage: check_lrp.py CLI FIXDIR MODEL   oracle on a fixture model (resnet18, vgg11_bn,
#                                        mobilenet_v2): LRP composites vs zennit, DeepLift
#                                        vs Captum
#        check_lrp.py CLI FIXDIR props   properties on small nets built here: every rule
#                                        and composite vs zennit, conservation of LRP-0 and
#                                        epsilon, DeepLift's summation to delta, and the
#                                        error on an op LRP has no rule for
#
# Conventions matched (see engine/attrib/lrp.c): Loupe's relevance starts as the target
# score on the target unit, which is zennit with grad_output = one-hot x output. The
# reference models get zennit's canonizers (BatchNorm merged, as Loupe folds it at load;
# ResNet's residual sums as Sum modules). zennit has none for MobileNetV2, whose
# residual adds and final average pool are plain tensor functions it would treat by
# their gradient (an add then doubles relevance); the reference gets the same kind of
# canonizer ResNet has (Sum module for the add, AdaptiveAvgPool2d module for the pool),
# which is what Loupe does for every Add and GlobalAveragePool.
#
# Captum's DeepLift hooks a module's input and output tensors; when a hooked module's
# output is the very tensor another hooked module reads (ReLU -> MaxPool in VGG and the
# ResNet stem), the first one records the gradient before the second one's rule has
# replaced it, so the ReLU rescales the plain max-pool gradient. Loupe applies the rule
# of each layer to the multipliers of the layer above (the DeepLIFT chain rule), so the
# reference gets a copy (x.clone()) in front of each MaxPool, which keeps the tensors
# apart and gives Captum the same chain. Captum only hooks ReLU/ELU/LeakyReLU/Sigmoid/
# Tanh/Softplus/MaxPool/Softmax: ReLU6 (MobileNetV2's Clip) is added to its table, as
# Loupe rescales Clip. ResNet's BasicBlock reuses one ReLU module twice, which Captum
# refuses; the reference block gets a second ReLU module. Captum's max-pool rule is
# replaced by the same rule with a scatter-add (see maxpool2d_scatter_add): its
# max_unpool2d drops shared argmaxes of overlapping windows, and on ResNet's stem pool
# that costs it the summation-to-delta property (0.65 rel L2 from Loupe, which keeps it).
#
# Tolerances: ac.tolerance (1e-3, or 3x the fixture's float64 sensitivity: VGG's
# max-pool near-ties make it 1.3e-2). MobileNetV2 (calibrated copy, see
# mobilenet_fixture) lands at ~8e-4: about 7.5e-4 of it is one global factor, the
# float32 rounding of the forward (logits 1.4e-5 from PyTorch's) amplified by the
# near-cancelling sums the score and the residual Norm divide by.
import os
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attrib_common as ac  # noqa: E402

torch.set_num_threads(2)


def bounds(nch=3):
    low = (0 - ac.MEAN) / ac.STD
    high = (1 - ac.MEAN) / ac.STD
    return (torch.tensor(low[:nch], dtype=torch.float32).view(1, nch, 1, 1),
            torch.tensor(high[:nch], dtype=torch.float32).view(1, nch, 1, 1))


def composite(name, canonizers, eps=1e-6, gamma=0.25, nch=3):
    from zennit import composites as zc
    from zennit import rules as zr
    from zennit.types import Linear
    low, high = bounds(nch)
    named = {"epsilon_plus_flat": lambda: zc.EpsilonPlusFlat(epsilon=eps, canonizers=canonizers),
             "epsilon_gamma_box": lambda: zc.EpsilonGammaBox(low=low, high=high, epsilon=eps, gamma=gamma,
                                                             canonizers=canonizers),
             "epsilon_plus": lambda: zc.EpsilonPlus(epsilon=eps, canonizers=canonizers),
             "epsilon_alpha2_beta1": lambda: zc.EpsilonAlpha2Beta1(epsilon=eps, canonizers=canonizers),
             "epsilon_alpha2_beta1_flat": lambda: zc.EpsilonAlpha2Beta1Flat(epsilon=eps, canonizers=canonizers)}
    if name in named:
        return named[name]()
    rule = {"zero": lambda: zr.Epsilon(epsilon=0.0), "epsilon": lambda: zr.Epsilon(epsilon=eps),
            "gamma": lambda: zr.Gamma(gamma=gamma), "alpha2_beta1": lambda: zr.AlphaBeta(alpha=2, beta=1),
            "alpha1_beta0": lambda: zr.AlphaBeta(alpha=1, beta=0), "flat": zr.Flat, "w_square": zr.WSquare}[name]()
    return zc.LayerMapComposite(zc.layer_map_base() + [(Linear, rule)], canonizers=canonizers)


def zennit_lrp(model, x, comp):
    """zennit's relevance at the input, seeded with the top-1 score (grad_output = one-hot x output)."""
    xt = torch.from_numpy(x).requires_grad_(True)
    with comp.context(model) as m:
        out = m(xt)
        seed = torch.zeros_like(out)
        seed[range(len(x)), out.argmax(1)] = 1
        torch.autograd.backward(out, seed * out.detach())
    return xt.grad.numpy(), out.detach().numpy()


_calibrated = {}


def base_model(name, fixdir=None):
    """The fixture's torch model; for mobilenet_v2 a calibrated copy (see mobilenet_fixture)."""
    if name != "mobilenet_v2":
        return ac.build_model(name)
    model = ac.build_model(name)
    if "state" not in _calibrated:
        x = torch.from_numpy(ac.input_batch(fixdir, name))
        gen = torch.Generator().manual_seed(2003)
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None  # the plain mean over the calibration pass
                with torch.no_grad():
                    mod.weight.copy_(1 + 0.1 * torch.randn(mod.num_features, generator=gen))
                    mod.bias.copy_(0.1 * torch.randn(mod.num_features, generator=gen))
        model.train()
        with torch.no_grad():
            model(x)
        _calibrated["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(_calibrated["state"])
    return model.eval()


def mobilenet_fixture(fixdir, tmp):
    """The fixture MobileNetV2 loses the input on its way up (the seeded BatchNorm
    statistics shrink the input-dependent part of the features ~10x per stage, to 4e-8
    of the activations at the last one): relevance reaching the input is ~1e-15 of the
    score, below float32 resolution in either library. The oracle runs on a copy whose
    BatchNorm statistics are those of the fixture input batch (weights and biases still
    random), exported here."""
    export(base_model("mobilenet_v2", fixdir), ac.input_batch(fixdir, "mobilenet_v2"), tmp, "mobilenet_v2")
    with open(os.path.join(tmp, "mobilenet_v2", "meta.json"), "w") as f:
        f.write('{"sensitivity": 0}')
    return tmp


def canonized(name, fixdir):
    """The fixture's torch model and the zennit canonizers that make it Loupe's graph."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.layer import Sum  # the module zennit's composites give the Norm rule
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    model = base_model(name, fixdir)
    if name == "resnet18":
        return model, [ResNetCanonizer()]
    if name == "vgg11_bn":
        return model, [VGGCanonizer()]
    # MobileNetV2: Sum for the inverted-residual add, a module for the final pool.
    from torchvision.models.mobilenetv2 import InvertedResidual

    def ir_forward(self, x):
        if self.use_res_connect:
            return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))
        return self.conv(x)

    def mb_forward(self, x):
        x = self.canonizer_pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    for m in model.modules():
        if isinstance(m, InvertedResidual):
            m.canonizer_sum = Sum()
            m.forward = types.MethodType(ir_forward, m)
    model.canonizer_pool = nn.AdaptiveAvgPool2d((1, 1))
    model.forward = types.MethodType(mb_forward, model)
    return model, [SequentialMergeBatchNorm()]


class Clone(nn.Module):
    def forward(self, x):
        return x.clone()


def maxpool2d_scatter_add(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    """Captum's maxpool rule with two fixes: the output differences are routed to the
    argmax through the max-pool gradient (a scatter-add) where Captum uses
    max_unpool2d, which keeps one value where overlapping windows (ResNet's 3x3 stride-2
    pool) share an argmax and so breaks summation to delta; and where x = x_ref the
    fallback is each row's own gradient (Captum takes grad_input[0], the first row's,
    for every row)."""
    import torch.nn.functional as F
    with torch.no_grad():
        inp, inp_ref = inputs.chunk(2)
        out, out_ref = outputs.chunk(2)
        delta_in = torch.cat(2 * [inp - inp_ref])
        ymax = torch.max(out, out_ref)
        delta_out = torch.cat([ymax - out_ref, out - ymax])
    with torch.enable_grad():
        v = module.input.detach().requires_grad_(True)
        y = F.max_pool2d(v, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
        (un,) = torch.autograd.grad(y, v, grad_output * delta_out)
    a, b = un.chunk(2)
    return torch.where(abs(delta_in) < eps, grad_input, torch.cat(2 * [a + b]) / delta_in)


def captum_model(name, fixdir):
    """The fixture model made fit for Captum's DeepLift (see the header)."""
    import torchvision
    model = base_model(name, fixdir)

    def bb_forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu_out(out + identity)

    for m in list(model.modules()):
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            m.relu_out = nn.ReLU()
            m.forward = types.MethodType(bb_forward, m)
        for cname, ch in list(m.named_children()):
            if isinstance(ch, nn.MaxPool2d):
                setattr(m, cname, nn.Sequential(Clone(), ch))
    return model


def captum_deeplift(model, x, baseline=None):
    import warnings
    from captum.attr import DeepLift
    from captum.attr._core import deep_lift
    deep_lift.SUPPORTED_NON_LINEAR[nn.ReLU6] = deep_lift.nonlinear
    deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] = maxpool2d_scatter_add
    xt = torch.from_numpy(x)
    with torch.no_grad():
        tgt = model(xt).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = None if baseline is None else torch.from_numpy(baseline)
        return DeepLift(model).attribute(xt, baselines=b, target=tgt).detach().numpy()


def oracle(cli, fixdir, name):
    with tempfile.TemporaryDirectory() as tmp:
        oracle_in(cli, fixdir, mobilenet_fixture(fixdir, tmp) if name == "mobilenet_v2" else fixdir, name)


def oracle_in(cli, fixdir, loupe_dir, name):
    ck = ac.Checker()
    x = ac.input_batch(fixdir, name)[:1]  # one image: the references' runtime
    tol = ac.tolerance(loupe_dir, name)
    # The single-rule case (gamma on every layer) runs on resnet18 only, for the time;
    # the small nets of `props` check every rule. The epsilon rule at zennit's default
    # epsilon (1e-6) divides by near-zero pre-activations: zennit's own float32 result is
    # ~2e-3 from its float64 one on resnet18, so it makes no float32 oracle.
    for comp in ("epsilon_plus_flat", "epsilon_gamma_box") + (("gamma",) if name == "resnet18" else ()):
        model, can = canonized(name, fixdir)
        ref, _ = zennit_lrp(model, x, composite(comp, can))
        ours = ac.run_loupe(cli, loupe_dir, name, "lrp", ["--lrp", comp], x=x)
        ck.close("%s lrp %s vs zennit" % (name, comp), ours, ref, tol)
    # Captum's default zero baseline, except on vgg11_bn: there the reference's feature maps
    # are constant inside but for last-bit differences between GEMM tiles, so its later
    # max-pools hold near-ties that the maxpool rule routes by argmax, whichever way each
    # library's kernels break them (rel L2 0.5 against Captum on an AVX2 EPYC). A random
    # baseline has no ties.
    args, base = (), None
    if name == "vgg11_bn":
        base = np.random.RandomState(7).uniform(-1, 1, x.shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        if base is not None:
            args = ("--baseline", os.path.join(tmp, "base.npy"))
            np.save(args[1], base)
        ref = captum_deeplift(captum_model(name, fixdir), x, base)
        ours = ac.run_loupe(cli, loupe_dir, name, "deeplift", args, x=x)
    ck.close("%s deeplift vs Captum%s" % (name, " (random baseline)" if args else ""), ours, ref, tol)
    ck.exit()


# ---- properties on small nets --------------------------------------------------------
def export(model, x, d, name):
    os.makedirs(os.path.join(d, name), exist_ok=True)
    torch.onnx.export(model, torch.from_numpy(x[:1]), ac.model_path(d, name), opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    np.save(ac.input_path(d, name), x)


def small_net(bias, seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(12, 16, 3, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10, bias=bias), nn.ReLU(), nn.Linear(10, 6, bias=bias)).eval()


def props(cli):
    from zennit.canonizers import SequentialMergeBatchNorm
    ck = ac.Checker()
    rng = np.random.RandomState(7)
    x = rng.randn(3, 3, 12, 12).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        # Every composite and rule against zennit, on a net with biases, BatchNorm, max
        # and average pools and dense layers; float64 reference.
        net = small_net(True, 11)
        with torch.no_grad():
            bn = net[1]
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.8, 1.2)
            bn.bias.uniform_(-0.1, 0.1)
        export(net, x, d, "small")
        names = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1",
                 "epsilon_alpha2_beta1_flat", "epsilon", "gamma", "alpha2_beta1", "alpha1_beta0", "flat",
                 "w_square"]
        for comp in names:
            eps, gam = (0.1, 0.5) if comp in ("epsilon", "gamma") else (1e-6, 0.25)
            m64 = small_net(True, 11)
            m64.load_state_dict(net.state_dict())
            ref, _ = zennit_lrp(m64.double(), x.astype(np.float64),
                                composite(comp, [SequentialMergeBatchNorm()], eps=eps, gamma=gam))
            # The CLI's zB box is [0, 1] under its normalisation: ImageNet's, as the reference's.
            ours = ac.run_loupe(cli, d, "small", "lrp", ["--lrp", comp, "--epsilon", eps, "--gamma", gam,
                                                         "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
            ck.close("small net lrp %s vs zennit (float64)" % comp, ours, ref, 1e-4)

        # Conservation: without biases, LRP-0 and epsilon keep the total relevance (the
        # score) through every layer: ReLUs pass it, pools share it. LRP-0 exactly up to
        # float32 rounding, epsilon = 1e-6 up to what the stabiliser absorbs; relative
        # tolerance 1e-5 on the sums.
        net = small_net(False, 12)
        with torch.no_grad():  # scores of order 10, so that epsilon = 1e-6 is a stabiliser only
            for mod in net.modules():
                if isinstance(mod, (nn.Conv2d, nn.Linear)):
                    mod.weight.mul_(3.0)
        export(net, x, d, "nobias")
        with torch.no_grad():
            out = net(torch.from_numpy(x))
        score = out.max(1).values.numpy().astype(np.float64)
        for comp, tol in (("zero", 1e-5), ("epsilon", 1e-5)):
            r = ac.run_loupe(cli, d, "nobias", "lrp", ["--lrp", comp])
            tot = r.reshape(len(x), -1).sum(1, dtype=np.float64)
            err = float(np.max(np.abs(tot - score) / np.abs(score)))
            ck.true("conservation %s: sum R = score" % comp, err <= tol,
                    "max rel err %.2e (tol %.0e), sums %s, scores %s" % (err, tol, np.round(tot, 5),
                                                                       np.round(score, 5)))

        # DeepLift sums to f(x) - f(baseline) (the summation-to-delta property), with a
        # black baseline file, and matches Captum on the same net.
        net = small_net(True, 13)
        export(net, x, d, "dl")
        base = np.broadcast_to(rng.randn(1, 3, 1, 1).astype(np.float32), x.shape).copy()
        bpath = os.path.join(d, "base.npy")
        np.save(bpath, base)
        r = ac.run_loupe(cli, d, "dl", "deeplift", ["--baseline", bpath])
        with torch.no_grad():
            fx, fb = net(torch.from_numpy(x)), net(torch.from_numpy(base))
        t = fx.argmax(1)
        delta = (fx[range(len(x)), t] - fb[range(len(x)), t]).double().numpy()
        tot = r.reshape(len(x), -1).sum(1, dtype=np.float64)
        err = float(np.max(np.abs(tot - delta)) / np.max(np.abs(delta)))
        ck.true("deeplift sums to f(x) - f(baseline)", err <= 1e-5, "rel err %.2e (tol 1e-05)" % err)
        cm = small_net(True, 13)
        cm.load_state_dict(net.state_dict())
        cm[3] = nn.Sequential(Clone(), cm[3])
        ck.close("small net deeplift vs Captum", r, captum_deeplift(cm, x, base), 1e-4)

        # An op without an LRP rule on the relevance path is an error naming the node.
        class Sq(nn.Module):
            def forward(self, v):
                return v * v

        export(nn.Sequential(nn.Conv2d(3, 4, 3), Sq(), nn.Flatten(), nn.Linear(400, 5)).eval(), x, d, "bad")
        try:
            ac.run_loupe(cli, d, "bad", "lrp")
            ck.true("unsupported op is an error", False, "loupe succeeded")
        except RuntimeError as e:
            msg = str(e).splitlines()[-1]
            ck.true("unsupported op is an error naming it", "Mul" in msg and "node" in msg, msg)
    ck.exit()


if __name__ == "__main__":
    cli, fixdir, what = sys.argv[1], sys.argv[2], sys.argv[3]
    if what == "props":
        props(cli)
    else:
        oracle(cli, fixdir, what)
