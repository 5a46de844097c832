"""The Sparkplug host side of tests/tests/sparkplug.rs, on pysparkplug (an
independent implementation): decodes what the agent published and encodes the
host's commands.

  sparkplug_host.py decode        stdin: lines `TOPIC BASE64`; stdout: one JSON per line
  sparkplug_host.py rebirth       stdout: base64 of an NCMD with Node Control/Rebirth = true
  sparkplug_host.py state on|off  stdout: base64 of a primary host STATE payload
  sparkplug_host.py dcmd NAME=VALUE:TYPE...  stdout: base64 of a DCMD writing those
                                  metrics by name (TYPE: DOUBLE, INT16, BOOLEAN)

A DDATA is decoded with its device's last DBIRTH and an NDATA with the last
NBIRTH, so their aliases resolve to the names the birth gave them (a metric whose
alias the birth did not define fails).
"""

import base64
import json
import sys

import pysparkplug as spb

TYPES = {
    "NBIRTH": spb.NBirth,
    "DBIRTH": spb.DBirth,
    "NDATA": spb.NData,
    "DDATA": spb.DData,
    "NCMD": spb.NCmd,
    "DCMD": spb.DCmd,
}


def metric(m):
    return {
        "name": m.name,
        "alias": m.alias,
        "datatype": m.datatype.name,
        "value": m.value,
        "is_null": m.is_null,
        "is_historical": m.is_historical,
        "timestamp": m.timestamp,
    }


def decode(line, births):
    topic, b64 = line.split(" ", 1)
    raw = base64.b64decode(b64)
    parts = topic.split("/")
    kind = parts[2]
    device = parts[4] if len(parts) > 4 else None
    out = {"topic": topic, "type": kind, "device": device}
    if kind == "NDEATH":
        p = spb.NDeath.decode(raw)
        out["metrics"] = [metric(p.bd_seq_metric)]
        return out
    if kind == "DDEATH":
        p = spb.DDeath.decode(raw)
        out["seq"] = p.seq
        return out
    cls = TYPES[kind]
    birth = births.get(device) if kind in ("DDATA", "NDATA") else None
    p = cls.decode(raw, birth=birth)
    if kind in ("NBIRTH", "DBIRTH"):
        births[device] = p
    out["seq"] = getattr(p, "seq", None)
    out["timestamp"] = p.timestamp
    out["metrics"] = [metric(m) for m in p.metrics]
    return out


def main():
    if sys.argv[1] == "rebirth":
        cmd = spb.NCmd(
            timestamp=spb.get_current_timestamp(),
            metrics=(
                spb.Metric(
                    timestamp=spb.get_current_timestamp(),
                    name="Node Control/Rebirth",
                    datatype=spb.DataType.BOOLEAN,
                    value=True,
                ),
            ),
        )
        print(base64.b64encode(cmd.encode(include_dtypes=True)).decode())
        return
    if sys.argv[1] == "state":
        state = spb.State(timestamp=spb.get_current_timestamp(), online=sys.argv[2] == "on")
        print(base64.b64encode(state.encode()).decode())
        return
    if sys.argv[1] == "dcmd":
        metrics = []
        for arg in sys.argv[2:]:
            name, rest = arg.split("=", 1)
            value, ty = rest.rsplit(":", 1)
            dtype = spb.DataType[ty]
            v = value == "true" if ty == "BOOLEAN" else (float(value) if ty == "DOUBLE" else int(value))
            metrics.append(
                spb.Metric(timestamp=spb.get_current_timestamp(), name=name, datatype=dtype, value=v)
            )
        cmd = spb.DCmd(timestamp=spb.get_current_timestamp(), metrics=tuple(metrics))
        print(base64.b64encode(cmd.encode(include_dtypes=True)).decode())
        return
    births = {}
    for line in sys.stdin:
        line = line.strip()
        if line:
            print(json.dumps(decode(line, births), default=str), flush=True)


if __name__ == "__main__":
    main()
