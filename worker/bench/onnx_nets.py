"""ResNet18/ResNet50/VGG16 weights (torchvision state_dict names) and the same networks as ONNX
graphs, built with numpy and the small `onnx` package (no torch).

`weights(model, seed)` draws a state_dict: He-uniform convolutions, non-trivial batch norms
(gamma, beta, running mean and variance all away from the identity, so BN folding is exercised),
uniform fully-connected layers. `write_safetensors` stores it in the format the worker's
`--weights MODEL=PATH` reads; `onnx_model` builds the graph torchvision's modules define
(Conv + BatchNormalization + Relu, MaxPool, Add, GlobalAveragePool, Flatten, Gemm), its
initializers named as the state_dict.
"""
import json
import struct

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RESNET = {"resnet18": ([2, 2, 2, 2], False), "resnet50": ([3, 4, 6, 3], True)}
VGG16 = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]


def _conv_w(rng, cout, cin, k):
    bound = np.sqrt(2.0 / (cout * k * k)) * np.sqrt(3.0)
    return rng.uniform(-bound, bound, (cout, cin, k, k)).astype(np.float32)


def _bn(rng, sd, name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)


def _fc(rng, sd, name, inp, out):
    bound = 1.0 / np.sqrt(inp)
    sd[f"{name}.weight"] = rng.uniform(-bound, bound, (out, inp)).astype(np.float32)
    sd[f"{name}.bias"] = rng.uniform(-bound, bound, out).astype(np.float32)


def resnet_blocks(model):
    """(prefix, inp, planes, stride, has_downsample) per residual block."""
    layers, bottleneck = RESNET[model]
    exp = 4 if bottleneck else 1
    inp, out = 64, []
    for li, n in enumerate(layers):
        planes = 64 << li
        for bi in range(n):
            stride = 2 if bi == 0 and li > 0 else 1
            down = stride != 1 or inp != planes * exp
            out.append((f"layer{li + 1}.{bi}", inp, planes, stride, down))
            inp = planes * exp
    return out, bottleneck


def weights(model, seed):
    rng = np.random.default_rng(seed)
    sd = {}
    if model == "vgg16":
        idx, inp = 0, 3
        for c in VGG16:
            if c == 0:
                idx += 1
                continue
            sd[f"features.{idx}.weight"] = _conv_w(rng, c, inp, 3)
            sd[f"features.{idx}.bias"] = rng.uniform(-0.05, 0.05, c).astype(np.float32)
            idx, inp = idx + 2, c
        _fc(rng, sd, "classifier.0", 512 * 7 * 7, 4096)
        _fc(rng, sd, "classifier.3", 4096, 4096)
        _fc(rng, sd, "classifier.6", 4096, 1000)
        return sd
    sd["conv1.weight"] = _conv_w(rng, 64, 3, 7)
    _bn(rng, sd, "bn1", 64)
    blocks, bottleneck = resnet_blocks(model)
    for p, inp, planes, stride, down in blocks:
        shapes = ([(planes, inp, 1), (planes, planes, 3), (planes * 4, planes, 1)]
                  if bottleneck else [(planes, inp, 3), (planes, planes, 3)])
        for i, (co, ci, k) in enumerate(shapes, 1):
            sd[f"{p}.conv{i}.weight"] = _conv_w(rng, co, ci, k)
            _bn(rng, sd, f"{p}.bn{i}", co)
        if down:
            co = shapes[-1][0]
            sd[f"{p}.downsample.0.weight"] = _conv_w(rng, co, inp, 1)
            _bn(rng, sd, f"{p}.downsample.1", co)
    _fc(rng, sd, "fc", 512 * (4 if bottleneck else 1), 1000)
    return sd


def write_safetensors(sd, path):
    header, off = {}, 0
    for k, v in sd.items():
        n = v.nbytes
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for v in sd.values():
            f.write(np.ascontiguousarray(v, dtype="<f4").tobytes())


class _G:
    def __init__(self):
        self.nodes, self.n = [], 0

    def op(self, op, inputs, **attrs):
        self.n += 1
        out = f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}", **attrs))
        return out

    def conv(self, x, w, k, stride, pad, bias=None):
        ins = [x, w] + ([bias] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4)

    def conv_bn(self, x, conv, bn, k, stride, pad):
        y = self.conv(x, f"{conv}.weight", k, stride, pad)
        return self.op("BatchNormalization",
                       [y] + [f"{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var")],
                       epsilon=1e-5)


def _resnet_graph(g, model):
    y = g.op("Relu", [g.conv_bn("input", "conv1", "bn1", 7, 2, 3)])
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    blocks, bottleneck = resnet_blocks(model)
    for p, _inp, _planes, stride, down in blocks:
        convs = ([(1, 1, 0), (3, stride, 1), (1, 1, 0)] if bottleneck
                 else [(3, stride, 1), (3, 1, 1)])
        z = y
        for i, (k, s, pad) in enumerate(convs, 1):
            z = g.conv_bn(z, f"{p}.conv{i}", f"{p}.bn{i}", k, s, pad)
            if i < len(convs):
                z = g.op("Relu", [z])
        short = g.conv_bn(y, f"{p}.downsample.0", f"{p}.downsample.1", 1, stride, 0) if down else y
        y = g.op("Relu", [g.op("Add", [z, short])])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    return g.op("Gemm", [y, "fc.weight", "fc.bias"], transB=1)


def _vgg_graph(g):
    y, idx = "input", 0
    for c in VGG16:
        if c == 0:
            y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
            idx += 1
            continue
        y = g.op("Relu", [g.conv(y, f"features.{idx}.weight", 3, 1, 1, f"features.{idx}.bias")])
        idx += 2
    # AdaptiveAvgPool2d((7, 7)) is the identity on the 7x7 map of a 224x224 input.
    y = g.op("Flatten", [y], axis=1)
    for i, name in enumerate(("classifier.0", "classifier.3", "classifier.6")):
        y = g.op("Gemm", [y, f"{name}.weight", f"{name}.bias"], transB=1)
        if i < 2:
            y = g.op("Relu", [y])
    return y


def onnx_model(model, sd, res=224):
    g = _G()
    out = _vgg_graph(g) if model == "vgg16" else _resnet_graph(g, model)
    g.nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        g.nodes, model,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, res, res])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1000])],
        initializer=[numpy_helper.from_array(v, k) for k, v in sd.items()],
    )
    del out
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m
