#!/usr/bin/env python3
"""Reference values for edge-models' window features, computed with numpy/scipy.

Writes features.json next to this script. The Rust test
`models/tests/reference_features.rs` recomputes every case and compares.

Run:  python3 models/reference/make_fixture.py   (creates .venv-reference with pinned
numpy/scipy on first use; the committed fixture means tests never need Python).
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv-reference")
PINS = ["numpy==2.3.5", "scipy==1.16.3"]


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if sys.executable != py:
        if not os.path.exists(py):
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
            subprocess.check_call([py, "-m", "pip", "install", "-q", *PINS])
        os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def main():
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(20261122)
    bands = [
        {"name": "low", "lo_hz": 0.0, "hi_hz": 20.0},
        {"name": "mid", "lo_hz": 20.0, "hi_hz": 60.0},
        {"name": "high", "lo_hz": 60.0, "hi_hz": 1e9},
    ]
    alpha = 0.2
    cases = []

    def add(name, t, x):
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        mean = float(np.mean(x))
        feats = {
            "mean": mean,
            "std": float(np.std(x)),
            "min": float(np.min(x)),
            "max": float(np.max(x)),
            "p2p": float(np.ptp(x)),
            "rms": float(np.sqrt(np.mean(x * x))),
            "skewness": float(stats.skew(x, bias=True)),
            "kurtosis": float(stats.kurtosis(x, fisher=True, bias=True)),
            "crest": float(np.max(np.abs(x)) / np.sqrt(np.mean(x * x))),
            "slope": float(np.polyfit(t, x, 1)[0]),
            "last": float(x[-1]),
            "count": float(n),
        }
        y = x[0]
        for v in x[1:]:
            y = alpha * v + (1 - alpha) * y
        feats["ewma"] = float(y)
        # Band power of the mean-removed signal, one-sided, Parseval-normalised.
        fs = (n - 1) / (t[-1] - t[0])
        spec = np.fft.rfft(x - mean)
        freqs = np.arange(len(spec)) * fs / n
        w = np.full(len(spec), 2.0)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
        p = w * np.abs(spec) ** 2 / n**2
        feats["bands"] = [float(np.sum(p[(freqs >= b["lo_hz"]) & (freqs < b["hi_hz"])])) for b in bands]
        cases.append({"name": name, "t": t.tolist(), "x": x.tolist(), "features": feats})

    fs = 256.0
    for n in (64, 255, 256, 1000):
        t = np.arange(n) / fs - (n - 1) / fs
        x = (
            1.5 * np.sin(2 * np.pi * 12.0 * t)
            + 0.4 * np.sin(2 * np.pi * 45.0 * t + 0.3)
            + 0.2 * np.sin(2 * np.pi * 90.0 * t)
            + rng.normal(0, 0.3, n)
            + 3.0
        )
        add(f"vibration_n{n}", t, x)
    t = np.arange(120.0) - 119.0
    add("temperature_drift", t, 55 + 0.05 * t + rng.normal(0, 0.2, 120))
    add("skewed_exponential", np.arange(500.0) * 0.01, rng.exponential(2.0, 500))
    add("heavy_tails", np.arange(400.0) * 0.1, rng.standard_t(3, 400))
    jitter = np.sort(rng.uniform(-60, 0, 80))
    add("irregular_timestamps", jitter, 10 + 0.1 * jitter + rng.normal(0, 0.5, 80))
    add("large_offset", np.arange(50.0), 1e6 + rng.normal(0, 1e-3, 50))

    out = {
        "generator": "models/reference/make_fixture.py",
        "numpy": np.__version__,
        "scipy": __import__("scipy").__version__,
        "ewma_alpha": alpha,
        "bands": bands,
        "cases": cases,
    }
    with open(os.path.join(HERE, "features.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    ensure_venv()
    main()
