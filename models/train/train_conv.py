"""Trains the zoo's raw-window model: a small 1-D convolutional network that reads
the last 256 vibration samples (1 s at 256 Hz) and gives the probability that a
bearing fault is developing.

    models/train/setup.sh
    models/train/.venv/bin/python models/train/train_conv.py     # writes models/zoo/bearing_conv/

The network is trained here with numpy (plain gradient descent with Adam, written
out below) and exported with `onnx.helper`: a deep-learning framework would add
hundreds of megabytes to the training venv for a model with 670 weights.

    X [batch, 1, 256] -> (x - mean) / std -> Conv(8 filters, k 8, stride 4) -> Relu
      -> Conv(8 filters, k 5, stride 2) -> Relu -> GlobalAveragePool -> Flatten
      -> Gemm(8 -> 1) -> Sigmoid -> probability [batch, 1]

Data: `run_to_failure --raw-out`, the same runs (seeds 1 and 1000) and windows as
`train.py`. The windows are exactly what the agent copies into the model's input:
the last 256 samples of the latest completed vibration window. Training takes one
window a minute; the held-out runs one every 10 s, so detection quality is measured
on the same rows as the feature models'.
"""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from train import (
    OPSET,
    ROOT,
    TEST_SEED,
    TRAIN_SEED,
    WEAR_LABEL,
    arguments,
    load,
    quality,
    session,
    write_model,
)

NAME = "bearing_conv"
SAMPLES = 256
K1, S1, C1 = 8, 4, 8
K2, S2, C2 = 5, 2, 8
L1 = (SAMPLES - K1) // S1 + 1
L2 = (L1 - K2) // S2 + 1
IDX1 = np.arange(L1)[:, None] * S1 + np.arange(K1)[None, :]
IDX2 = np.arange(L2)[:, None] * S2 + np.arange(K2)[None, :]


def simulate(runs, hours, seed, csv, raw, every):
    subprocess.run(
        [
            "cargo", "run", "--release", "--quiet", "-p", "edge-train", "--example",
            "run_to_failure", "--", "--runs", str(runs), "--hours", str(hours),
            "--seed", str(seed), "--out", str(csv), "--raw-out", str(raw),
            "--raw-every", str(every), "--raw-samples", str(SAMPLES),
        ],
        cwd=ROOT,
        check=True,
    )


def load_raw(csv, raw, every):
    meta, x, features = load(csv)
    rows = (meta["t_s"] % every) == 0
    w = np.fromfile(raw, dtype="<f4").reshape(-1, SAMPLES)
    if len(w) != rows.sum():
        raise SystemExit(f"{raw}: {len(w)} windows for {rows.sum()} rows; delete the data and rerun")
    return {k: v[rows] for k, v in meta.items()}, x[rows], features, w


class Net:
    def __init__(self, rng):
        self.p = {
            "w1": rng.normal(0, np.sqrt(2 / K1), (K1, C1)),
            "b1": np.zeros(C1),
            "w2": rng.normal(0, np.sqrt(2 / (K2 * C1)), (K2 * C1, C2)),
            "b2": np.zeros(C2),
            "w3": rng.normal(0, np.sqrt(1 / C2), (C2,)),
            "b3": np.zeros(1),
        }

    def forward(self, z):
        p = self.p
        p1 = z[:, IDX1]                                   # [B, L1, K1]
        h1 = p1 @ p["w1"] + p["b1"]                       # [B, L1, C1]
        a1 = np.maximum(h1, 0)
        p2 = a1[:, IDX2, :].reshape(len(z), L2, K2 * C1)  # [B, L2, K2*C1]
        h2 = p2 @ p["w2"] + p["b2"]                       # [B, L2, C2]
        a2 = np.maximum(h2, 0)
        g = a2.mean(axis=1)                               # [B, C2]
        logit = g @ p["w3"] + p["b3"][0]
        return logit, (p1, h1, p2, h2, g)

    def grads(self, z, y):
        p = self.p
        logit, (p1, h1, p2, h2, g) = self.forward(z)
        prob = 1 / (1 + np.exp(-logit))
        eps = 1e-7
        loss = -np.mean(y * np.log(prob + eps) + (1 - y) * np.log(1 - prob + eps))
        d = (prob - y) / len(z)                           # dloss/dlogit
        gr = {"w3": g.T @ d, "b3": np.array([d.sum()])}
        dh2 = (d[:, None, None] * p["w3"][None, None, :] / L2) * (h2 > 0)
        gr["w2"] = p2.reshape(-1, K2 * C1).T @ dh2.reshape(-1, C2)
        gr["b2"] = dh2.sum(axis=(0, 1))
        dp2 = (dh2 @ p["w2"].T).reshape(len(z), L2, K2, C1)
        da1 = np.zeros_like(h1)
        for j in range(K2):
            da1[:, IDX2[:, j], :] += dp2[:, :, j, :]
        dh1 = da1 * (h1 > 0)
        gr["w1"] = p1.reshape(-1, K1).T @ dh1.reshape(-1, C1)
        gr["b1"] = dh1.sum(axis=(0, 1))
        return loss, gr

    def train(self, z, y, rng, epochs=25, batch=128, lr=3e-3):
        m = {k: np.zeros_like(v) for k, v in self.p.items()}
        v = {k: np.zeros_like(v) for k, v in self.p.items()}
        t = 0
        for epoch in range(epochs):
            order = rng.permutation(len(z))
            losses = []
            for i in range(0, len(z), batch):
                idx = order[i : i + batch]
                loss, gr = self.grads(z[idx], y[idx])
                losses.append(loss)
                t += 1
                for k in self.p:
                    m[k] = 0.9 * m[k] + 0.1 * gr[k]
                    v[k] = 0.999 * v[k] + 0.001 * gr[k] ** 2
                    mh, vh = m[k] / (1 - 0.9**t), v[k] / (1 - 0.999**t)
                    self.p[k] -= lr * mh / (np.sqrt(vh) + 1e-8)
            if epoch % 5 == 4 or epoch == epochs - 1:
                print(f"  epoch {epoch + 1}: loss {np.mean(losses):.4f}")

    def prob(self, z):
        return 1 / (1 + np.exp(-self.forward(z)[0]))


