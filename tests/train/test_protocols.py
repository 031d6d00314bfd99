"""The protocol registry (one place that knows the protocols) and SplitFed SFL-V1.

SFL-V1 (Thapa et al., AAAI 2022): one server copy per hospital; each round ends with FedAvg of
the hospital parts and of the server copies, weighted by sample counts.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from medsplit.config import CHOICES, PROCESS_PROTOCOLS, ConfigError, load_config
from medsplit.models import build_model
from medsplit.split import Channel
from medsplit.split.wire import encoded_size
from medsplit.train.protocols import (
    PROTOCOL_NAMES,
    PROTOCOLS,
    SplitFed,
    SplitFedV1,
    protocol_class,
)
from medsplit.train.protocols.base import weighted_average
from medsplit.train.protocols.splitfed import interleaved

# ---- the registry ------------------------------------------------------------------------


def test_config_choices_come_from_the_registry():
    """medsplit.config keeps its lists torch-free (loading a config needs no torch); they must name exactly
    the registered protocols, in the registry's order."""
    assert CHOICES["split.protocol"] == PROTOCOL_NAMES == tuple(PROTOCOLS)
    assert PROCESS_PROTOCOLS == tuple(n for n, p in PROTOCOLS.items() if p.runs_as_processes)
    assert all(PROTOCOLS[n].name == n for n in PROTOCOL_NAMES)


def test_protocol_flags():
    flags = {n: (p.split, p.baseline, p.pooled, p.runs_as_processes) for n, p in PROTOCOLS.items()}
    assert flags == {
        "sequential": (True, False, False, True),
        "splitfed": (True, False, False, True),
        "splitfed-v1": (True, False, False, False),
        "centralised": (False, True, True, False),
        "fedavg": (False, True, False, False),
    }
    # split protocols are listed before the baselines (CLI help, sweep choices)
    assert [p.baseline for p in PROTOCOLS.values()] == sorted(p.baseline for p in PROTOCOLS.values())


def test_unknown_protocol_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown protocol 'ring' \(config key 'split.protocol'\); valid choices are "
                                          r"\['sequential', 'splitfed', 'splitfed-v1', 'centralised', 'fedavg'\]"):
        protocol_class("ring")


def test_run_names_ask_the_protocol_whether_it_cuts():
    names = {p: load_config(None, [f"split.protocol={p}", "split.cut=2"]).run_name() for p in PROTOCOL_NAMES}
    assert names["splitfed-v1"].startswith("retinopathy-splitfed-v1-cut2-clients2-seed0-128px-")
    assert names["fedavg"].startswith("retinopathy-fedavg-whole-clients2-seed0-128px-")
    assert names["centralised"].startswith("retinopathy-centralised-whole-clients2-seed0-128px-")


def test_pooled_protocol_trains_one_party_on_every_row():
    import numpy as np

    rows = [np.array([5, 1]), np.array([4, 0, 2])]
    assert [r.tolist() for r in protocol_class("centralised").training_rows(rows)] == [[0, 1, 2, 4, 5]]
    assert protocol_class("splitfed-v1").training_rows(rows) is rows
    assert protocol_class("centralised").history_name(0, 1) == "all"
    assert [protocol_class("splitfed-v1").history_name(k, 2) for k in range(2)] == ["client0", "client1"]


@pytest.mark.parametrize("transport", ["gloo", "flare"])
def test_splitfed_v1_runs_in_one_process_only(transport):
    with pytest.raises(ConfigError, match=rf"config key 'split.protocol' = 'splitfed-v1' runs in one process only "
                                          rf"\(split.transport={transport} supports sequential and splitfed\)"):
        load_config(None, ["split.protocol=splitfed-v1", f"split.transport={transport}"])


# ---- SFL-V1 on a tiny ResNet, driven directly ------------------------------------------------


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    table = build_model("resnet18", num_classes=2)
    data = (torch.randn(24, 3, 32, 32), torch.randint(0, 2, (24,)))
    return table, data


def _make(cls, table, n_clients, handover="carry"):
    make = lambda params: torch.optim.Adam(params, lr=1e-2)
    return cls(copy.deepcopy(table), 2, n_clients, make, F.cross_entropy, Channel(), optimizer_handover=handover)


def _step(data):
    x, y = data
    return lambda model, k, idx: model.train_step(x[idx], y[idx])


def _state(party):
    return {k: v.clone() for k, v in party.parts.state_dict().items()}


