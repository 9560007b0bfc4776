"""A third-party Open Inference Protocol v2 server for the agent's tests: KServe's Python model
server (pip `kserve`) serving a small ONNX network through ONNX Runtime.

The network (conv 3->8 3x3 + ReLU + global average pool + Gemm 8->10) on FP32 [-1, 3, 32, 32]
is built here with the `onnx` package and fixed numpy weights (seed 7) into --model_dir, then
served under --model_name on KServe's gRPC port (`inference.GRPCInferenceService`). Nothing in
the responses is Edgeplane-specific: no `exec_ms`, no `received_unix_ns`.

    python kserve_onnx_server.py --model_name tinynet --model_dir DIR --grpc_port P --http_port Q
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
import kserve
from kserve import InferRequest, InferResponse, InferOutput


def build_model(path):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    b = np.zeros(8, dtype=np.float32)
    g = (rng.standard_normal((10, 8)) * 0.2).astype(np.float32)
    gb = np.zeros(10, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "g", "gb"], ["output"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tinynet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(x, n) for x, n in ((w, "w"), (b, "b"), (g, "g"), (gb, "gb"))],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


class OnnxModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.session = None

    def load(self):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def get_input_types(self):
        return [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]

    def get_output_types(self):
        return [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy().astype(np.float32)
        (y,) = self.session.run(None, {"input": x})
        out = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=True)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    os.makedirs(args.model_dir, exist_ok=True)
    path = os.path.join(args.model_dir, "tinynet.onnx")
    build_model(path)
    model = OnnxModel(args.model_name, path)
    model.load()
    kserve.ModelServer(grpc_port=args.grpc_port, http_port=args.http_port, workers=1).start([model])
