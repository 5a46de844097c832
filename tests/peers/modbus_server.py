#!/usr/bin/env python3
"""A pymodbus (pinned in tests/peers/requirements.txt) Modbus TCP server for
edge-agent's tests.

    modbus_server.py PORT SPEC_JSON

SPEC_JSON: {"unit": 1, "tags": [{"area": "holding", "address": 100, "type": "f32",
"order": "CDAB", "value": 12.5}, ...]} with addresses below 1000. Values are
encoded here with Python's struct
module, independently of the agent's decoder. Serves only `unit`; other unit ids get
exception 4 (server device failure), as pymodbus does. Prints READY when listening.
"""
import asyncio
import json
import struct
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext

try:  # pymodbus >= 3.10
    from pymodbus.datastore import ModbusDeviceContext as DeviceContext
except ImportError:  # pragma: no cover
    from pymodbus.datastore import ModbusSlaveContext as DeviceContext
from pymodbus.server import StartAsyncTcpServer

FMT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}
FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def registers(tag):
    ty = tag["type"]
    v = tag["value"]
    if ty in ("f32", "f64"):
        raw = struct.pack(FMT[ty], float(v))
    else:
        raw = struct.pack(FMT[ty], int(v))
    order = tag.get("order", "ABCD")
    b = bytearray(raw)
    if order == "DCBA":
        b.reverse()
    elif order == "BADC":
        for i in range(0, len(b), 2):
            b[i], b[i + 1] = b[i + 1], b[i]
    elif order == "CDAB":
        words = [b[i : i + 2] for i in range(0, len(b), 2)]
        b = bytearray(b"".join(reversed(words)))
    return [int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2)]


async def main():
    port = int(sys.argv[1])
    spec = json.loads(sys.argv[2])
    # Addresses 0..SIZE-1 exist; reads beyond answer exception 2 (illegal address).
    size = 1000
    data = {area: [0] * size for area in FC}
    for tag in spec["tags"]:
        if tag["area"] in ("coil", "discrete"):
            data[tag["area"]][tag["address"]] = int(bool(tag["value"]))
        else:
            regs = registers(tag)
            data[tag["area"]][tag["address"] : tag["address"] + len(regs)] = regs
    device = DeviceContext(
        di=ModbusSequentialDataBlock(1, [bool(v) for v in data["discrete"]]),
        co=ModbusSequentialDataBlock(1, [bool(v) for v in data["coil"]]),
        hr=ModbusSequentialDataBlock(1, data["holding"]),
        ir=ModbusSequentialDataBlock(1, data["input"]),
    )
    context = ModbusServerContext(devices={spec.get("unit", 1): device}, single=False)
    print("READY", flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main())
