"""An OPC UA server for the OPC UA driver's tests: FreeOpcUa's asyncua.

    opcua_server.py PORT [--secure DIR] [--items N --period MS]

Serves, in namespace `urn:edge-agent:test` (index 2), the folder Line1 with a
variable of every scalar built-in type (string NodeIds `Line1.<Name>`), a
numeric NodeId (`ns=2;i=1001`), a Double array, a counter that changes every
100 ms, a value with a fixed source timestamp, a Bad and an Uncertain value, two
writable variables (Setpoint, a Double; Mode, an Int16), and a method. `--secure DIR` offers only Basic256Sha256 (Sign, SignAndEncrypt),
Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss (SignAndEncrypt), with
user `edge` / password `s3cret` (no anonymous), its certificate written to
DIR/server.der. `--items N` adds Bench.0 … Bench.N-1, all changed every `--period`
ms. Prints READY once listening; reads commands on stdin:

    set NAME JSON         write a value (keeps its type)        -> OK
    get NAME              the value, as JSON                     -> 50.0
    status NAME CODE      the value's status code (e.g. BadSensorFailure) -> OK
"""

import asyncio
import datetime
import json
import os
import pathlib
import stat
import sys

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

URI = "urn:edge-agent:test"
FIXED = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


class Users(UserManager):
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "edge" and password == "s3cret":
            return User(role=UserRole.User)
        return None


SCALARS = [
    ("Bool", True, ua.VariantType.Boolean),
    ("SByte", -5, ua.VariantType.SByte),
    ("Byte", 200, ua.VariantType.Byte),
    ("Int16", -1234, ua.VariantType.Int16),
    ("UInt16", 54321, ua.VariantType.UInt16),
    ("Int32", -123456, ua.VariantType.Int32),
    ("UInt32", 4000000000, ua.VariantType.UInt32),
    ("Int64", -9000000000, ua.VariantType.Int64),
    ("UInt64", 9000000000000000000, ua.VariantType.UInt64),
    ("Float", 1.5, ua.VariantType.Float),
    ("Double", 21.25, ua.VariantType.Double),
    ("String", "running", ua.VariantType.String),
    ("DateTime", FIXED, ua.VariantType.DateTime),
]


async def main():
    port = int(sys.argv[1])
    args = sys.argv[2:]
    secure = args[args.index("--secure") + 1] if "--secure" in args else None
    items = int(args[args.index("--items") + 1]) if "--items" in args else 0
    period = int(args[args.index("--period") + 1]) / 1000 if "--period" in args else 0.1

    server = Server(user_manager=Users()) if secure else Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/edge-test")
    server.set_server_name("edge-agent test server")
    await server.set_application_uri("urn:edge-agent:test-server")
    if secure:
        os.makedirs(secure, exist_ok=True)
        cert, key = pathlib.Path(secure, "server.der"), pathlib.Path(secure, "server.pem")
        await setup_self_signed_certificate(
            key, cert, "urn:edge-agent:test-server", "127.0.0.1",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"countryName": "DE", "organizationName": "edge-agent", "commonName": "edge-test-server"},
        )
        await server.load_certificate(cert)
        await server.load_private_key(key)
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
            ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
        ])
        server.set_security_IDs(["Username"])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(URI)
    objects = server.nodes.objects
    line = await objects.add_folder(ua.NodeId("Line1", idx), ua.QualifiedName("Line1", idx))
    nodes = {}
    for name, value, vt in SCALARS:
        nodes[name] = await line.add_variable(
            ua.NodeId(f"Line1.{name}", idx), ua.QualifiedName(name, idx), ua.Variant(value, vt))
    nodes["Numeric"] = await line.add_variable(
        ua.NodeId(1001, idx), ua.QualifiedName("Numeric", idx), ua.Variant(42.0, ua.VariantType.Double))
    nodes["Array"] = await line.add_variable(
        ua.NodeId("Line1.Array", idx), ua.QualifiedName("Array", idx),
        ua.Variant([1.0, 2.0, 3.0, 4.0], ua.VariantType.Double))
    await nodes["Array"].write_value_rank(1)
    await nodes["Array"].write_array_dimensions([4])
    nodes["Counter"] = await line.add_variable(
        ua.NodeId("Line1.Counter", idx), ua.QualifiedName("Counter", idx), ua.Variant(0, ua.VariantType.Int32))
    nodes["Stamped"] = await line.add_variable(
        ua.NodeId("Line1.Stamped", idx), ua.QualifiedName("Stamped", idx), 7.0)
    nodes["Broken"] = await line.add_variable(
        ua.NodeId("Line1.Broken", idx), ua.QualifiedName("Broken", idx), 0.0)
    nodes["Uncertain"] = await line.add_variable(
        ua.NodeId("Line1.Uncertain", idx), ua.QualifiedName("Uncertain", idx), 0.0)
    nodes["Setpoint"] = await line.add_variable(
        ua.NodeId("Line1.Setpoint", idx), ua.QualifiedName("Setpoint", idx), 50.0)
    await nodes["Setpoint"].set_writable()
    nodes["Mode"] = await line.add_variable(
        ua.NodeId("Line1.Mode", idx), ua.QualifiedName("Mode", idx), ua.Variant(1, ua.VariantType.Int16))
    await nodes["Mode"].set_writable()

    async def reset(parent):
        await nodes["Counter"].write_value(ua.Variant(0, ua.VariantType.Int32))
        return []

    await line.add_method(ua.NodeId("Line1.Reset", idx), ua.QualifiedName("Reset", idx), reset, [], [])

    bench = []
    if items:
        folder = await objects.add_folder(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
        for i in range(items):
            bench.append(await folder.add_variable(
                ua.NodeId(f"Bench.{i}", idx), ua.QualifiedName(f"B{i}", idx), 0.0))

    async with server:
        await nodes["Stamped"].write_value(ua.DataValue(
            ua.Variant(7.0, ua.VariantType.Double), SourceTimestamp=FIXED, ServerTimestamp=FIXED))
        await nodes["Broken"].write_value(ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
        await nodes["Uncertain"].write_value(ua.DataValue(
            ua.Variant(3.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)))
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        if not (stat.S_ISFIFO(os.fstat(0).st_mode) or os.isatty(0)):
            await asyncio.Event().wait()  # stdin is not a pipe: serve until killed
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def tick():
            n = 0
            while True:
                await asyncio.sleep(0.1)
                n += 1
                await nodes["Counter"].write_value(ua.Variant(n, ua.VariantType.Int32))

        async def churn():
            v = 0.0
            while True:
                await asyncio.sleep(period)
                v += 1.0
                for b in bench:
                    await b.write_value(ua.Variant(v, ua.VariantType.Double))

        tasks = [asyncio.create_task(tick())]
        if bench:
            tasks.append(asyncio.create_task(churn()))
        while True:
            line_b = await reader.readline()
            if not line_b:
                break
            parts = line_b.decode().strip().split(" ", 2)
            if parts[0] == "set":
                node = nodes[parts[1]]
                vt = await node.read_data_type_as_variant_type()
                await node.write_value(ua.Variant(json.loads(parts[2]), vt))
                print("OK", flush=True)
            elif parts[0] == "get":
                value = await nodes[parts[1]].read_value()
                print(json.dumps(value), flush=True)
            elif parts[0] == "status":
                node = nodes[parts[1]]
                dv = await node.read_data_value()
                await node.write_value(ua.DataValue(
                    dv.Value, StatusCode=ua.StatusCode(getattr(ua.StatusCodes, parts[2]))))
                print("OK", flush=True)
        for t in tasks:
            t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
