"""onnxruntime's side of `cargo bench -p edge-models --bench zoo`.

Arguments: triples of (name, model.onnx, reference.json). Prints JSON
{name: {"b1": seconds, "b64": seconds}}: median seconds per `run` call with one
intra-op thread, on the reference inputs (batch 1 and batch 64).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def time_it(f, iters, rounds=7):
    for _ in range(min(iters, 200)):
        f()
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(iters):
            f()
        samples.append((time.perf_counter() - t) / iters)
    return sorted(samples)[rounds // 2]


def iters_for(one):
    return int(min(max(0.05 / max(one, 1e-7), 5), 200_000))


def main(argv):
    out = {}
    for name, path, ref in zip(argv[0::3], argv[1::3], argv[2::3]):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        doc = json.load(open(ref))
        w = doc["width"]
        xs = np.array([0.0 if v is None else v for v in doc["inputs"]], dtype=np.float32)
        # [batch, features] or [batch, signals, samples] (raw-window models).
        dims = [d if isinstance(d, int) else w for d in s.get_inputs()[0].shape[1:]]
        one = xs[:w].reshape(1, *dims)
        batch = np.resize(xs, 64 * w).reshape(64, *dims).astype(np.float32)
        iname = s.get_inputs()[0].name
        t = time.perf_counter()
        s.run(None, {iname: one})
        b1 = time_it(lambda: s.run(None, {iname: one}), iters_for(time.perf_counter() - t))
        b64 = time_it(lambda: s.run(None, {iname: batch}), iters_for(b1 * 64))
        out[name] = {"b1": b1, "b64": b64}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
