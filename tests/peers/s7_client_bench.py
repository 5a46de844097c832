#!/usr/bin/env python3
"""python-snap7's client (the C Snap7 library) reading 1,000 REAL values for the
S7 benchmark (tests/benches/s7_read.rs), against the same server in the same run.

    s7_client_bench.py PORT SCENARIO SECONDS

contiguous: DB1 bytes 0..4000 with db_read (Snap7 splits it into PDU-sized reads).
scattered:  DB2.DBD0, DBD8, ... DBD7992 with read_multi_vars, 20 items per call
            (Snap7's limit), 50 calls per cycle.
Prints one JSON line: cycles, seconds, and seconds spent decoding.
"""
import ctypes
import json
import struct
import sys
import time

import snap7
from snap7.type import Area, S7DataItem, WordLen


def main():
    port, scenario, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    c = snap7.client.Client()
    c.connect("127.0.0.1", 0, 1, port)
    if scenario == "scattered":
        batches = []
        for b in range(50):
            items = (S7DataItem * 20)()
            bufs = []
            for i in range(20):
                n = b * 20 + i
                buf = (ctypes.c_uint8 * 4)()
                bufs.append(buf)
                items[i].Area = Area.DB.value
                items[i].WordLen = WordLen.Byte.value
                items[i].Result = 0
                items[i].DBNumber = 2
                items[i].Start = n * 8
                items[i].Amount = 4
                items[i].pData = ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8))
            batches.append((items, bufs))

        def cycle():
            out = []
            for items, bufs in batches:
                c.read_multi_vars(items)
                for buf in bufs:
                    out.append(struct.unpack(">f", bytes(buf))[0])
            return out
    else:
        def cycle():
            data = c.db_read(1, 0, 4000)
            return struct.unpack_from(">1000f", data)

    values = cycle()
    assert len(values) == 1000 and values[999] == 999 * 0.5, values[999]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cycle()
        n += 1
    elapsed = time.perf_counter() - t0
    c.disconnect()
    print(json.dumps({"cycles": n, "seconds": elapsed}))


if __name__ == "__main__":
    main()
