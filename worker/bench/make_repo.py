"""Write a model repository in Triton's layout for the worker's tests, with ONNX Runtime's
output on a fixed input as the reference:

  DIR/repo/<model>/config.pbtxt, DIR/repo/<model>/1/model.onnx  (torchvision layout, seeded)
  DIR/input.f32, DIR/expected.f32           (batch x 3 x res x res; ONNX Runtime's output)
  DIR/broken/config.pbtxt, DIR/broken/model.onnx  (a graph with an operator the worker lacks,
                                                   for a test to drop into the repository)

  python3 worker/bench/make_repo.py DIR [--model resnet18] [--res 64] [--batch 2] [--seed 7]
"""
import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_nets  # noqa: E402

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, {res}, {res} ] }} ]
output [ {{ name: "output" data_type: TYPE_FP32 dims: [ {out} ] }} ]
"""


def put(root, name, model, res, out):
    os.makedirs(os.path.join(root, name, "1"), exist_ok=True)
    onnx.save(model, os.path.join(root, name, "1", "model.onnx"))
    with open(os.path.join(root, name, "config.pbtxt"), "w") as f:
        f.write(CONFIG.format(name=name, res=res, out=out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    sd = onnx_nets.weights(a.model, a.seed)
    m = onnx_nets.onnx_model(a.model, sd, a.res)
    put(os.path.join(a.dir, "repo"), a.model, m, a.res, 1000)
    x = np.random.default_rng(a.seed + 1).standard_normal((a.batch, 3, a.res, a.res)).astype(np.float32)
    sess = ort.InferenceSession(os.path.join(a.dir, "repo", a.model, "1", "model.onnx"),
                                providers=["CPUExecutionProvider"])
    y = sess.run(["output"], {"input": x})[0]
    x.astype("<f4").tofile(os.path.join(a.dir, "input.f32"))
    y.astype("<f4").tofile(os.path.join(a.dir, "expected.f32"))
    # A graph the worker cannot run: Conv then LRN (local response normalisation).
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.1] * 12)
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], name="conv0", kernel_shape=[1, 1]),
         helper.make_node("LRN", ["c"], ["output"], name="norm0", size=3)],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, a.res, a.res])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, a.res, a.res])],
        initializer=[w])
    bm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    bm.ir_version = 8
    os.makedirs(os.path.join(a.dir, "broken"), exist_ok=True)
    onnx.save(bm, os.path.join(a.dir, "broken", "model.onnx"))
    with open(os.path.join(a.dir, "broken", "config.pbtxt"), "w") as f:
        f.write(CONFIG.format(name="broken", res=a.res, out=f"4, {a.res}, {a.res}"))


if __name__ == "__main__":
    main()
