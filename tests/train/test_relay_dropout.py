"""Who decides that a hospital left when a link to it fails outside its own steps (fast, no processes).

Across processes only the server decides, from its own exchanges with a hospital (its steps, the
end of its relay turn, the next epoch's batch counts); the relay's hospital whose hand-over fails,
the evaluating hospital that cannot tell it the tested epoch and the server whose roster message
cannot be delivered carry on and leave the decision to the server's next exchange with that
hospital, so every process agrees. A frame that broke the rules is never forgiven. The process
tests are ``test_dropout.py::test_a_relay_hospital_killed_between_its_turns_is_the_only_one_to_leave``
and ``test_relay_dropout_after_turn.py``.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from medsplit.split import wire

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
    """Sends succeed (and are kept) except to the peers in ``failing``, which raise their error;
    a receive from any other peer gets the control message ``inbox`` holds."""

    def __init__(self, name: str, failing: dict[str, Exception], inbox: dict | None = None):
        super().__init__(name)
        self.failing, self.sent, self.inbox = failing, [], inbox or {}

    def _send(self, receiver, payload):
        if receiver in self.failing:
            raise self.failing[receiver]
        self.sent.append(receiver)

    def _recv(self, sender, max_bytes):
        if sender in self.failing:
            raise self.failing[sender]
        return wire.encode({}, meta=self.inbox)


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


class _Runner:
    """What the server's coordinator uses of its runner: the roster, the epoch's losses, ``_leave``."""

    def __init__(self, roster: Roster):
        self.roster, self.losses = roster, {0: [], 1: [0.5, 0.25], 2: []}

    def _leave(self, k, epoch, after, why):
        self.roster.leave(k, epoch, after, why)


def _server(tmp_path, failing: dict[str, Exception], inbox: dict | None = None, epoch: int = 0) -> ControlCoordinator:
    """The server of a 3-epoch run of 3 hospitals (client2 keeps the history), in ``epoch`` (from 0)."""
    cfg = load_config(None, ["task=retinopathy", "data.source=synthetic", "split.clients=3", "split.min_hospitals=2",
                             "train.epochs=3"])
    server = ControlCoordinator(cfg, "server", ["server", "client0", "client1", "client2"], tmp_path, torch.device("cpu"),
                                _Links("server", failing, inbox), own_data=False, resume=False, quiet=True)
    server.roster = Roster(3, 2, keeper=2)
    server.runner, server.epoch = _Runner(server.roster), epoch
    return server


def test_the_server_leaves_an_undelivered_roster_to_its_next_step_with_that_hospital(tmp_path):
    server = _server(tmp_path, {"client1": GONE})
    server.steps_ahead = {0: 0, 1: 3, 2: 3}  # client0 trained its turn; client1's and client2's are ahead
    server.share_roster(server.roster)
    assert server.transport.sent == ["client0", "client2"]
    assert server.roster.members() == [0, 1, 2]  # not decided here: client0 may have been told already


def test_at_an_epochs_end_the_next_epochs_batch_counts_decide(tmp_path):
    server = _server(tmp_path, {"client1": GONE}, inbox={"batches": [2, 2]}, epoch=1)
    server.steps_ahead = {0: 0, 1: 0, 2: 0}  # every turn of epoch 2 ran; epoch 3 follows
    server.share_roster(server.roster)
    assert server.transport.sent == ["client0", "client2"] and server.roster.members() == [0, 1, 2]
    server.epoch = 2
    batches = server.share_batch_counts(2, {})  # client0 and client2 announce [2, 2]; client1's link is gone
    assert [len(b) for b in batches] == [2, 0, 2]
    (dep,) = server.roster.departures
    assert (dep.hospital, dep.epoch, dep.after) == (1, 3, 0) and "Connection closed by peer" in dep.why


def test_a_turn_whose_end_is_not_reported_leaves_with_its_weights(tmp_path):
    server = _server(tmp_path, {}, inbox={"batches": [2, 2]})
    server.share_batch_counts(0, {})  # everyone announces 2 batches
    server.transport.failing["client1"] = GONE
    server.report_turn(1)  # client1 died after its last step, before it reported the turn
    (dep,) = server.roster.departures
    assert (dep.hospital, dep.epoch, dep.after) == (1, 1, 2)  # after all its batches: the schedule's after=2
    assert server.runner.losses[1] == []  # its losses left with it, as in a failed step


@pytest.mark.parametrize("error,epoch,ahead", [(GONE, 2, 0), (FORGED, 0, 3)])
def test_the_server_stops_when_nothing_later_would_decide_or_the_frame_was_forged(tmp_path, error, epoch, ahead):
    server = _server(tmp_path, {"client1": error}, epoch=epoch)
    server.steps_ahead = {0: 0, 1: ahead, 2: 3}
    with pytest.raises(type(error)):
        server.share_roster(server.roster)


def test_a_forged_frame_instead_of_the_batch_counts_stops_the_run(tmp_path):
    server = _server(tmp_path, {"client1": FORGED}, inbox={"batches": [2, 2]})
    with pytest.raises(FrameError):
        server.share_batch_counts(0, {})


class _Protocol:
    reports_turns = True

    def eval_client_index(self):
        return 2


@pytest.mark.parametrize("epoch", [0, 2])
def test_the_evaluating_hospital_carries_on_when_a_hospital_cannot_hear_the_tested_epoch(tmp_path, epoch):
    cfg = load_config(None, ["task=retinopathy", "data.source=synthetic", "split.clients=3", "split.min_hospitals=2",
                             "train.epochs=3"])
    reporter = ControlCoordinator(cfg, "client2", ["server", "client0", "client1", "client2"], tmp_path, torch.device("cpu"),
                                  _Links("client2", {"client1": GONE}), own_data=False, resume=False, quiet=True)
    reporter.roster, reporter.epoch = Roster(3, 2, keeper=2), epoch
    runner = _Runner(reporter.roster)
    runner.protocol = _Protocol()
    if epoch == 2:  # the last epoch: nothing later would decide for every process, so it stops
        with pytest.raises(TransportError):
            reporter.share_selection(runner, True)
        return
    assert reporter.share_selection(runner, True) is True
    assert reporter.transport.sent == ["server", "client0"] and reporter.roster.members() == [0, 1, 2]
