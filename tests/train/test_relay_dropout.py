"""Who decides that a hospital left when a link to it fails outside its own steps (fast, no processes).

Across processes only the server decides, from its own steps with a hospital; the relay's hospital
whose hand-over fails and the server whose roster message cannot be delivered carry on and leave
the decision to the server's next step with that hospital, so every process agrees. A frame that
broke the rules is never forgiven. The process test is in ``test_dropout.py``
(``test_a_relay_hospital_killed_between_its_turns_is_the_only_one_to_leave``).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from medsplit.config import load_config
from medsplit.models import build_model
from medsplit.split import Channel
from medsplit.split.channel import MessageError
from medsplit.train.party_run import ControlCoordinator
from medsplit.train.protocols import SequentialRelay
from medsplit.train.roster import Roster, is_outage
from medsplit.transport.base import Transport, TransportError
from medsplit.transport.framing import FrameError

GONE = TransportError("sending a message to client1 failed: Connection closed by peer")
FORGED = FrameError("frame 3 from client1: bad CRC32")


class _Links(Transport):
    """Sends succeed (and are kept) except to the peers in ``failing``, which raise their error."""

    def __init__(self, name: str, failing: dict[str, Exception]):
        super().__init__(name)
        self.failing, self.sent = failing, []

    def _send(self, receiver, payload):
        if receiver in self.failing:
            raise self.failing[receiver]
        self.sent.append(receiver)

    def _recv(self, sender, max_bytes):
        raise self.failing[sender]  # only failing links are read from here


def test_only_a_link_that_stopped_is_an_outage():
    assert is_outage(GONE)
    assert not is_outage(FORGED)  # a TransportError too, but an attack
    assert not is_outage(MessageError("malformed weights message from client0"))


@pytest.fixture(scope="module")
def table():
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=2)


def _relay(table, here: str, error: Exception, minimum: int | None):
    """The relay as the process of ``here`` (client0 hands over to client1) sees it, its link to the other failing."""
    other = "client1" if here == "client0" else "client0"
    channel = Channel(transport=_Links(here, {other: error}), local={here})
    make = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    relay = SequentialRelay(copy.deepcopy(table), 3, 3, make, F.cross_entropy, channel, optimizer_handover="carry")
    relay.roster = Roster(3, minimum, relay.history_keeper())
    return relay


def test_the_hospital_whose_hand_over_fails_carries_on_and_counts_nothing(table):
    relay = _relay(table, "client0", GONE, minimum=2)
    notes = []
    relay.roster.notice = notes.append
    relay._pass_weights(0, 1)  # client1 is gone: the server's step with it decides, not client0
    (note,) = notes  # client0's console says what it saw, and who decides
    assert note.startswith("handing the weights to client1 failed (") and "Connection closed by peer" in note
    assert note.endswith("the server's step with client1 decides whether it left")
    assert relay.channel.byte_rows(None) == []
    assert relay.roster.members() == [0, 1, 2]  # nobody left on client0's word


@pytest.mark.parametrize("here,error,minimum", [
    ("client0", GONE, None),  # default: every hospital is needed, so any failure stops the run
    ("client0", FORGED, 2),  # a frame that broke the rules stops the run, dropouts or not
    ("client1", GONE, 2),  # the receiver whose weights do not arrive cannot train: it stops
])
def test_any_other_hand_over_failure_still_stops(table, here, error, minimum):
    relay = _relay(table, here, error, minimum)
    with pytest.raises(type(error)):
        relay._pass_weights(0, 1)


def _server(tmp_path, failing: dict[str, Exception]) -> ControlCoordinator:
    cfg = load_config(None, ["task=retinopathy", "data.source=synthetic", "split.clients=3", "split.min_hospitals=2"])
    return ControlCoordinator(cfg, "server", ["server", "client0", "client1", "client2"], tmp_path, torch.device("cpu"),
                              _Links("server", failing), own_data=False, resume=False, quiet=True)


def test_the_server_leaves_an_undelivered_roster_to_its_next_step_with_that_hospital(tmp_path):
    server = _server(tmp_path, {"client1": GONE})
    server.steps_ahead = {0: 0, 1: 3, 2: 3}  # client0 trained its turn; client1's and client2's are ahead
    roster = Roster(3, 2, keeper=2)
    server.share_roster(roster)
    assert server.transport.sent == ["client0", "client2"]
    assert roster.members() == [0, 1, 2]  # not decided here: client0 may have been told already


@pytest.mark.parametrize("error,ahead", [(GONE, 0), (FORGED, 3)])
def test_the_server_stops_when_no_step_would_decide_or_the_frame_was_forged(tmp_path, error, ahead):
    server = _server(tmp_path, {"client1": error})
    server.steps_ahead = {0: 0, 1: ahead, 2: 3}
    with pytest.raises(type(error)):
        server.share_roster(Roster(3, 2, keeper=2))
