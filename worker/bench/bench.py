"""The built-in CPU worker's forward pass against ONNX Runtime on the same box, the same
weights (one seeded torchvision state_dict per model, written once as safetensors for the
worker and as an ONNX graph for ONNX Runtime), the same input and the same thread count.

Per cell (model x threads x batch) the two engines run in alternating rounds (ORT, worker,
ORT, worker, ...) so load from other processes hits both alike; each prints its median
per-pass time over all rounds, and the ratio is ORT ms / worker ms (= the worker's throughput
as a fraction of ORT's; >= 0.8 is the target). The outputs of both on the same batch are
compared (max |a - b| / max |b|, and the argmax of every row).

  cargo build --release -p edgeplane-worker --example forward_bench
  python3 -m venv /tmp/wvenv && /tmp/wvenv/bin/pip install onnxruntime onnx numpy
  /tmp/wvenv/bin/python worker/bench/bench.py [--models resnet18,resnet50,vgg16]
      [--threads 1,2] [--batches 1,8] [--rounds 3] [--iters 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_nets  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ort_times(sess, x, iters):
    out, ms = None, []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = sess.run(["output"], {"input": x})[0]
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms, out


def ours_times(exe, model, files, batch, threads, iters, warmup):
    cmd = [exe, "--model", model, "--weights", files["st"], "--input", files["x"],
           "--output", files["y"], "--batch", str(batch), "--threads", str(threads),
           "--warmup", str(warmup), "--iters", str(iters)]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["ms"]


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cell(a, exe, model, files, threads, batch, x, sess):
    xb = np.ascontiguousarray(x[:batch])
    ort_times(sess, xb, 1)  # warm-up
    o_ms, w_ms, o_out = [], [], None
    for r in range(a.rounds):
        t, o_out = ort_times(sess, xb, a.iters)
        o_ms += t
        w_ms += ours_times(exe, model, files, batch, threads, a.iters, 1)
    w_out = np.fromfile(files["y"], dtype="<f4").reshape(batch, 1000)
    rel = float(np.abs(w_out - o_out).max() / np.abs(o_out).max())
    same = bool((w_out.argmax(1) == o_out.argmax(1)).all())
    o, w = statistics.median(o_ms), statistics.median(w_ms)
    return {"model": model, "threads": threads, "batch": batch, "ort_ms": round(o, 1),
            "worker_ms": round(w, 1), "ratio": round(o / w, 2), "max_rel_diff": rel,
            "same_argmax": same}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="resnet18,resnet50,vgg16")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--exe", default=os.path.join(ROOT, "target/release/examples/forward_bench"))
    a = p.parse_args()
    print(f"# uptime: {os.popen('uptime').read().strip()}", flush=True)
    print(f"# onnxruntime {ort.__version__}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    tmp = tempfile.mkdtemp(prefix="ep-bench-")
    x = np.random.default_rng(a.seed).standard_normal((8, 3, 224, 224)).astype(np.float32)
    x.tofile(os.path.join(tmp, "x.f32"))
    for model in a.models.split(","):
        sd = onnx_nets.weights(model, a.seed)
        files = {"st": os.path.join(tmp, f"{model}.safetensors"),
                 "onnx": os.path.join(tmp, f"{model}.onnx"),
                 "x": os.path.join(tmp, "x.f32"), "y": os.path.join(tmp, "y.f32")}
        onnx_nets.write_safetensors(sd, files["st"])
        import onnx
        onnx.save(onnx_nets.onnx_model(model, sd), files["onnx"])
        del sd
        for threads in map(int, a.threads.split(",")):
            sess = session(files["onnx"], threads)
            for batch in map(int, a.batches.split(",")):
                row = cell(a, a.exe, model, files, threads, batch, x, sess)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del sess
        for f in ("st", "onnx"):
            os.remove(files[f])
    print(f"# uptime: {os.popen('uptime').read().strip()}")
    print("| model | threads | batch | ORT ms | worker ms | ratio (ORT/worker) | max rel diff | same argmax |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['ort_ms']} | {r['worker_ms']} "
              f"| {r['ratio']} | {r['max_rel_diff']:.1e} | {r['same_argmax']} |")


if __name__ == "__main__":
    main()
