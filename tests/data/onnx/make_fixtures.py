#!/usr/bin/python3
"""make_fixtures.py — writes the small ONNX fixtures that tests/unit/test_onnx.c loads
(a tiny Conv+BN net from torch.onnx.export, its external-data twin, and hand-built
broken or foldable graphs), plus expected.txt with the numbers the test checks.
Run from anywhere: /usr/bin/python3 tests/data/onnx/make_fixtures.py"""
import os

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 13


def path(name):
    return os.path.join(HERE, name)


class Tiny(torch.nn.Module):
    """Two Conv+BN+ReLU blocks and a linear head: BN directly after each Conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=True)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def make_tiny(expected):
    torch.manual_seed(0)
    net = Tiny()
    # Non-trivial running statistics, so folding errors show up in the outputs.
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    net.eval()
    x = torch.randn(1, 1, 8, 8)
    # PRESERVE keeps BatchNormalization in the file (EVAL would fuse it in torch
    # itself), so the importer's own folding is what gets tested.
    torch.onnx.export(net, x, path("tiny.onnx"), opset_version=OPSET, input_names=["input"],
                      output_names=["logits"], training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False)
    model = onnx.load(path("tiny.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 2, ops
    with torch.no_grad():
        y = net(x)
    np.save(path("tiny_in.npy"), x.numpy().astype(np.float32))
    np.save(path("tiny_out.npy"), y.numpy().astype(np.float32))
    file_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                      if t.data_type == TensorProto.FLOAT)
    # After folding: conv weights, one bias per conv output channel, the linear layer.
    folded = (net.conv1.weight.numel() + 4 + net.conv2.weight.numel() + 8
              + net.fc.weight.numel() + net.fc.bias.numel())
    expected["tiny_file_params"] = file_params
    expected["tiny_params"] = folded
    expected["tiny_file_nodes"] = len(model.graph.node)
    # Conv, Relu, Conv, Relu, GlobalAveragePool, Flatten, Gemm
    expected["tiny_nodes"] = len(model.graph.node) - 2

    onnx.save_model(model, path("tiny_ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="tiny.data", size_threshold=0)
    # A copy whose .data file does not exist.
    ext = onnx.load(path("tiny_ext.onnx"), load_external_data=False)
    for t in ext.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = "missing.data"
    onnx.save_model(ext, path("tiny_ext_missing.onnx"))


def save(graph, name, opset=OPSET):
    model = helper.make_model(graph, producer_name="make_fixtures",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save_model(model, path(name))


def f32(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def make_broken():
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    node = helper.make_node("FrobnicateXYZ", ["x"], ["y"], name="frob1")
    save(helper.make_graph([node], "unknown_op", [x], [y]), "unknown_op.onnx")

    node = helper.make_node("Conv", ["x", "w_missing"], ["y"], name="conv_missing")
    save(helper.make_graph([node], "missing_init", [x], [y]), "missing_init.onnx")

    w = f32("w", rng.standard_normal((3, 2, 3)))  # rank 3: a Conv2d weight needs rank 4
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv_badrank")
    save(helper.make_graph([node], "bad_conv_rank", [x], [y], [w]), "bad_conv_rank.onnx")

    sub = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "then",
                            [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], name="if1", then_branch=sub, else_branch=sub)
    save(helper.make_graph([node], "graph_attr", [x], [y], [cond]), "graph_attr.onnx")

    # dims say 4x2x3x3 = 72 elements, the data holds 70
    w = onnx.TensorProto(name="w_short", data_type=TensorProto.FLOAT, dims=[4, 2, 3, 3])
    w.float_data.extend([0.5] * 70)
    node = helper.make_node("Conv", ["x", "w_short"], ["y"], name="conv_short")
    save(helper.make_graph([node], "bad_count", [x], [y], [w]), "bad_count.onnx")

    # external data that tries to leave the model's folder
    w = onnx.TensorProto(name="w_escape", data_type=TensorProto.FLOAT, dims=[4, 2, 3, 3],
                         data_location=TensorProto.EXTERNAL)
    w.external_data.add(key="location", value="../../etc/passwd")
    node = helper.make_node("Conv", ["x", "w_escape"], ["y"], name="conv_escape")
    save(helper.make_graph([node], "ext_escape", [x], [y], [w]), "ext_escape.onnx")


def make_shape_chain(expected):
    """Relu -> Shape -> Gather -> Unsqueeze -> Concat(Constant) -> Reshape: the chain
    torch emits for x.view(x.size(0), -1); everything but Relu and Reshape folds."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    idx = numpy_helper.from_array(np.array(0, dtype=np.int64), "idx0")
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "idx0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Constant", [], ["minus1"], name="const",
                         value=numpy_helper.from_array(np.array([-1], dtype=np.int64))),
        helper.make_node("Concat", ["n1", "minus1"], ["shp"], name="concat", axis=0),
        helper.make_node("Reshape", ["r", "shp"], ["y"], name="reshape"),
    ]
    save(helper.make_graph(nodes, "shape_chain", [x], [y], [idx, axes]), "shape_chain.onnx")
    expected["shape_chain_nodes"] = 2


def make_bn_standalone(expected):
    """BatchNormalization -> Relu -> Conv (DenseNet's order): the BN must stay."""
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [f32("scale", rng.uniform(0.5, 1.5, 3)), f32("bias", rng.uniform(-1, 1, 3)),
             f32("mean", rng.uniform(-1, 1, 3)), f32("var", rng.uniform(0.5, 2, 3)),
             f32("w", rng.standard_normal((4, 3, 3, 3)))]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["b"],
                         name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    save(helper.make_graph(nodes, "bn_standalone", [x], [y], inits), "bn_standalone.onnx")
    expected["bn_standalone_nodes"] = 3
    expected["bn_standalone_params"] = 4 * 3 + 4 * 3 * 3 * 3


def make_dtypes(expected):
    """DOUBLE and INT32 initializers (converted to float / int64) next to an unused
    FLOAT16 one (ignored); a second model uses the FLOAT16 one (an error)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    b = numpy_helper.from_array(np.array([0.5, -1.25, 2.0, 0.0, 1.0, -3.5], dtype=np.float64), "b_double")
    shp = numpy_helper.from_array(np.array([2, 3], dtype=np.int32), "shape_int32")
    half = numpy_helper.from_array(np.ones(4, dtype=np.float16), "unused_half")
    nodes = [helper.make_node("Add", ["x", "b_double"], ["s"], name="add"),
             helper.make_node("Reshape", ["s", "shape_int32"], ["y"], name="reshape")]
    save(helper.make_graph(nodes, "dtypes", [x], [y], [b, shp, half]), "dtypes.onnx")
    expected["dtypes_params"] = 6

    nodes = [helper.make_node("Add", ["x", "unused_half"], ["y"], name="add_half")]
    save(helper.make_graph(nodes, "fp16_used", [x], [y], [half]), "fp16_used.onnx")


def main():
    expected = {}
    make_tiny(expected)
    make_broken()
    make_shape_chain(expected)
    make_bn_standalone(expected)
    make_dtypes(expected)
    with open(path("expected.txt"), "w") as f:
        f.write("# written by make_fixtures.py: name value\n")
        for k, v in sorted(expected.items()):
            f.write(f"{k} {v}\n")
    for k, v in sorted(expected.items()):
        print(k, v)


if __name__ == "__main__":
    main()
