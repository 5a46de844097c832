"""Hand-built recurrent models as common exporters write them, for parity tests.

PyTorch and Keras exports of an LSTM/GRU often leave out `initial_h`/`initial_c`
(zeros by definition) and put the sequence first with a Transpose in front. tract
must then infer the state's batch axis from the input, which it could not do with
a symbolic batch (it panicked: `UndeterminedSymbol("batch")`). Each model takes a
window in the agent's layout `[batch, 3 signals, 8 samples]` (see the manifest's
`[input] window`) and ends in a sigmoid score `[batch, 1]`.

Writes `<name>.onnx` and onnxruntime's outputs `<name>.json` next to the
scikit-learn fixtures (see parity.py), and under `fixtures/broken/` a model that
still makes tract panic (its batch depends on the data):

    models/train/setup.sh && models/train/.venv/bin/python models/train/recurrent.py
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from parity import OUT, write_fixture

BROKEN = OUT.parent / "broken"

STEPS, SIGNALS, HIDDEN = 8, 3, 5


def weights(rng, gates, with_bias):
    """ONNX layout: W [1, gates*H, in], R [1, gates*H, H], B [1, 2*gates*H]."""
    w = rng.normal(scale=0.5, size=(1, gates * HIDDEN, SIGNALS)).astype(np.float32)
    r = rng.normal(scale=0.5, size=(1, gates * HIDDEN, HIDDEN)).astype(np.float32)
    b = rng.normal(scale=0.1, size=(1, 2 * gates * HIDDEN)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")]
    if with_bias:
        inits.append(numpy_helper.from_array(b, "B"))
    return inits


def recurrent(op, with_bias):
    """window -> Transpose -> op (no initial state) -> Y_h -> Squeeze -> Gemm -> Sigmoid."""
    rng = np.random.default_rng(7 if op == "LSTM" else 8)
    gates = 4 if op == "LSTM" else 3
    inits = weights(rng, gates, with_bias)
    head_w = rng.normal(size=(HIDDEN, 1)).astype(np.float32)
    inits += [
        numpy_helper.from_array(head_w, "head_w"),
        numpy_helper.from_array(np.array([0.2], np.float32), "head_b"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    rnn_inputs = ["x_seq", "W", "R"] + (["B"] if with_bias else [])
    outputs = ["", "y_h"] if op == "GRU" else ["", "y_h", ""]
    nodes = [
        helper.make_node("Transpose", ["window"], ["x_seq"], perm=[2, 0, 1]),
        helper.make_node(op, rnn_inputs, outputs, hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["y_h", "axis0"], ["last"]),
        helper.make_node("Gemm", ["last", "head_w", "head_b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"{op.lower()}_window",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", SIGNALS, STEPS])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def data_dependent_batch():
    """An LSTM whose batch is decided by the data (NonZero picks the rows): tract
    cannot size its initial state and panics while loading. Kept as a model that
    must be rejected cleanly, never crash the agent."""
    rng = np.random.default_rng(9)
    inits = weights(rng, 4, with_bias=False) + [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Transpose", ["window"], ["x_seq"], perm=[2, 0, 1]),
        helper.make_node("ReduceMax", ["window"], ["peak"], axes=[1, 2], keepdims=0),
        helper.make_node("Greater", ["peak", "zero"], ["hot"]),
        helper.make_node("NonZero", ["hot"], ["picked2d"]),
        helper.make_node("Squeeze", ["picked2d", "axis0"], ["picked"]),
        helper.make_node("Gather", ["x_seq", "picked"], ["x_hot"], axis=1),
        helper.make_node("LSTM", ["x_hot", "W", "R"], ["", "y_h", ""], hidden_size=HIDDEN),
        helper.make_node("ReduceMean", ["y_h"], ["score"], axes=[0, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm_data_dependent_batch",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", SIGNALS, STEPS])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["picked"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def probe_windows():
    rng = np.random.default_rng(42)
    rows = list(rng.normal(size=(30, SIGNALS, STEPS)).astype(np.float32))
    rows.append(np.zeros((SIGNALS, STEPS), np.float32))
    rows.append(np.full((SIGNALS, STEPS), 50.0, np.float32))
    return np.stack(rows).astype(np.float32)


def main():
    for op, name in [("LSTM", "lstm_without_initial_state"), ("GRU", "gru_without_initial_state")]:
        model = recurrent(op, with_bias=op == "GRU")
        write_fixture(name, model.SerializeToString(), probe_windows(), len(model.graph.node))
    BROKEN.mkdir(parents=True, exist_ok=True)
    (BROKEN / "lstm_data_dependent_batch.onnx").write_bytes(data_dependent_batch().SerializeToString())


if __name__ == "__main__":
    main()
