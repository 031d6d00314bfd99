"""A FLARE job that only moves bytes: per-message time of the ``flare`` transport, apart from any
training (``benchmarks/transport_flare.py --pingpong``).

The server site sends a payload of each size to the first hospital, which sends it straight back,
``rounds`` times per size over the same :class:`~medsplit.flare.transport.FlareTransport` a
training job uses; the server records the round-trip times.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from nvflare.collab import CollabRecipe, collab
from nvflare.recipe import PocEnv, SimEnv

from medsplit.flare.inbox_site import InboxSite
from medsplit.flare.transport import FlareTransport


class PingServer(InboxSite):
    """Args:
        sizes: payload sizes in bytes.
        rounds: round trips per size.
        out: JSON file the timings are written to.
    """

    def __init__(self, sizes: list, rounds: int, out: str):
        self.sizes, self.rounds, self.out = sizes, rounds, out
        super().__init__()

    @collab.main
    def main(self):
        peer = sorted(c.name for c in collab.clients)[0]
        proxies = {c.name: c for c in collab.clients}
        transport = FlareTransport("server", {"server": "server", "client0": peer}, proxies, self.inbox, timeout=120)
        echo = proxies[peer](expect_result=False)
        echo.echo(len(self.sizes) * (self.rounds + 1))
        rows = []
        for size in self.sizes:
            payload = bytes(size)
            times = []
            for r in range(self.rounds + 1):  # the first round of each size warms up
                t = time.perf_counter()
                transport.send("client0", payload)
                back = transport.recv("client0", 1 << 31)
                if r:
                    times.append(time.perf_counter() - t)
                assert len(back) == size
            rows.append({"bytes": size, "rounds": self.rounds, "median_round_trip_ms": 1000 * statistics.median(times),
                         "min_round_trip_ms": 1000 * min(times), "max_round_trip_ms": 1000 * max(times)})
        Path(self.out).write_text(json.dumps(rows, indent=2))
        return rows


class PingHospital(InboxSite):
    def __init__(self):
        super().__init__()

    @collab.publish
    def echo(self, n: int) -> bool:
        transport = FlareTransport("client0", {"server": "server", "client0": collab.site_name},
                                   {"server": collab.server}, self.inbox, timeout=120)
        for _ in range(n):
            transport.send("server", transport.recv("server", 1 << 31))
        return True


def run_pingpong(mode: str, sizes: list[int], rounds: int, out_dir: Path) -> list[dict]:
    """Run the ping-pong job in ``simulator`` or ``poc`` mode; returns the timing rows."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"pingpong-{mode}.json"
    out.unlink(missing_ok=True)
    recipe = CollabRecipe(job_name=f"pingpong-{mode}", server=PingServer(sizes, rounds, str(out)), client=PingHospital(),
                          min_clients=1)
    if mode == "simulator":
        recipe.run(SimEnv(clients=["hospital-a"], workspace_root=str(out_dir / "ws")))
    else:
        os.environ["NVFLARE_POC_WORKSPACE"] = str(out_dir / "poc-workspace")
        env = PocEnv(clients=["hospital-a"], num_clients=1)
        try:
            recipe.run(env).get_result(timeout=600)
        finally:
            env.stop(clean_up=True)
    if not out.exists():
        raise RuntimeError(f"ping-pong job in {mode} mode wrote no timings")
    return json.loads(out.read_text())
