"""The Channel's parts, each on its own: the crossing plan, the byte ledger (whose rows are the
checkpoint format, so resumed runs keep their counts) and the named ways the run's position
(epoch, step, phase) changes. Plus a guard: no file outside the channel assigns those fields."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from medsplit.split import Channel
from medsplit.split.byte_ledger import ByteLedger
from medsplit.split.crossings import CrossingError, CrossingPlan

ROOT = Path(__file__).resolve().parents[2]


# ---- crossing plan ---------------------------------------------------------------------------
def test_an_open_plan_lets_anything_cross_until_something_is_declared():
    plan = CrossingPlan()
    plan.check("a", "b", "activation", ["x"], "anywhere")  # nothing declared: open
    plan.declare("a->b", "activation", ["h"])
    plan.check("a", "b", "activation", ["h"], "a->b")
    with pytest.raises(CrossingError, match=r"link 'anywhere' is not in the plan .*declared links: \['a->b'\]"):
        plan.check("a", "b", "activation", ["x"], "anywhere")


def test_declaring_a_link_again_adds_names_but_never_a_second_kind():
    plan = CrossingPlan()
    plan.declare("a->b", "activation", ["h1"])
    plan.declare("a->b", "activation", ["h2"])
    plan.check("a", "b", "activation", ["h1", "h2"], "a->b")
    with pytest.raises(CrossingError, match=r"tensor\(s\) \['x'\] may not cross link 'a->b' as activation; "
                                            r"the plan allows \['h1', 'h2'\]"):
        plan.check("a", "b", "activation", ["h1", "x"], "a->b")
    with pytest.raises(CrossingError, match="declared for both activation and gradient"):
        plan.declare("a->b", "gradient", ["h1"])
    with pytest.raises(CrossingError, match="carries activation transfers, not gradient"):
        plan.check("b", "a", "gradient", ["h1"], "a->b")
    plan.declare("a->b", "activation", None)  # any name from now on
    plan.declare("a->b", "activation", ["h3"])  # stays "any"
    plan.check("a", "b", "activation", ["whatever"], "a->b")


def test_a_forbidden_link_refuses_even_a_declared_tensor_and_says_why():
    plan = CrossingPlan()
    plan.declare("labels", "label", ["y"])
    plan.forbid("labels", "masks stay at the hospital")
    with pytest.raises(CrossingError, match=r"client0 -> server: nothing may cross link 'labels' "
                                            r"\(masks stay at the hospital\); tried to send label \['y'\]"):
        plan.check("client0", "server", "label", ["y"], "labels")


def test_a_misspelt_kind_is_refused_when_declared():
    with pytest.raises(ValueError, match="unknown transfer kind 'activations'"):
        CrossingPlan().declare("a->b", "activations", None)


def test_the_channel_consults_its_plan_before_counting_anything():
    channel = Channel()
    channel.forbid("labels", "no labels here")
    with pytest.raises(CrossingError, match="no labels here"):
        channel.send("c", "s", "label", {"y": torch.zeros(2)}, link="labels")
    assert channel.total_bytes(None) == 0 and channel.ledger.rows(None) == []


# ---- byte ledger -----------------------------------------------------------------------------
# Rows as checkpoints written before the ledger was split out of the Channel store them.
SAVED_ROWS = [
    {"phase": "eval", "epoch": 0, "sender": "server", "receiver": "client0", "kind": "activation", "link": "output", "bytes": 90},
    {"phase": "train", "epoch": 0, "sender": "client0", "receiver": "server", "kind": "activation", "link": "c->s", "bytes": 1000},
    {"phase": "train", "epoch": 1, "sender": "client0", "receiver": "server", "kind": "activation", "link": "c->s", "bytes": 500},
    {"phase": "train", "epoch": 1, "sender": "server", "receiver": "client0", "kind": "gradient", "link": "s->c", "bytes": 7},
]


def test_ledger_rows_are_the_checkpoint_format_and_load_back_unchanged():
    ledger = ByteLedger()
    ledger.load(SAVED_ROWS)
    assert ledger.rows(None) == SAVED_ROWS
    assert [list(r) for r in ledger.rows(None)] == [list(r) for r in SAVED_ROWS]  # the keys' order too
    assert ledger.rows("eval") == SAVED_ROWS[:1] and ledger.rows() == SAVED_ROWS[1:]
    assert ledger.total() == 1507 and ledger.total("eval") == 90 and ledger.total(None) == 1597


def test_ledger_sums_per_key_and_a_loaded_row_replaces_its_count():
    ledger = ByteLedger()
    ledger.add("train", 1, "client0", "server", "activation", "c->s", 200)
    ledger.add("train", 1, "client0", "server", "activation", "c->s", 300)
    ledger.add("train", 0, "client0", "server", "activation", "c->s", 1)
    assert [(r["epoch"], r["bytes"]) for r in ledger.rows()] == [(0, 1), (1, 500)]  # sorted by key
    ledger.load(SAVED_ROWS[1:2])
    assert [(r["epoch"], r["bytes"]) for r in ledger.rows()] == [(0, 1000), (1, 500)]


def test_a_resumed_channel_counts_on_from_the_saved_rows():
    before = Channel()
    before.send("c", "s", "activation", {"h": torch.ones(4)})
    saved = before.byte_rows(None)  # what runner.checkpoint_payload stores
    after = Channel()
    after.load_byte_rows(saved)
    after.at(epoch=1)
    after.send("c", "s", "activation", {"h": torch.ones(4)})
    assert after.byte_rows(None)[0] == saved[0]
    assert after.total_bytes() == 2 * before.total_bytes() and [r["epoch"] for r in after.byte_rows()] == [0, 1]


# ---- where the run is --------------------------------------------------------------------------
def test_at_and_next_step_move_the_position_sends_are_counted_and_observed_at():
    channel, seen = Channel(), []
    channel.tap(lambda t: seen.append((t.epoch, t.step, t.phase)))
    channel.at(epoch=3, step=5)
    channel.next_step()
    channel.at(epoch=4)  # the step is kept
    channel.send("c", "s", "activation", {"h": torch.ones(2)})
    assert seen == [(4, 6, "train")] and channel.byte_rows()[0]["epoch"] == 4
    channel.at(step=0)
    assert (channel.epoch, channel.step) == (4, 0)


def test_evaluating_counts_apart_and_restores_the_phase_even_on_an_error():
    channel = Channel()
    with channel.evaluating():
        channel.send("c", "s", "activation", {"h": torch.ones(2)})
        assert channel.phase == "eval"
    assert channel.phase == "train" and channel.total_bytes() == 0 and channel.total_bytes("eval") > 0
    with pytest.raises(RuntimeError, match="boom"):
        with channel.evaluating():
            raise RuntimeError("boom")
    assert channel.phase == "train"


# ---- nobody else moves the position ------------------------------------------------------------
def _channel_position_assignments(source: str, name: str) -> list[str]:
    """``name:line: statement`` of each assignment to ``<...channel>.epoch/step/phase`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for target in targets:
            for t in ast.walk(target):
                if (isinstance(t, ast.Attribute) and t.attr in ("epoch", "step", "phase")
                        and "channel" in ast.unparse(t.value).lower()):
                    found.append(f"{name}:{t.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_only_the_channel_sets_its_epoch_step_and_phase():
    files = [p for folder in ("medsplit", "benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")]
    names = {p: str(p.relative_to(ROOT)) for p in files}
    outside = [hit for p, name in names.items() if name != "medsplit/split/channel.py"
               for hit in _channel_position_assignments(p.read_text(), name)]
    assert not outside, "set the position through Channel.at / next_step / evaluating:\n" + "\n".join(outside)


def test_the_guard_finds_the_assignments_it_is_for():
    sample = "channel.step += 1\nphase, self.channel.phase = self.channel.phase, 'eval'\nself.channel.epoch = 3\nx.step = 1\n"
    assert [h.split(":")[1] for h in _channel_position_assignments(sample, "sample.py")] == ["1", "2", "3"]
