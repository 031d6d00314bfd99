"""A hostile hospital for tests/flare/test_flare_hostile.py: hospital-b, an authenticated participant of
the job, first tries to pass messages off as the server's and to stop or start hospital-a (the
red-team trials of issue 30, finding 9), records what happened to each try in the job's output
folder, then trains honestly. Shipped into the simulator's sites with the job (FLARE's custom folder)."""

import json
from pathlib import Path

from nvflare.collab import collab

from medsplit.flare.sites import MedsplitHospital

HOSTILE_SITE = "hospital-b"
VICTIM_SITE = "hospital-a"


class HostileHospital(MedsplitHospital):
    @collab.publish
    def train(self) -> dict:
        if collab.site_name == HOSTILE_SITE:
            victim = next(c for c in collab.other_clients if c.name == VICTIM_SITE)
            tries = {
                "forged_deliver": lambda: victim(expect_result=True, timeout=30).deliver("server", 0, b"\x00forged"),
                "stop": lambda: victim(expect_result=True, timeout=30).stop("server", "forged reason from hospital-b"),
                "train": lambda: victim(expect_result=True, timeout=30).train(),
            }
            outcome = {}
            for name, attempt in tries.items():
                try:
                    outcome[name] = f"accepted: {attempt()!r}"
                except Exception as e:  # what hospital-a answered, as FLARE relays it
                    outcome[name] = f"refused: {type(e).__name__}: {e}"
            (Path(self.job["out_dir"]) / "hostile_tries.json").write_text(json.dumps(outcome, indent=2))
        return super().train()
