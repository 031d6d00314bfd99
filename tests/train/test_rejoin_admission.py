"""Who the server lets back into a gloo run, and what every process learns (fast, no processes).

The process test is ``test_rejoin_over_gloo.py``; the transport's check-in and links are in
``tests/transport/test_gloo_rejoin.py``.
"""

import re
import subprocess
import sys

import pytest
import torch

from medsplit.config import load_config
from medsplit.split import wire
from medsplit.train.control_messages import ControlMessageError, schemas, validate
from medsplit.train.launch import _wait_all
from medsplit.train.party_run import ControlCoordinator
from medsplit.train.roster import Departure, Roster
from medsplit.transport.base import Transport

NAMES = ["server", "client0", "client1", "client2"]


class _Admitting(Transport):
    """The server's transport: rejoin requests waiting, sends kept; admit/refuse recorded."""

    def __init__(self, name, requests=(), inbox=None):
        super().__init__(name)
        self.requests, self.sent, self.answers, self.relinked = list(requests), [], [], []
        self.inbox = inbox or {}

    def rejoin_requests(self):
        return [r for r in self.requests if r[0] not in [a[1] for a in self.answers]]

    def admit(self, request, rank, present):
        self.answers.append(("admit", request, rank, present))
        return 1

    def refuse(self, request, reason):
        self.answers.append(("refuse", request, reason))

    def relink(self, peer, incarnation):
        self.relinked.append((peer, incarnation))

    def _send(self, receiver, payload):
        self.sent.append((receiver, wire.decode(payload)[1]))

    def _recv(self, sender, max_bytes):
        return wire.encode({}, meta=self.inbox)


def _party(tmp_path, name, transport, absent=(1,)):
    cfg = load_config(None, ["task=retinopathy", "data.source=synthetic", "split.clients=3", "split.min_hospitals=2"])
    party = ControlCoordinator(cfg, name, NAMES, tmp_path, torch.device("cpu"), transport, own_data=False, resume=False, quiet=True)
    party.roster = Roster(3, 2, keeper=0)
    for k in absent:
        party.roster.leave(k, 0, 1, "gone")
    party.parties = []
    return party


def test_the_server_admits_one_restart_a_boundary_and_refuses_a_present_hospital_or_another_config(tmp_path):
    requests = [(1, {"rank": 3}, []),  # client2 restarted, but client2 never left: a duplicated --rank
                (2, {"rank": 2, "host": "h", "pid": 7}, ["client1 (rank 2) has config hash x, the server y"]),
                (3, {"rank": 2, "host": "h", "pid": 8}, []),
                (4, {"rank": 2, "host": "h", "pid": 9}, [])]
    server = _party(tmp_path, "server", _Admitting("server", requests))
    assert server.admit_rejoins(2) == [1]
    answers = server.transport.answers
    assert answers[0] == ("refuse", 1, "client2 is still in the run (a duplicated --rank?)")
    assert answers[1][:2] == ("refuse", 2) and "config hash" in answers[1][2]
    assert answers[2] == ("admit", 3, 2, [0, 1, 3])  # it links with the server and the hospitals present
    assert len(answers) == 3  # request 4 waits for the next boundary
    told = server.transport.sent
    assert told[:2] == [("client0", {"rejoins": [{"hospital": 1, "incarnation": 1}]}),
                        ("client2", {"rejoins": [{"hospital": 1, "incarnation": 1}]})]
    (to, message), = told[2:]
    assert to == "client1" and message["rejoined"]["epoch"] == 2 and message["rejoined"]["absent"] == [1]
    validate("rejoined", message, "server")  # what it is told fits its schema


def test_a_hospital_present_links_with_the_restarted_one_and_the_restarted_one_is_back_once(tmp_path):
    present = _party(tmp_path, "client0", _Admitting("client0", inbox={"rejoins": [{"hospital": 1, "incarnation": 2}]}))
    assert present.admit_rejoins(3) == [1] and present.transport.relinked == [("client1", 2)]
    restarted = _party(tmp_path, "client1", _Admitting("client1"))
    restarted.rejoining = {"epoch": 3}
    assert restarted.admit_rejoins(3) == [1]
    assert restarted.rejoining is None  # from the next epoch it hears the server like everyone


def test_a_departure_every_process_knows_is_not_recorded_again_after_the_rejoin():
    roster = Roster(3, 2, keeper=0)
    roster.record(Departure(1, 1, 1, "gone"))
    roster.admission = lambda epoch: [1]
    assert roster.rejoin_at(2) == [1] and roster.departures[0].rejoined == 3
    roster.record(Departure(1, 1, 1, "gone"))  # the server tells every process all departures, each time
    assert roster.members() == [0, 1, 2] and len(roster.departures) == 1
    roster.record(Departure(1, 4, 0, "gone again"))  # a new departure of the same hospital counts
    assert roster.members() == [0, 2]


@pytest.mark.parametrize("kind,message,field", [
    ("rejoins", [{"hospital": 3, "incarnation": 1}], "rejoins[0].hospital"),
    ("rejoins", [{"hospital": 1, "incarnation": 0}], "rejoins[0].incarnation"),
    ("rejoined", {"epoch": 2, "absent": [1], "parties": [],
                  "departures": [{"hospital": 1, "epoch": 1, "after": 1, "why": "x", "rejoined": "soon"}]},
     "rejoined.departures[0].rejoined"),
])
def test_a_rejoin_message_that_does_not_fit_is_refused_naming_the_field(kind, message, field):
    with pytest.raises(ControlMessageError, match=re.escape(f"{kind!r} from server is refused: {field}")):
        validate(kind, {kind: message}, "server", schemas(clients=3))


def test_the_launcher_restarts_a_failed_party_once_and_waits_for_it():
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])]
    restarted = []
    codes = _wait_all(procs, grace=5, failed=lambda i: restarted.append(subprocess.Popen([sys.executable, "-c", "pass"])),
                      also=lambda: restarted)
    assert codes == [3] and len(restarted) == 1 and restarted[0].returncode == 0
