#!/usr/bin/env python3
"""An aiocoap (pinned in tests/peers/requirements.txt) CoAP server for edge-agent's
tests, on 127.0.0.1 with the `simplesocketserver` transport (the default udp6 one has
an Observe bug, see ../../shared/PEERS.md).

    coap_server.py PORT

Resources: /temp (text "21.5"), /json ({"t": 19.25, "h": 41}), /cbor ({"t": 18.5}),
/senml (SenML JSON), /senml-cbor (SenML CBOR), /big (a 3 kB JSON: Block2),
/counter (observable text counter, +1 every 200 ms; GET also works), /multi (19.5
as JSON, CBOR or text by the Accept option; 4.06 for any other), and nothing else
(4.04); /setpoint, a writable number (GET; PUT/POST text, 2.04). /temp and the others
refuse writes (4.05). Prints READY when listening.
"""
import asyncio
import json
import sys

import aiocoap
import aiocoap.resource as resource
import cbor2


class Static(resource.Resource):
    def __init__(self, body, cf):
        super().__init__()
        self.body, self.cf = body, cf

    async def render_get(self, request):
        return aiocoap.Message(payload=self.body, content_format=self.cf)


class Negotiated(resource.Resource):
    """One value in the representation the Accept option asks for: JSON (50),
    CBOR (60), text without Accept (aiocoap's usual default), 4.06 otherwise."""

    async def render_get(self, request):
        accept = request.opt.accept
        if accept is None:
            return aiocoap.Message(payload=b"19.5", content_format=0)
        if accept == 50:
            return aiocoap.Message(payload=json.dumps({"t": 19.5}).encode(), content_format=50)
        if accept == 60:
            return aiocoap.Message(payload=cbor2.dumps({"t": 19.5}), content_format=60)
        return aiocoap.Message(code=aiocoap.NOT_ACCEPTABLE)


class Counter(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.n = 0
        asyncio.get_event_loop().call_later(0.2, self.tick)

    def tick(self):
        self.n += 1
        self.updated_state()
        asyncio.get_event_loop().call_later(0.2, self.tick)

    async def render_get(self, request):
        return aiocoap.Message(payload=str(self.n).encode(), content_format=0)


class Setpoint(resource.Resource):
    """A writable number: GET answers it as text, PUT and POST set it from a
    text/plain number (2.04 Changed), anything else is 4.00 Bad Request."""

    def __init__(self):
        super().__init__()
        self.value = b"0"

    async def render_get(self, request):
        return aiocoap.Message(payload=self.value, content_format=0)

    async def render_put(self, request):
        try:
            float(request.payload.decode())
        except ValueError:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST)
        self.value = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED)

    render_post = render_put


async def main():
    port = int(sys.argv[1])
    root = resource.Site()
    root.add_resource(["temp"], Static(b"21.5", 0))
    root.add_resource(["json"], Static(json.dumps({"t": 19.25, "h": 41}).encode(), 50))
    root.add_resource(["cbor"], Static(cbor2.dumps({"t": 18.5}), 60))
    senml = [{"bn": "dev:", "n": "hum", "v": 40.5}, {"n": "temp", "v": 18.0, "u": "Cel"}]
    root.add_resource(["senml"], Static(json.dumps(senml).encode(), 110))
    senml_cbor = [{-2: "dev:", 0: "press", 2: 1.25}, {0: "door", 4: True}]
    root.add_resource(["senml-cbor"], Static(cbor2.dumps(senml_cbor), 112))
    big = {"pad": "x" * 3000, "v": 7.5}
    root.add_resource(["big"], Static(json.dumps(big).encode(), 50))
    root.add_resource(["counter"], Counter())
    root.add_resource(["multi"], Negotiated())
    root.add_resource(["setpoint"], Setpoint())
    await aiocoap.Context.create_server_context(
        root, bind=("127.0.0.1", port), transports=["simplesocketserver"])
    print("READY", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
