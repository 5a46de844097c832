#!/usr/bin/env python3
"""Reads a Modbus server with pymodbus's own client (pinned in
tests/peers/requirements.txt), independently of the agent, to check what a write
left in the device:

    modbus_peek.py PORT UNIT AREA ADDRESS COUNT

AREA: coil or holding. Prints the values as one JSON list (bits as 0/1, registers
as integers) and exits.
"""
import json
import sys

from pymodbus.client import ModbusTcpClient


def main():
    port, unit, area, address, count = sys.argv[1:6]
    port, unit, address, count = int(port), int(unit), int(address), int(count)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    if not client.connect():
        raise SystemExit("cannot connect")
    try:
        kw = {"device_id": unit}
        if area == "coil":
            rr = client.read_coils(address, count=count, **kw)
            values = [int(b) for b in rr.bits[:count]]
        else:
            rr = client.read_holding_registers(address, count=count, **kw)
            values = list(rr.registers)
        if rr.isError():
            raise SystemExit(f"error reply: {rr}")
        print(json.dumps(values), flush=True)
    finally:
        client.close()


if __name__ == "__main__":
    main()