def export(net, mean, std):
    f32 = np.float32
    p = net.p
    inits = [
        numpy_helper.from_array(np.array([mean], f32), "mean"),
        numpy_helper.from_array(np.array([1.0 / std], f32), "inv_std"),
        # ONNX Conv weights are [out, in, kernel].
        numpy_helper.from_array(p["w1"].T[:, None, :].astype(f32), "w1"),
        numpy_helper.from_array(p["b1"].astype(f32), "b1"),
        numpy_helper.from_array(p["w2"].reshape(K2, C1, C2).transpose(2, 1, 0).astype(f32), "w2"),
        numpy_helper.from_array(p["b2"].astype(f32), "b2"),
        numpy_helper.from_array(p["w3"][:, None].astype(f32), "w3"),
        numpy_helper.from_array(p["b3"].astype(f32), "b3"),
    ]
    nodes = [
        helper.make_node("Sub", ["X", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["z"]),
        helper.make_node("Conv", ["z", "w1", "b1"], ["h1"], kernel_shape=[K1], strides=[S1]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], kernel_shape=[K2], strides=[S2]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["g"], axis=1),
        helper.make_node("Gemm", ["g", "w3", "b3"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1, SAMPLES])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET[""])],
        producer_name="edge-agent models/train/train_conv.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def main():
    args = arguments()
    sets = {}
    for name, runs, seed, every in [
        ("train", args.runs, TRAIN_SEED, 60),
        ("test", args.test_runs, TEST_SEED, 10),
    ]:
        csv, raw = args.data / f"conv-{name}.csv", args.data / f"conv-{name}.f32"
        if not (csv.exists() and raw.exists()):
            simulate(runs, args.hours, seed, csv, raw, every)
        sets[name] = load_raw(csv, raw, every)
    mtr, _, _, wtr = sets["train"]
    mte, xte, _, wte = sets["test"]
    ytr = (mtr["wear"] >= WEAR_LABEL).astype(np.float64)
    mean, std = float(wtr.mean()), float(wtr.std())
    rng = np.random.default_rng(0)
    net = Net(rng)
    print(f"{NAME}: {len(wtr)} training windows, {ytr.mean():.1%} with wear >= {WEAR_LABEL}")
    net.train((wtr.astype(np.float64) - mean) / std, ytr, rng)
    raw = export(net, mean, std)

    # The export computes what the numpy network computes.
    s = session(raw)
    check = wte[:256].astype(np.float32)
    got = s.run(None, {"X": check[:, None, :]})[0][:, 0]
    want = net.prob((check.astype(np.float64) - mean) / std)
    assert np.max(np.abs(got - want)) < 1e-4, np.max(np.abs(got - want))

    scores = np.concatenate(
        [s.run(None, {"X": wte[i : i + 4096, None, :]})[0][:, 0] for i in range(0, len(wte), 4096)]
    )
    spec = {
        "description": "1-D convolutional network on the raw vibration window: probability that a bearing fault is developing.",
        "version": "1.0.0",
        "output": "probability",
        "column": 0,
        "direction": "above",
        "thresholds": {"warning": 0.5, "prefault": 0.8},
        "meanings": {"probability": "fault_probability"},
    }
    q = quality(mte, xte, scores, "above", spec["thresholds"]["prefault"])
    # Drift statistics: the mean and standard deviation of each training window.
    stats = np.stack([wtr.mean(axis=1), wtr.std(axis=1)], axis=1)
    ref_rng = np.random.default_rng(7)
    ref_rows = np.sort(ref_rng.choice(len(wte), 32, replace=False))
    x_ref = wte[ref_rows][:, None, :].astype(np.float32)
    ref_ids = [(TEST_SEED, mte["run"][i], mte["t_s"][i]) for i in ref_rows]
    write_model(
        NAME,
        raw,
        spec,
        ["vibration.mean", "vibration.std"],
        stats,
        x_ref,
        ref_ids,
        q,
        input_lines=[f'window = {{ signals = ["vibration"], samples = {SAMPLES} }}'],
        trained_with=f"numpy {np.__version__}, onnx {onnx.__version__}",
        generator="models/train/train_conv.py",
    )


if __name__ == "__main__":
    main()
