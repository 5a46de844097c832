#!/usr/bin/env python3
"""An S7 PLC for edge-agent's tests: python-snap7's server (the C Snap7 library,
pinned in tests/peers/requirements.txt), independent of the agent's codec.

    s7_server.py PORT SPEC_JSON

SPEC_JSON: {"areas": [{"area": "DB", "index": 1, "size": 64,
                       "values": [{"offset": 4, "type": "REAL", "value": 21.5},
                                  {"offset": 0, "bit": 3, "type": "BOOL", "value": true}, ...]},
                      {"area": "MK", "size": 32, "values": [...]}, ...]}
Areas: DB (with index), MK (flags, M), PE (inputs, I/E), PA (outputs, Q/A). Values are
encoded here with Python's struct module (big-endian, as S7 stores them); STRING takes
"max" (declared length); DATE_AND_TIME takes "YYYY-MM-DD HH:MM:SS.mmm".

Binds 127.0.0.1 only (start_to, never start). Prints READY when listening, then serves
until killed. Reading lines from stdin: `set AREA INDEX OFFSET HEX` overwrites bytes
(under the area lock), and the reply is `OK`; `get AREA INDEX OFFSET N` answers the N
bytes there as hex (what a client's write left in the PLC's memory).
"""
import ctypes
import datetime
import json
import struct
import sys

import snap7
from snap7.type import SrvArea

FMT = {
    "BYTE": ">B", "CHAR": ">B", "USINT": ">B", "SINT": ">b",
    "WORD": ">H", "UINT": ">H", "INT": ">h",
    "DWORD": ">I", "UDINT": ">I", "DINT": ">i", "TIME": ">i",
    "REAL": ">f", "LREAL": ">d",
}


def bcd(n):
    return ((n // 10) << 4) | (n % 10)


def encode(v):
    ty = v["type"].upper()
    if ty in FMT:
        x = v["value"]
        return struct.pack(FMT[ty], float(x) if ty in ("REAL", "LREAL") else int(x))
    if ty == "STRING":
        s = v["value"].encode("latin-1")
        mx = v.get("max", 254)
        return bytes([mx, len(s)]) + s + bytes(mx - len(s))
    if ty in ("DATE_AND_TIME", "DT"):
        d = datetime.datetime.strptime(v["value"], "%Y-%m-%d %H:%M:%S.%f")
        ms = d.microsecond // 1000
        weekday = d.isoweekday() % 7 + 1  # S7: 1 = Sunday
        return bytes([bcd(d.year % 100), bcd(d.month), bcd(d.day), bcd(d.hour), bcd(d.minute),
                      bcd(d.second), bcd(ms // 10), ((ms % 10) << 4) | weekday])
    raise SystemExit(f"unknown type {ty}")


def main():
    port = int(sys.argv[1])
    spec = json.loads(sys.argv[2])
    server = snap7.server.Server(log=False)
    keep = {}
    for a in spec["areas"]:
        area = SrvArea[a["area"]]
        index = a.get("index", 0)
        buf = bytearray(a["size"])
        for v in a.get("values", []):
            off = v["offset"]
            if v["type"].upper() == "BOOL":
                mask = 1 << v.get("bit", 0)
                buf[off] = (buf[off] | mask) if v["value"] else (buf[off] & ~mask)
            else:
                raw = encode(v)
                buf[off:off + len(raw)] = raw
        arr = (ctypes.c_ubyte * len(buf)).from_buffer(buf)
        server.register_area(area, index, arr)
        keep[(a["area"], index)] = (area, buf, arr)
    server.start_to("127.0.0.1", port)
    print("READY", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 5 and parts[0] == "set":
            area, buf, _ = keep[(parts[1], int(parts[2]))]
            off, raw = int(parts[3]), bytes.fromhex(parts[4])
            server.lock_area(area, int(parts[2]))
            buf[off:off + len(raw)] = raw
            server.unlock_area(area, int(parts[2]))
            print("OK", flush=True)
        elif len(parts) == 5 and parts[0] == "get":
            area, buf, _ = keep[(parts[1], int(parts[2]))]
            off, n = int(parts[3]), int(parts[4])
            server.lock_area(area, int(parts[2]))
            raw = bytes(buf[off:off + n])
            server.unlock_area(area, int(parts[2]))
            print(raw.hex(), flush=True)
    # stdin closed: the test is gone; keep serving until killed.
    import time
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