def _equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_server_copies_differ_within_a_round_and_agree_after_the_weighted_average(setting):
    table, data = setting
    sfl = _make(SplitFedV1, table, 2)
    assert [s.name for s in sfl.servers] == ["server0", "server1"] and sfl.models[1].chain[-1][1] is sfl.servers[1]
    assert _equal(_state(sfl.servers[0]), _state(sfl.servers[1]))  # one init
    batches = [[torch.arange(0, 4), torch.arange(4, 8)], [torch.arange(8, 12)]]  # 8 and 4 images: weights 2:1
    interleaved(batches, _step(data), sfl.models)
    servers = [_state(s) for s in sfl.servers]
    clients = [_state(c) for c in sfl.clients]
    assert not _equal(servers[0], servers[1]) and not _equal(clients[0], clients[1])
    sfl.average_round(batches)
    after = [_state(s) for s in sfl.servers]
    assert _equal(after[0], after[1]) and _equal(_state(sfl.clients[0]), _state(sfl.clients[1]))
    expected = weighted_average(servers, [8, 4])
    assert _equal(after[0], expected)
    assert not _equal(after[0], weighted_average(servers, [1, 1]))  # weighted by sample counts, not equally
    assert _equal(_state(sfl.clients[0]), weighted_average(clients, [8, 4]))
    # with carry the copies' Adam moments are averaged too
    s0, s1 = sfl.servers[0].optimizer_tensors(), sfl.servers[1].optimizer_tensors()
    assert set(s0) == set(s1) and all(torch.equal(s0[k], s1[k]) for k in s0)


def test_server_copy_averaging_is_counted_on_its_own_links(setting):
    table, data = setting
    sfl = _make(SplitFedV1, table, 2)
    sfl.run_epoch([[torch.arange(0, 4)], [torch.arange(4, 8)]], _step(data))
    rows = sfl.channel.byte_rows()
    server_weights = {(r["sender"], r["receiver"]): r["bytes"] for r in rows if r["link"] == "server weights"}
    one_copy = encoded_size(dict(sfl.servers[0].parts.state_dict()))
    assert server_weights == {("server0", "main-server"): one_copy, ("server1", "main-server"): one_copy,
                              ("main-server", "server0"): one_copy, ("main-server", "server1"): one_copy}
    assert {(r["sender"], r["receiver"]) for r in rows if r["link"] == "server optimizer state"} == set(server_weights)
    assert all(r["kind"] == "weights" for r in rows if r["link"].startswith("server "))
    # the hospitals' parts go through the fed server as in SFL-V2
    assert {(r["sender"], r["receiver"]) for r in rows if r["link"] == "weights"} == \
        {("client0", "aggregator"), ("client1", "aggregator"), ("aggregator", "client0"), ("aggregator", "client1")}
    # each hospital talks to its own server copy only
    assert {(r["sender"], r["receiver"]) for r in rows if r["kind"] == "activation"} == {("client0", "server0"), ("client1", "server1")}


@pytest.mark.parametrize("handover", ["reset", "local"])
def test_optimizer_handover_applies_to_the_server_copies(setting, handover):
    table, data = setting
    sfl = _make(SplitFedV1, table, 2, handover)
    sfl.run_epoch([[torch.arange(0, 4)], [torch.arange(4, 8)]], _step(data))
    s0, s1 = sfl.servers[0].optimizer_tensors(), sfl.servers[1].optimizer_tensors()
    if handover == "reset":
        assert s0 == {} and s1 == {}
    else:  # each copy keeps its own moments
        assert set(s0) == set(s1) and any(not torch.equal(s0[k], s1[k]) for k in s0)
    assert not any(r["link"] == "server optimizer state" for r in sfl.channel.byte_rows())


@pytest.mark.slow
@pytest.mark.parametrize("handover", ["carry", "local"])
def test_one_hospital_sfl_v1_trains_exactly_as_sfl_v2(setting, handover):
    """With one hospital the averages change nothing: the same weights, losses and cut traffic."""
    table, data = setting
    v1, v2 = _make(SplitFedV1, table, 1, handover), _make(SplitFed, table, 1, handover)
    losses = {id(v1): [], id(v2): []}
    x, y = data
    for epoch in range(2):
        batches = [[torch.arange(0, 8), torch.arange(8, 16), torch.arange(16, 24)][epoch:]]
        for p in (v1, v2):
            p.run_epoch(batches, lambda model, k, idx, p=p: losses[id(p)].append(model.train_step(x[idx], y[idx])[0]))
    assert losses[id(v1)] == losses[id(v2)]
    assert _equal(_state(v1.clients[0]), _state(v2.clients[0]))
    assert _equal(_state(v1.servers[0]), _state(v2.server))
    o1, o2 = v1.servers[0].optimizer_tensors(), v2.server.optimizer_tensors()
    assert set(o1) == set(o2) and all(torch.equal(o1[k], o2[k]) for k in o1)
    # the same bytes cross the cut and go to the fed server; V1 also averages its one server copy
    cut_rows = lambda p: sorted((r["epoch"], r["kind"], r["link"], r["bytes"]) for r in p.channel.byte_rows()
                                if not r["link"].startswith("server "))
    assert cut_rows(v1) == cut_rows(v2)
    assert any(r["link"] == "server weights" for r in v1.channel.byte_rows())


