"""Four-part split U-Nets: for every legal cut the split model is the whole model.

Both backbones (smp resnet34 U-Net, the classic U-Net at reduced width), 64x64 inputs,
BCE-with-logits against a random mask. Checks outputs, every parameter gradient, what
crosses the channel, that the client's skips do train the client encoder, and cut errors.
"""

from __future__ import annotations

import copy
import socket

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from medsplit.models.stages import StageTable
from medsplit.models.unet_classic import unet_classic_table
from medsplit.models.unet_smp import stage_table_from_smp, unet_smp_table
from medsplit.split import Channel, SplitModel, Transfer, cut, two_party

SIZE = 64
BATCH = 2
LEGAL = [1, 2, 3]


def _smp_model(seed: int = 0) -> smp.Unet:
    torch.manual_seed(seed)
    return smp.Unet(encoder_name="resnet34", encoder_weights=None, in_channels=1, classes=1)


def _classic_table(seed: int = 0) -> StageTable:
    torch.manual_seed(seed)
    return unet_classic_table(num_classes=1, in_channels=1, base_channels=8)


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 1, SIZE, SIZE, generator=g)
    y = (torch.rand(BATCH, 1, SIZE, SIZE, generator=g) > 0.5).float()
    return x, y


def _grads(module: torch.nn.Module) -> dict[int, torch.Tensor]:
    """Gradients keyed by parameter identity (tables and smp models name them differently)."""
    return {id(p): p.grad.detach().clone() for p in module.parameters() if p.grad is not None}


