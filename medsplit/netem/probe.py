"""What an emulated link delivers, measured with plain TCP between two namespaces: the round
trip of a small message (ping-pong) and the goodput of a bulk transfer.

    python -m medsplit.netem.probe serve --port 5201          # in the server's namespace
    python -m medsplit.netem.probe measure --to 10.77.0.2:5201 --bytes 20000000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

CHUNK = 1 << 16


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(min(CHUNK, n - len(data)))
        if not part:
            raise ConnectionError("peer closed")
        data += part
    return bytes(data)


def serve(port: int) -> None:
    """Answer one client: echo 8-byte pings, then swallow a bulk upload and answer its length,
    then send a bulk download of the length asked for."""
    with socket.create_server(("0.0.0.0", port)) as listener:
        print("ready", flush=True)
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                head = conn.recv(9, socket.MSG_WAITALL)
                if len(head) < 9:
                    return
                kind, n = head[:1], int.from_bytes(head[1:], "big")
                if kind == b"p":
                    conn.sendall(b"p" + head[1:])
                elif kind == b"u":
                    left = n
                    while left:
                        left -= len(conn.recv(min(CHUNK, left)))
                    conn.sendall(b"u" + n.to_bytes(8, "big"))
                elif kind == b"d":
                    block, left = b"\0" * CHUNK, n
                    while left:
                        left -= conn.send(block[:min(CHUNK, left)])


def measure(address: str, nbytes: int, pings: int) -> dict:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=120) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for i in range(pings):
            t = time.perf_counter()
            conn.sendall(b"p" + i.to_bytes(8, "big"))
            _recv_exact(conn, 9)
            rtts.append(time.perf_counter() - t)
        t = time.perf_counter()
        conn.sendall(b"u" + nbytes.to_bytes(8, "big"))
        block, left = b"\0" * CHUNK, nbytes
        while left:
            left -= conn.send(block[:min(CHUNK, left)])
        _recv_exact(conn, 9)
        up = time.perf_counter() - t
        t = time.perf_counter()
        conn.sendall(b"d" + nbytes.to_bytes(8, "big"))
        left = nbytes
        while left:
            left -= len(conn.recv(min(CHUNK, left)))
        down = time.perf_counter() - t
    return {"rtt_ms_median": 1e3 * statistics.median(rtts), "rtt_ms_min": 1e3 * min(rtts), "bytes": nbytes,
            "upload_s": up, "download_s": down, "upload_mbps": nbytes * 8 / up / 1e6, "download_mbps": nbytes * 8 / down / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    m = sub.add_parser("measure")
    m.add_argument("--to", required=True)
    m.add_argument("--bytes", type=int, default=10_000_000)
    m.add_argument("--pings", type=int, default=20)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port)
    else:
        print(json.dumps(measure(args.to, args.bytes, args.pings)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def probe_between(topology, server_rank: int, client_rank: int, nbytes: int, pings: int = 20, port: int = 5201) -> dict:
    """Run :func:`serve` in party ``server_rank``'s namespace and :func:`measure` from
    ``client_rank``'s; returns the measurement."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p))
    server = subprocess.Popen([*topology.exec_prefix(server_rank), sys.executable, "-m", "medsplit.netem.probe", "serve",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"probe server did not start: {server.stderr.read()[-2000:]}")
        done = subprocess.run([*topology.exec_prefix(client_rank), sys.executable, "-m", "medsplit.netem.probe", "measure",
                               "--to", f"{topology.address(server_rank)}:{port}", "--bytes", str(nbytes), "--pings", str(pings)],
                              capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"probe from party {client_rank} failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait()


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
