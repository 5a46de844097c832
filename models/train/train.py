"""Trains the model zoo on simulated run-to-failure data.

    models/train/setup.sh
    models/train/.venv/bin/python models/train/train.py          # writes models/zoo/

The data comes from `cargo run --release -p edge-train --example
run_to_failure`: the sim driver's physics with the agent's own windows and feature
code, so training features and gateway features are computed by the same code.
Training runs use seed 1, held-out runs seed 1000 (never seen in training).
Each reference row records the (seed, run, time) it was simulated at, and
`tests/tests/training_features.rs` regenerates rows from the sim and checks they
still agree with what the models were trained on.

Operators' labels (`edge-agent alerts label`, the `[labels] dataset`) join the
training set with `--labels FILE`: every label of a model alert carries the input
row the model scored (keyed by the training feature names); `true` rows count as
faults, `false` rows as healthy, each weighted `--label-weight` times (a verdict
from the plant is worth more than a simulated row); `unsure` and rows without
every feature are skipped.

Each model gets `models/zoo/<name>/`: the `.onnx` file exactly as skl2onnx
exported it, a `manifest.toml` (inputs, outputs, alert thresholds, training
statistics, SHA-256), `reference.json` (inputs and onnxruntime's outputs, the dry
run a hot swap checks before switching) and `quality.json` (detection quality on
the held-out runs).
"""

import argparse
import hashlib
import json
import pathlib
import subprocess
import warnings

import numpy as np
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
ROOT = pathlib.Path(__file__).resolve().parents[2]
ZOO = ROOT / "models" / "zoo"
OPSET = {"": 17, "ai.onnx.ml": 3}
STEP_S = 10.0
# A developing bearing fault: what the classifiers learn to recognise.
WEAR_LABEL = 0.05
# The built-in alarm the models must beat: bearing temperature warning (75 degC).
THRESHOLD_ALARM_C = 75.0
# Consecutive rows above the alert threshold before a model alert (like min_duration).
CONFIRM_ROWS = 3
# Training runs and held-out runs (never seen in training).
TRAIN_SEED = 1
TEST_SEED = 1000


def simulate(runs, hours, seed, path):
    subprocess.run(
        [
            "cargo", "run", "--release", "--quiet", "-p", "edge-train", "--example",
            "run_to_failure", "--", "--runs", str(runs), "--hours", str(hours),
            "--seed", str(seed), "--out", str(path),
        ],
        cwd=ROOT,
        check=True,
    )


def load(path):
    with open(path) as f:
        header = f.readline().strip().split(",")
    raw = np.genfromtxt(path, delimiter=",", skip_header=1)
    meta = {name: raw[:, i] for i, name in enumerate(header[:4])}
    return meta, np.ascontiguousarray(raw[:, 4:], dtype=np.float32), header[4:]


def export(model, x, zipmap):
    opts = None
    if zipmap is not None:
        opts = {id(zipmap): {"zipmap": False}}
    return to_onnx(model, x[:1], options=opts, target_opset=OPSET).SerializeToString()


def session(raw):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(raw, so, providers=["CPUExecutionProvider"])


def score_fn(raw, output, column):
    s = session(raw)
    names = [o.name for o in s.get_outputs()]
    idx = names.index(output)

    def f(x):
        v = np.asarray(s.run(None, {s.get_inputs()[0].name: x})[idx])
        return v[:, column] if v.ndim == 2 else v

    return f


def quality(meta, x, scores, direction, threshold):
    """Recall, lead time before the threshold alarm, false alarms per hour."""
    above = scores >= threshold if direction == "above" else scores <= threshold
    runs = np.unique(meta["run"])
    leads, detected, faulty_runs, false_alarms, healthy_hours = [], 0, 0, 0, 0.0
    temp = x[:, 5]
    for r in runs:
        m = meta["run"] == r
        t = meta["t_s"][m]
        a = above[m]
        # Confirmed alert: CONFIRM_ROWS consecutive rows.
        run_len = np.convolve(a.astype(int), np.ones(CONFIRM_ROWS, int), "full")[: len(a)]
        confirmed = run_len >= CONFIRM_ROWS
        if meta["faulty"][m][0] > 0.5:
            faulty_runs += 1
            hot = np.nonzero(temp[m] >= THRESHOLD_ALARM_C)[0]
            if len(hot) == 0:
                continue
            t_alarm = t[hot[0]]
            # Alerts before the wear starts are false alarms.
            onset = np.nonzero(meta["wear"][m] > 0)[0]
            t_onset = t[onset[0]] if len(onset) else t[-1]
            early = np.nonzero(confirmed & (t >= t_onset))[0]
            false_alarms += int(np.sum(np.diff(confirmed[t < t_onset].astype(int)) == 1))
            healthy_hours += (t_onset - t[0]) / 3600.0
            if len(early) and t[early[0]] < t_alarm:
                detected += 1
                leads.append((t_alarm - t[early[0]]) / 3600.0)
        else:
            rises = np.diff(np.concatenate([[0], confirmed.astype(int)])) == 1
            false_alarms += int(rises.sum())
            healthy_hours += (t[-1] - t[0]) / 3600.0
    return {
        "held_out_faulty_runs": faulty_runs,
        "recall_before_threshold_alarm": detected / max(faulty_runs, 1),
        "median_lead_time_h": float(np.median(leads)) if leads else None,
        "false_alarms_per_hour": false_alarms / max(healthy_hours, 1e-9),
        "healthy_hours": healthy_hours,
    }