def _reference(forward, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    module.zero_grad(set_to_none=True)
    out = forward(x)
    F.binary_cross_entropy_with_logits(out, y).backward()
    return out.detach(), _grads(module)


def _split_model(table: StageTable, n: int) -> tuple[SplitModel, Channel]:
    parts = cut(table, n)
    assert [(p.name, p.role) for p in parts] == [
        ("client_encoder", "client"), ("server_encoder", "server"), ("server_decoder", "server"), ("client_decoder", "client")
    ]
    channel = Channel()
    return two_party(parts, F.binary_cross_entropy_with_logits, channel, client_name="client"), channel


def _split_run(table: StageTable, n: int, x: torch.Tensor, y: torch.Tensor):
    model, channel = _split_model(table, n)
    seen: list[Transfer] = []
    channel.tap(seen.append)
    for party in model.parties:
        party.zero_grad()
    out, _ = model.forward_backward(x, y)
    return out, _grads(table), seen


def _assert_same_grads(got: dict[int, torch.Tensor], want: dict[int, torch.Tensor]) -> None:
    assert got.keys() == want.keys(), "the split model must give a gradient to exactly the same parameters"
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def smp_pair() -> tuple[smp.Unet, StageTable]:
    model = _smp_model()
    return model, stage_table_from_smp(model)


@pytest.mark.slow
@pytest.mark.parametrize("n", LEGAL)
def test_smp_split_equals_smp_unet(smp_pair, n: int) -> None:
    model, table = smp_pair
    model.train()
    x, y = _batch()
    want_out, want_grads = _reference(model, model, x, y)
    whole_out, whole_grads = _reference(table, table, x, y)
    torch.testing.assert_close(whole_out, want_out, rtol=0, atol=0)  # same modules, same ops
    _assert_same_grads(whole_grads, want_grads)
    out, grads, _ = _split_run(table, n, x, y)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    _assert_same_grads(grads, want_grads)
    assert len(grads) == len(list(model.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("n", LEGAL)
def test_classic_split_equals_whole_table(n: int) -> None:
    table = _classic_table()
    x, y = _batch()
    want_out, want_grads = _reference(table, table, x, y)
    out, grads, _ = _split_run(table, n, x, y)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    _assert_same_grads(grads, want_grads)
    assert len(grads) == len(list(table.parameters()))


def _expected_crossings(table: StageTable, n: int) -> tuple[str, str]:
    """(client -> server activation, server -> client activation) for CUT=n."""
    deepest_client_feature = table.stages[n - 1].writes
    last_server_stage = table.stages[table.plan(n)[2].stop - 1]
    return deepest_client_feature, last_server_stage.writes


@pytest.mark.parametrize("backbone", ["smp", "classic"])
@pytest.mark.parametrize("n", LEGAL)
def test_channel_carries_exactly_four_transfers(smp_pair, backbone: str, n: int) -> None:
    table = smp_pair[1] if backbone == "smp" else _classic_table()
    x, y = _batch()
    _, _, seen = _split_run(table, n, x, y)
    up, down = _expected_crossings(table, n)
    got = [(t.sender, t.receiver, t.kind, tuple(t.tensors)) for t in seen]
    assert got == [
        ("client", "server", "activation", (up,)),
        ("server", "client", "activation", (down,)),
        ("client", "server", "gradient", (down,)),
        ("server", "client", "gradient", (up,)),
    ]
    # the shallower skips, the input, the masks and the logits stay with the client
    parts = cut(table, n)
    client_only = set(parts[0].sends) - {up} | {"x", "y", table.output}
    assert not client_only & {name for t in seen for name in t.tensors}
    assert parts[0].sends[-1] == up and parts[2].sends == (down,)
    assert set(parts[3].reads) - {"x"} == set(parts[0].sends) | {down}


@pytest.mark.parametrize("backbone", ["smp", "classic"])
@pytest.mark.parametrize("n", LEGAL)
def test_skip_gradients_reach_client_encoder(smp_pair, backbone: str, n: int) -> None:
    """Dropping the skip gradients (the original code's bug) changes the client encoder's gradients."""
    table = smp_pair[1] if backbone == "smp" else _classic_table()
    x, y = _batch()
    _, grads, _ = _split_run(table, n, x, y)
    parts = cut(table, n)
    skips = set(parts[0].sends)  # every client-encoder output, including the deepest
    client_decoder = {s.name for s in parts[3].stages}

    def forward_without_skip_gradients(inp: torch.Tensor) -> torch.Tensor:
        env = {"x": inp}
        for s in table.stages:
            args = [env[r].detach() if (s.name in client_decoder and r in skips) else env[r] for r in s.reads]
            env[s.writes] = s.module(*args)
        return env[table.output]

    _, dropped = _reference(forward_without_skip_gradients, table, x, y)
    encoder_params = [id(p) for p in parts[0].parameters()]
    assert all(dropped[k].abs().sum() > 0 for k in encoder_params), "the server path alone still trains the encoder"
    differs = [not torch.allclose(grads[k], dropped[k], rtol=1e-3, atol=1e-7) for k in encoder_params]
    assert all(differs), "every client-encoder parameter gradient must include the skip path"


@pytest.mark.parametrize("make", [lambda: unet_smp_table(encoder="resnet18"), _classic_table])
def test_illegal_cut_lists_legal_cuts(make) -> None:
    table = make()
    assert table.legal_cuts == LEGAL
    for bad in (0, 4, 5, -1):
        with pytest.raises(ValueError, match=r"valid cuts are \[1, 2, 3\]"):
            cut(table, bad)


def test_meta_and_plans_describe_the_model() -> None:
    smp_table = unet_smp_table(encoder="resnet18")
    classic = _classic_table()
    assert smp_table.meta["backbone"] == "resnet18" and smp_table.meta["encoder_blocks"] == 5
    assert classic.meta["name"] == "unet-classic" and classic.meta["encoder_blocks"] == 4
    for table in (smp_table, classic):
        for n in table.legal_cuts:
            parts = cut(table, n)
            assert all(len(p.stages) for p in parts)
            assert parts[-1].sends == ("logits",)
            # the server keeps at least one encoder block and the bottleneck
            assert len(parts[1].stages) >= 2


def test_smp_table_matches_odd_input_sizes() -> None:
    """smp's decoder resizes to each skip's size, so inputs not divisible by 32 work too."""
    torch.manual_seed(0)
    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=1, classes=2).eval()
    table = stage_table_from_smp(model)
    x = torch.randn(1, 1, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(table(x), model(x), rtol=0, atol=0)


def test_deepcopy_gives_an_independent_model() -> None:
    """Protocols copy the client part per hospital; a copy must run its own parameters."""
    table = unet_smp_table(encoder="resnet18").eval()
    twin = copy.deepcopy(table)
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        before = table(x)
        torch.testing.assert_close(twin(x), before)
        for p in twin.parameters():
            p.add_(0.01)
        torch.testing.assert_close(table(x), before)
        assert not torch.allclose(twin(x), before)


def test_building_without_weights_uses_no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("model construction tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    table = unet_smp_table(num_classes=1, in_channels=1, encoder="resnet34", encoder_weights=None)
    assert table.meta["encoder_weights"] is None


def test_unknown_encoder_is_refused_with_choices() -> None:
    with pytest.raises(ValueError, match="valid encoders are .*resnet34"):
        unet_smp_table(encoder="efficientnet-b0")
