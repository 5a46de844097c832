"""Plain scikit-learn exports and onnxruntime's outputs on them, for parity tests.

Writes `models/tests/fixtures/parity/<name>.onnx` (exported by skl2onnx exactly as a
user would, no options beyond `zipmap=False` for classifiers) and `<name>.json`
holding the inputs and onnxruntime's outputs. `cargo test -p edge-models` loads
every pair and checks that our runtime (tract + our ONNX-ML operators) agrees.

    models/train/setup.sh && models/train/.venv/bin/python models/train/parity.py
"""

import json
import pathlib
import warnings

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity"
OPSET = {"": 17, "ai.onnx.ml": 3}


def data(seed=0, n=600, width=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    y_bin = (x[:, 0] + x[:, 1] ** 2 - 0.5 * x[:, 2] > 0.8).astype(np.int64)
    y_multi = np.digitize(x[:, 0] + 0.5 * x[:, 3], [-0.7, 0.0, 0.7]).astype(np.int64)
    y_reg = (2.0 * x[:, 0] - x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y_bin, y_multi, y_reg


def probe_rows(x):
    """Rows the reference covers: held-out data, exact thresholds, extremes, NaN."""
    rng = np.random.default_rng(99)
    rows = list(rng.normal(size=(56, x.shape[1])).astype(np.float32))
    rows += [np.zeros(x.shape[1], np.float32), np.full(x.shape[1], 1e6, np.float32)]
    rows += [np.full(x.shape[1], -1e6, np.float32), x[0], x[1], x[2]]
    return np.stack(rows).astype(np.float32)


def nan_rows(width):
    r = np.zeros((2, width), np.float32)
    r[0, 0] = np.nan
    r[1, :] = np.nan
    return r


def export(name, model, x, with_nan):
    opts = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") and not hasattr(model, "steps") else None
    if hasattr(model, "steps"):
        opts = {id(model.steps[-1][1]): {"zipmap": False}}
    onx = to_onnx(model, x[:1], options=opts, target_opset=OPSET)
    inputs = probe_rows(x)
    if with_nan:
        inputs = np.concatenate([inputs, nan_rows(x.shape[1])])
    write_fixture(name, onx.SerializeToString(), inputs, len(onx.graph.node))


def write_fixture(name, raw, inputs, nodes):
    """Runs `raw` in onnxruntime on `inputs` ([rows, ...]) and writes the pair."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(raw, so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: inputs})
    ref = {
        "model": f"{name}.onnx",
        "rows": int(inputs.shape[0]),
        "width": int(np.prod(inputs.shape[1:])),
        "inputs": [float(v) if np.isfinite(v) else None for v in inputs.ravel()],
        "outputs": {},
    }
    for o, v in zip(sess.get_outputs(), outs):
        v = np.asarray(v)
        ref["outputs"][o.name] = {
            "dtype": str(v.dtype),
            "shape": list(v.shape),
            "data": [x.item() if np.isfinite(x) else None for x in v.ravel()],
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.onnx").write_bytes(raw)
    (OUT / f"{name}.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
    print(f"{name}: {nodes} nodes, {len(raw)} bytes, outputs {list(ref['outputs'])}")

def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x, yb, ym, yr = data()
    export("rf_binary", RandomForestClassifier(20, max_depth=6, random_state=0).fit(x, yb), x, True)
    export("rf_multiclass", RandomForestClassifier(15, max_depth=5, random_state=0).fit(x, ym), x, True)
    export("rf_regressor", RandomForestRegressor(15, max_depth=5, random_state=0).fit(x, yr), x, True)
    export("gbt_binary", GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, yb), x, True)
    export("gbt_multiclass", GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(x, ym), x, True)
    export("gbt_regressor", GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(x, yr), x, True)
    export("isolation_forest", IsolationForest(n_estimators=30, random_state=0).fit(x), x, False)
    export(
        "scaler_mlp",
        make_pipeline(StandardScaler(), MLPClassifier((16, 8), max_iter=800, random_state=0)).fit(x, yb),
        x,
        False,
    )
    export("linear_regression", LinearRegression().fit(x, yr), x, False)


if __name__ == "__main__":
    main()