def toml_str(s):
    return json.dumps(s)


def write_model(name, raw, spec, features, x_train, x_ref, ref_ids, qual, input_lines=None,
                trained_with=None, generator="models/train/train.py"):
    """Writes the model, its reference, quality and manifest. `features` name the
    columns of `x_train` (the training statistics); `input_lines` replace the
    `features = [...]` line for models that read something else (raw windows).
    `ref_ids` are the (seed, run, t_s) each reference row was simulated at, so a test
    can regenerate them from the sim and check the features still agree."""
    d = ZOO / name
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.onnx").write_bytes(raw)
    sha = hashlib.sha256(raw).hexdigest()
    s = session(raw)
    outs = s.run(None, {s.get_inputs()[0].name: x_ref})
    ref = {
        "rows": int(x_ref.shape[0]),
        "width": int(np.prod(x_ref.shape[1:])),
        "inputs": [float(v) for v in x_ref.ravel()],
        "row_ids": [[int(a), int(b), int(c)] for a, b, c in ref_ids],
        "outputs": {
            o.name: {
                "dtype": str(np.asarray(v).dtype),
                "shape": list(np.asarray(v).shape),
                # The dry run reads NaN only when spelled "NaN" (JSON has no NaN).
                "data": [float(z) if not np.isnan(z) else "NaN" for z in np.asarray(v).ravel()],
            }
            for o, v in zip(s.get_outputs(), outs)
        },
    }
    (d / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
    (d / "quality.json").write_text(json.dumps(qual, indent=2) + "\n")
    lines = [
        f"# {spec['description']}",
        f"# Generated by {generator}; edit the thresholds, not the hash.",
        "",
        "[model]",
        f"name = {toml_str(name)}",
        f"version = {toml_str(spec['version'])}",
        f"file = {toml_str(name + '.onnx')}",
        f"sha256 = {toml_str(sha)}",
        f"trained_with = {toml_str(trained_with or f'scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}')}",
        "",
        "[input]",
        f"name = {toml_str(s.get_inputs()[0].name)}",
        'dtype = "float32"',
        *(input_lines or [f"features = [{', '.join(toml_str(f) for f in features)}]"]),
        "",
    ]
    for o in s.get_outputs():
        lines += ["[[outputs]]", f"name = {toml_str(o.name)}"]
        meaning = spec["meanings"].get(o.name, "label" if o.name.endswith("label") else "other")
        lines.append(f"meaning = {toml_str(meaning)}")
        if o.name == spec["output"] and spec.get("column") is not None:
            lines.append(f"column = {spec['column']}")
        lines.append("")
    lines += [
        "[alert]",
        f"output = {toml_str(spec['output'])}",
        f"direction = {toml_str(spec['direction'])}",
    ]
    for sev, v in spec["thresholds"].items():
        lines.append(f"{sev} = {v!r}")
    lines += ["", "[reference]", 'file = "reference.json"', ""]
    for i, f in enumerate(features):
        col = x_train[:, i].astype(np.float64)
        lines += [
            f"[training.{toml_str(f)}]",
            f"mean = {float(col.mean())!r}",
            f"std = {float(col.std())!r}",
            f"min = {float(col.min())!r}",
            f"max = {float(col.max())!r}",
            "",
        ]
    (d / "manifest.toml").write_text("\n".join(lines))
    print(f"{name}: {len(raw)} bytes, quality {qual}")


def labelled_rows(path, features):
    """The rows of a `[labels] dataset` that carry every training feature (model
    alerts' input rows): (x, y) with y = 1 for `true`, 0 for `false`."""
    xs, ys = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            y = {"true": 1, "false": 0}.get(doc.get("verdict"))
            row = doc.get("alert", {}).get("features", {})
            if y is None or any(not isinstance(row.get(k), (int, float)) for k in features):
                continue
            xs.append([row[k] for k in features])
            ys.append(y)
    x = np.asarray(xs, dtype=np.float32).reshape(-1, len(features))
    return x, np.asarray(ys, dtype=np.int64)


def arguments():
    """The run counts, length and data directory (created) every training script takes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=pathlib.Path, help="a [labels] dataset (JSON lines) to train on too")
    ap.add_argument("--label-weight", type=int, default=20)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--test-runs", type=int, default=20)
    ap.add_argument("--hours", type=float, default=12)
    ap.add_argument("--data", type=pathlib.Path, default=ROOT / "target" / "zoo-data")
    args = ap.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    return args


def main():
    args = arguments()
    train_csv, test_csv = args.data / "train.csv", args.data / "test.csv"
    if not train_csv.exists():
        simulate(args.runs, args.hours, TRAIN_SEED, train_csv)
    if not test_csv.exists():
        simulate(args.test_runs, args.hours, TEST_SEED, test_csv)
    mtr, xtr, features = load(train_csv)
    mte, xte, _ = load(test_csv)
    ytr = (mtr["wear"] >= WEAR_LABEL).astype(np.int64)
    if args.labels:
        xl, yl = labelled_rows(args.labels, features)
        print(f"{len(yl)} labelled rows ({int(yl.sum())} true, {int(len(yl) - yl.sum())} false) "
              f"from {args.labels}, each weighted {args.label_weight}x")
        xtr = np.concatenate([xtr] + [xl] * args.label_weight)
        ytr = np.concatenate([ytr] + [yl] * args.label_weight)
    # Reference rows: a spread of held-out rows, healthy and faulty.
    rng = np.random.default_rng(7)
    ref_rows = np.sort(rng.choice(len(xte), 64, replace=False))
    x_ref = xte[ref_rows]
    ref_ids = [(TEST_SEED, mte["run"][i], mte["t_s"][i]) for i in ref_rows]

    def classifier(name, model, desc, version="1.0.0", thresholds=None):
        model.fit(xtr, ytr)
        last = model.steps[-1][1] if hasattr(model, "steps") else model
        raw = export(model, xtr, last)
        spec = {
            "description": desc,
            "version": version,
            "output": "probabilities",
            "column": 1,
            "direction": "above",
            "thresholds": thresholds or {"warning": 0.5, "prefault": 0.8},
            "meanings": {"probabilities": "fault_probability"},
        }
        q = quality(mte, xte, score_fn(raw, "probabilities", 1)(xte), "above", spec["thresholds"]["prefault"])
        write_model(name, raw, spec, features, xtr, x_ref, ref_ids, q)

    classifier(
        "bearing_rf",
        RandomForestClassifier(n_estimators=30, max_depth=8, min_samples_leaf=5, random_state=0),
        "Random forest: probability that a bearing fault is developing.",
    )
    classifier(
        "bearing_gbt",
        GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0),
        "Gradient boosting: probability that a bearing fault is developing.",
    )
    classifier(
        "bearing_mlp",
        make_pipeline(StandardScaler(), MLPClassifier((16, 8), max_iter=600, random_state=0)),
        "StandardScaler + MLP: probability that a bearing fault is developing.",
    )

    # Isolation forest on healthy operation only: an anomaly score (lower = stranger).
    healthy = mtr["wear"] == 0
    iso = IsolationForest(n_estimators=50, random_state=0).fit(xtr[healthy])
    raw = export(iso, xtr, None)
    spec = {
        "description": "Isolation forest trained on healthy operation: anomaly score (negative = anomalous).",
        "version": "1.0.0",
        "output": "scores",
        "column": 0,
        "direction": "below",
        "thresholds": {"warning": -0.02, "prefault": -0.08},
        "meanings": {"scores": "anomaly_score"},
    }
    q = quality(mte, xte, score_fn(raw, "scores", 0)(xte), "below", spec["thresholds"]["prefault"])
    write_model("pump_iforest", raw, spec, features, xtr, x_ref, ref_ids, q)

    # Linear regressor: bearing-wear severity estimate (0 healthy .. 1 worn out).
    lin = LinearRegression().fit(xtr, mtr["wear"].astype(np.float32))
    raw = export(lin, xtr, None)
    spec = {
        "description": "Linear regression: estimated bearing-wear severity (0 healthy, 1 worn out).",
        "version": "1.0.0",
        "output": "variable",
        "column": 0,
        "direction": "above",
        "thresholds": {"warning": 0.15, "prefault": 0.25},
        "meanings": {"variable": "predicted_value"},
    }
    q = quality(mte, xte, score_fn(raw, "variable", 0)(xte), "above", spec["thresholds"]["prefault"])
    write_model("wear_linear", raw, spec, features, xtr, x_ref, ref_ids, q)


if __name__ == "__main__":
    main()
