#!/usr/bin/env python3
"""A minimal Modbus TCP responder for the footprint run (standard library only).

Answers every read-holding/read-input-registers request with `count` registers
whose values are their addresses, on 127.0.0.1:<port>. Prints the port it bound
(port 0 picks a free one) and serves until killed.
"""
import socket
import struct
import sys
import threading


def serve_client(conn: socket.socket) -> None:
    with conn:
        buf = b""
        while True:
            while len(buf) < 12:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            req, buf = buf[:12], buf[12:]
            tid, _proto, _length, unit, func, start, count = struct.unpack(">HHHBBHH", req)
            if func not in (3, 4) or not 1 <= count <= 125:
                conn.sendall(struct.pack(">HHHBBB", tid, 0, 3, unit, func | 0x80, 1))
                continue
            regs = struct.pack(f">{count}H", *[(start + i) & 0xFFFF for i in range(count)])
            conn.sendall(struct.pack(">HHHBBB", tid, 0, 3 + len(regs), unit, func, len(regs)) + regs)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_client, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