@pytest.mark.slow
def test_state_covers_every_server_copy(setting):
    table, data = setting
    sfl = _make(SplitFedV1, table, 2)
    sfl.run_epoch([[torch.arange(0, 4)], [torch.arange(4, 8)]], _step(data))
    saved = copy.deepcopy(sfl.state())
    assert set(saved) == {"client0", "client1", "server0", "server1"}
    fresh = _make(SplitFedV1, table, 2)
    fresh.load_state(saved)
    for a, b in zip(sfl.parties, fresh.parties):
        assert _equal(_state(a), _state(b)) and a.optimizer_tensors().keys() == b.optimizer_tensors().keys()


# ---- end to end through the training loop ----------------------------------------------------

TINY = {
    "retinopathy": ["task=retinopathy", "data.source=synthetic", "data.synthetic_size=48", "data.img_size=32",
                    "model.name=resnet18", "train.batch_size=16", "split.cut=2"],
    "lungs": ["task=lungs", "data.source=synthetic", "data.synthetic_size=32", "data.img_size=32", "model.name=unet-classic",
              "model.base_channels=4", "train.batch_size=4", "split.cut=1"],
}


def _cfg(tmp_path, task, *extra):
    return load_config(None, TINY[task] + [
        "train.epochs=2", "train.eval_batch_size=64", "train.device=cpu", "train.threads=1", "output.tensorboard=false",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["retinopathy", "lungs"])
def test_splitfed_v1_trains_end_to_end(tmp_path, task):
    from medsplit.train.loop import train

    run = train(_cfg(tmp_path, task, "split.protocol=splitfed-v1", "split.clients=2"), quiet=True)
    m = json.loads((run / "metrics.json").read_text())
    cut = {"retinopathy": 2, "lungs": 1}[task]
    assert run.name.startswith(f"{task}-splitfed-v1-cut{cut}-clients2-seed0-") and m["protocol"] == "splitfed-v1"
    assert {r["client"] for r in m["history"] if "train_loss" in r} == {"client0", "client1"}
    headline = m["test"]["auc"] if task == "retinopathy" else m["test"]["dice"]["mean"]
    assert 0.0 <= headline <= 1.0
    links = {(r["sender"], r["link"]) for r in m["bytes"]}
    assert {("server0", "server weights"), ("server1", "server weights"), ("main-server", "server weights")} <= links
    assert {r["epoch"] for r in m["bytes"] if r["link"] == "server weights"} == {0, 1}  # once per round


@pytest.mark.slow
def test_one_hospital_splitfed_v1_run_equals_splitfed(tmp_path):
    from medsplit.train.loop import train

    runs = {p: json.loads((train(_cfg(tmp_path, "retinopathy", f"split.protocol={p}", "split.clients=1"), quiet=True)
                           / "metrics.json").read_text()) for p in ("splitfed", "splitfed-v1")}
    a, b = runs["splitfed"], runs["splitfed-v1"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(a["history"]) == strip(b["history"]) and a["test"] == b["test"] and a["selected_epoch"] == b["selected_epoch"]
    rename = {"server": "server0"}
    cut = lambda rows: sorted((r["epoch"], rename.get(r["sender"], r["sender"]), rename.get(r["receiver"], r["receiver"]),
                               r["kind"], r["link"], r["bytes"]) for r in rows if not r["link"].startswith("server "))
    assert cut(a["bytes"]) == cut(b["bytes"]) and cut(a["bytes_eval"]) == cut(b["bytes_eval"])


def test_sweeps_accept_splitfed_v1(tmp_path):
    from medsplit.cli import add_sweep_parser
    from medsplit.cli_args import CommandParser
    from medsplit.sweep import plan_points

    parser = CommandParser(prog="medsplit")
    add_sweep_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sweep", "base.yaml", "--axis", "cut", "--values", "1", "--protocols", "splitfed,splitfed-v1"])
    assert args.protocols == ["splitfed", "splitfed-v1"]
    points = plan_points("lungs", "cut", [1], [0], ["splitfed-v1"], ["iid"], False)
    assert [p.protocol for p in points] == ["splitfed-v1"]


@pytest.mark.slow
def test_splitfed_v1_with_two_hospitals_equals_fedavg(tmp_path):
    """Each hospital trains the whole model (its part and its own server copy) and both halves are
    averaged with the same weights each round: SFL-V1 makes exactly FedAvg's updates (measured on
    the two-site lung study too, to every digit); only who computes which layers, and so what
    crosses, differs."""
    from medsplit.train.loop import train

    runs = {p: json.loads((train(_cfg(tmp_path, "retinopathy", f"split.protocol={p}", "split.clients=2"), quiet=True)
                           / "metrics.json").read_text()) for p in ("fedavg", "splitfed-v1")}
    fedavg, v1 = runs["fedavg"], runs["splitfed-v1"]
    assert [r.get("train_loss") for r in v1["history"]] == [r.get("train_loss") for r in fedavg["history"]]
    assert v1["test"]["auc"] == fedavg["test"]["auc"] and v1["selected_epoch"] == fedavg["selected_epoch"]
    assert any(r["kind"] == "activation" for r in v1["bytes"]) and not any(r["kind"] == "activation" for r in fedavg["bytes"])
