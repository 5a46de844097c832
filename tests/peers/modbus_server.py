#!/usr/bin/env python3
"""A pymodbus (pinned in tests/peers/requirements.txt) Modbus server for
edge-agent's tests: TCP, RTU over TCP, or RTU on a serial line (a socat pty).

    modbus_server.py PORT SPEC_JSON

SPEC_JSON: {"unit": 1, "tags": [{"area": "holding", "address": 100, "type": "f32",
"order": "CDAB", "value": 12.5}, {"area": "holding", "address": 200, "type": "string",
"length": 5, "order": "BADC", "value": "Batch 7"}, ...]} with addresses below 1000.
Optional: "transport" ("tcp", "rtu_over_tcp", "rtu"), "device" (the pty for "rtu"; PORT
is then ignored), "units" (several unit ids serving the same data), "silent_missing"
(true: unit ids not served get no answer, like a dead slave on a bus; otherwise
exception 4, as pymodbus does). Values are encoded here with Python's struct module,
independently of the agent's decoder. Prints READY when listening.
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
from pymodbus import FramerType
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

FMT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}
FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def registers(tag):
    ty = tag["type"]
    v = tag["value"]
    if ty == "string":
        raw = v.encode("latin-1").ljust(2 * tag["length"], b"\0")[: 2 * tag["length"]]
        if tag.get("order", "ABCD") == "BADC":
            raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
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


def silence_missing_devices():
    """pymodbus 3.16's SimCore raises KeyError for an unknown device id, which turns
    into exception 4 even with ignore_missing_devices; raise what the request handler
    expects instead, so a missing slave is silent, like a dead one on a real bus."""
    from pymodbus.exceptions import NoSuchIdException
    from pymodbus.simulator import simcore

    original = simcore.SimCore._SimCore__get_device

    def get_device(self, device_id):
        if device_id not in self.devices and 0 not in self.devices:
            raise NoSuchIdException(f"device_id {device_id} does not exist")
        return original(self, device_id)

    simcore.SimCore._SimCore__get_device = get_device


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
    def device():
        return DeviceContext(
            di=ModbusSequentialDataBlock(1, [bool(v) for v in data["discrete"]]),
            co=ModbusSequentialDataBlock(1, [bool(v) for v in data["coil"]]),
            hr=ModbusSequentialDataBlock(1, list(data["holding"])),
            ir=ModbusSequentialDataBlock(1, list(data["input"])),
        )

    units = spec.get("units", [spec.get("unit", 1)])
    context = ModbusServerContext(devices={u: device() for u in units}, single=False)
    transport = spec.get("transport", "tcp")
    quiet = bool(spec.get("silent_missing", False))
    if quiet:
        silence_missing_devices()
    print("READY", flush=True)
    if transport == "rtu":
        await StartAsyncSerialServer(
            context=context, framer=FramerType.RTU, port=spec["device"], baudrate=19200,
            ignore_missing_devices=quiet)
    else:
        framer = FramerType.RTU if transport == "rtu_over_tcp" else FramerType.SOCKET
        await StartAsyncTcpServer(
            context=context, framer=framer, address=("127.0.0.1", port),
            ignore_missing_devices=quiet)


if __name__ == "__main__":
    asyncio.run(main())
