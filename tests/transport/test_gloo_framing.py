"""gloo frames as a hostile peer would send them (issue 30, findings 1-2 and the shared secret):
a payload longer than announced is named instead of aborting the receiver, a shorter one is named
instead of decoded from leftover memory, and with ``split.secret_file`` a forged or replayed frame
is refused.

The fast tests drive the framing through a fake link that behaves as gloo does (a message shorter
than the posted buffer is accepted silently, a longer one "aborts"); the slow ones send hostile
gloo messages between real processes' transports.
"""

import json
import os
import struct
import subprocess
import sys
import zlib
from collections import deque
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsplit.split import Channel, wire
from medsplit.split.codecs import make_codec
from medsplit.split.wire import WireFormatError
from medsplit.transport.auth import RunKey
from medsplit.transport.base import Transport, TransportError
from medsplit.transport.framing import (CHUNK_BYTES, MAGIC, PREFIX, TRAILER, FrameError, chunk_count, chunks, encode_frame,
                                        receive_frame)

ROOT = Path(__file__).resolve().parents[2]


class GlooAbort(Exception):
    """What gloo does to a receiver whose buffer is smaller than the message: abort the process."""


class FakeLink:
    """One direction of a gloo link: messages in order; a receive takes the next one into a buffer."""

    def __init__(self):
        self.messages: deque[bytes] = deque()
        self.buffers_posted: list[int] = []

    def send_frame(self, frame: bytes) -> None:
        self.messages.extend(c.numpy().tobytes() for c in chunks(frame))

    def receive(self, buffers: list[torch.Tensor]) -> None:
        for buffer in buffers:
            self.buffers_posted.append(len(buffer))
            if not self.messages:
                raise TransportError("no answer within the timeout")
            message = self.messages.popleft()
            if len(message) > len(buffer):
                raise GlooAbort(f"{len(message)} vs {len(buffer)}")
            buffer[: len(message)] = torch.frombuffer(bytearray(message), dtype=torch.uint8) if message else buffer[:0]


def _receive(link, max_bytes=10**8, seq=0, verify=None):
    return receive_frame(link.receive, max_bytes, seq, "server: frame 0 from client1 (rank 2)", verify)


def _frame_with(payload: bytes, announced: int, seq: int = 0) -> bytes:
    """A frame whose prefix announces ``announced`` bytes around ``payload`` (a lying sender)."""
    head = PREFIX.pack(MAGIC, seq, announced) + payload
    return head + TRAILER.pack(len(payload), zlib.crc32(head))  # the CRC of the parts is the CRC of the whole


@pytest.mark.parametrize("n", [0, 1, 113, CHUNK_BYTES - 32, CHUNK_BYTES, 3 * CHUNK_BYTES + 5])
def test_an_honest_frame_crosses_unchanged_in_chunks_no_receive_buffer_is_smaller_than(n):
    link, payload = FakeLink(), os.urandom(n)
    link.send_frame(encode_frame(payload, 0))
    assert all(len(m) <= CHUNK_BYTES for m in link.messages)
    assert _receive(link) == payload
    assert set(link.buffers_posted) == {CHUNK_BYTES} and not link.messages


def test_a_payload_longer_than_announced_is_named_not_an_abort():
    """Finding 1: 113 bytes announced, 32,881 sent (exit 134, gloo::EnforceNotMet, before)."""
    link = FakeLink()
    link.send_frame(_frame_with(os.urandom(32_881), announced=113))
    with pytest.raises(FrameError, match=r"server: frame 0 from client1 \(rank 2\) is longer than the 113 bytes of payload it announces"):
        _receive(link)


def test_a_payload_shorter_than_announced_is_named_never_decoded():
    """Finding 2: 113 of 32,881 bytes sent; the rest of the buffer was decoded as the activation."""
    link = FakeLink()
    link.send_frame(_frame_with(os.urandom(113), announced=32_881))
    with pytest.raises(FrameError, match=r"announces 32881 bytes of payload but its trailer says 0: it is shorter or longer"):
        _receive(link)


def test_the_old_framing_a_raw_length_then_a_payload_is_not_a_frame():
    link = FakeLink()
    link.messages.extend([struct.pack("<q", 113), os.urandom(32_881)])
    with pytest.raises(FrameError, match=r"does not start with medsplit's frame marker"):
        _receive(link)


def test_a_corrupted_payload_fails_the_checksum():
    frame = bytearray(encode_frame(b"activation bytes", 0))
    frame[PREFIX.size + 3] ^= 0x01
    link = FakeLink()
    link.send_frame(bytes(frame))
    with pytest.raises(FrameError, match="fails its CRC32 checksum"):
        _receive(link)


def test_a_training_steps_message_crosses_in_one_chunk():
    """A frame over one chunk waits a round trip for its second chunk's receive (issue 31): what a
    step sends at 128 px and CUT 3 (batch 16: exactly 4 MiB of fp32, 1 MiB of int8) stays in one,
    authenticated and with the codec's fields, so it pays one one-way delay, not three."""
    act = torch.randn(16, 64, 32, 32)
    assert act.numel() * 4 == 4 << 20
    for codec in ("none", "int8"):
        payload = make_codec(codec).encode({"h": act})
        size = wire.encoded_size(payload, {"kind": "activation", "link": "client_encoder->server_encoder", "step": 123})
        assert chunk_count(size, authenticated=True) == 1, (codec, size)
    assert chunk_count(CHUNK_BYTES, authenticated=False) == 2  # the limit is real


def test_a_length_over_the_limit_is_refused_before_anything_more_is_received():
    link = FakeLink()
    link.send_frame(encode_frame(os.urandom(3 * CHUNK_BYTES), 0))
    with pytest.raises(FrameError, match=rf"announces a payload of {3 * CHUNK_BYTES} bytes, over the limit of 1000 bytes"):
        _receive(link, max_bytes=1000)
    assert link.buffers_posted == [CHUNK_BYTES]


def test_a_repeated_frame_is_out_of_sequence():
    link = FakeLink()
    frame = encode_frame(b"step 0", 0)
    link.send_frame(frame)
    link.send_frame(frame)
    assert _receive(link, seq=0) == b"step 0"
    with pytest.raises(FrameError, match=r"carries sequence number 0, expected 1: replayed or repeated"):
        _receive(link, seq=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300), data=st.data())
def test_any_tampering_is_a_frame_error_or_the_exact_payload(payload, data):
    """Cut, extended, flipped or spliced frames: never another exception, never other bytes."""
    frame = bytearray(encode_frame(payload, 0))
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "splice"]))
    at = data.draw(st.integers(0, len(frame) - 1))
    if how == "flip":
        frame[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        frame = frame[:at]
    elif how == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=64))
    else:
        frame[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    link = FakeLink()
    link.send_frame(bytes(frame))
    try:
        assert _receive(link, max_bytes=10_000) == payload
    except FrameError:
        pass


# ---- the shared secret -------------------------------------------------------------------
KEY = RunKey(b"s" * 32, nonce="n1", config_hash="c1")


def _signed(payload: bytes, seq: int, key=KEY, sender="2", receiver="0") -> bytes:
    return encode_frame(payload, seq, lambda *parts: key.mac(sender, receiver, *parts))


def _verify(sender="2", receiver="0"):
    return lambda *parts_then_code: KEY.verify(sender, receiver, *parts_then_code)


def test_an_authenticated_frame_crosses():
    link = FakeLink()
    link.send_frame(_signed(b"hello", 0))
    assert _receive(link, verify=_verify()) == b"hello"


@pytest.mark.parametrize("frame", [
    encode_frame(b"hello", 0) + bytes(32),  # no secret: a zero code
    _signed(b"hello", 0, key=RunKey(b"t" * 32, "n1", "c1")),  # another secret
    _signed(b"hello", 0, key=RunKey(b"s" * 32, "n0", "c1")),  # the same secret, another run
    _signed(b"hello", 0, sender="1"),  # moved from another link
])
def test_a_frame_without_the_runs_key_is_refused(frame):
    link = FakeLink()
    link.send_frame(frame)
    with pytest.raises(FrameError, match=r"is not authenticated: its HMAC does not match the run's key"):
        _receive(link, verify=_verify())


def test_a_replayed_authenticated_frame_is_refused():
    link = FakeLink()
    frame = _signed(b"gradient", 0)
    link.send_frame(frame)
    link.send_frame(frame)
    assert _receive(link, seq=0, verify=_verify()) == b"gradient"
    with pytest.raises(FrameError, match=r"sequence number 0, expected 1: replayed"):
        _receive(link, seq=1, verify=_verify())


def test_a_forged_sequence_number_breaks_the_code():
    frame = bytearray(_signed(b"gradient", 0))
    struct.pack_into("<Q", frame, 4, 1)  # claim to be frame 1
    frame[PREFIX.size + 8 : PREFIX.size + 8 + 4] = b"\0\0\0\0"  # any trailer: the CRC is not the guard
    link = FakeLink()
    link.send_frame(bytes(frame))
    with pytest.raises(FrameError):
        _receive(link, seq=1, verify=_verify())


# ---- through the Channel: the link, epoch and step are named -------------------------------
class FramedTransport(Transport):
    """The framing over fake links, as GlooTransport uses it (for the Channel test)."""

    def __init__(self, name, links):
        super().__init__(name)
        self.links = links

    def _send(self, receiver, payload):
        self.links[(self.name, receiver)].send_frame(encode_frame(payload, 0))

    def _recv(self, sender, max_bytes):
        return receive_frame(self.links[(sender, self.name)].receive, max_bytes, 0, f"{self.name}: frame 0 from {sender}")


def test_the_channel_names_peer_link_epoch_and_step_of_a_lying_frame():
    links = {("client0", "server"): FakeLink()}
    channel = Channel(transport=FramedTransport("server", links), local={"server"})
    channel.at(epoch=2, step=7)
    payload = wire.encode({"h": torch.randn(4, 8)})
    links[("client0", "server")].send_frame(_frame_with(payload[:50], announced=len(payload)))
    with pytest.raises(WireFormatError, match=r"server: receiving activation from client0 to server on link 'enc->srv' "
                                              r"\(epoch 2, step 7.*frame 0 from client0 announces \d+ bytes of payload but its trailer says 0"):
        channel.send("client0", "server", "activation", {"h": torch.empty(4, 8, device="meta")}, link="enc->srv")


# ---- real gloo between processes ---------------------------------------------------------
HOSTILE_PEER = r"""
import json, os, struct, sys, threading, zlib
import torch
from medsplit.transport.gloo import GlooTransport, free_port
from medsplit.transport.framing import MAGIC, PREFIX, TRAILER, encode_frame

def lying_frame(payload, announced):
    head = PREFIX.pack(MAGIC, 0, announced) + payload
    return head + TRAILER.pack(len(payload), zlib.crc32(head))

SCENARIOS = {
    # the messages a hostile client0 posts, as raw gloo sends: (tag, bytes)
    "old framing, longer than announced": [(0, struct.pack("<q", 113)), (1, os.urandom(32881))],
    "old framing, shorter than announced": [(0, struct.pack("<q", 32881)), (1, os.urandom(113))],
    "frame longer than announced": [(0, lying_frame(os.urandom(32881), 113))],
    "frame shorter than announced": [(0, lying_frame(os.urandom(113), 32881))],
    "frame without the secret": [(0, encode_frame(b"hello", 0) + bytes(32))],
}
secret = b"k" * 32
results = {}
for name, messages in SCENARIOS.items():
    address = f"127.0.0.1:{free_port()}"
    ranks = {"server": 0, "client0": 1}
    key = secret if "secret" in name else None
    ends = {}
    def open_end(party):
        ends[party] = GlooTransport(party, ranks, address, timeout_s=20, checkin={"config_hash": "h", "config_keys": {}}, secret=key)
    threads = [threading.Thread(target=open_end, args=(p,)) for p in ranks]
    [t.start() for t in threads]; [t.join() for t in threads]
    hostile = ends["client0"]
    posted = []  # kept alive (tensors and works) until the server is done: posted, not waited for
    link = hostile.links[0]  # its own gloo group with the server
    for tag, data in messages:
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        posted.append((tensor, link.pg.send([tensor], link.other, tag)))
    try:
        got = ends["server"].recv("client0", 1 << 20)
        results[name] = f"accepted {len(got)} bytes"
    except Exception as e:
        results[name] = f"{type(e).__name__}: {e}"
    for end in ends.values():
        end.close()
print(json.dumps(results))
"""


@pytest.mark.slow
def test_hostile_gloo_messages_are_named_and_the_receiver_survives(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOSTILE_PEER], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), text=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"the receiver died (exit {proc.returncode}): {err[-3000:]}"
    results = json.loads(out.strip().splitlines()[-1])
    expected = {
        "old framing, longer than announced": "does not start with medsplit's frame marker",
        "old framing, shorter than announced": "does not start with medsplit's frame marker",
        "frame longer than announced": "is longer than the 113 bytes of payload it announces",
        "frame shorter than announced": "announces 32881 bytes of payload but its trailer says 0",
        "frame without the secret": "is not authenticated",
    }
    for scenario, words in expected.items():
        assert results[scenario].startswith("FrameError: server: frame 0 from client0 (rank 1)"), (scenario, results[scenario])
        assert words in results[scenario], (scenario, results[scenario])


@pytest.mark.slow
def test_a_run_with_a_shared_secret_gives_the_in_process_runs_numbers(tmp_path):
    """Frames, checksums and codes around every message change no number of the run."""
    from medsplit.config import load_config
    from medsplit.train.launch import launch_local
    from medsplit.train.loop import train

    secret = tmp_path / "secret"
    secret.write_text(os.urandom(32).hex())
    base = ["task=retinopathy", "data.synthetic_size=64", "data.img_size=32", "model.name=resnet18", "train.batch_size=16",
            "train.eval_batch_size=64", "split.cut=3", "data.source=synthetic", "train.epochs=1", "train.threads=1",
            "output.tensorboard=false", f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
            f"data.cache_dir={tmp_path}/cache", "split.protocol=sequential", "split.clients=2", "split.timeout_s=60"]
    ref = json.loads((train(load_config(None, base + ["output.name=inprocess"]), quiet=True) / "metrics.json").read_text())
    cfg = load_config(None, base + ["output.name=gloo", "split.transport=gloo", f"split.secret_file={secret}"])
    launch_local(cfg, tmp_path / "runs" / "gloo", quiet=True)
    got = json.loads((tmp_path / "runs" / "gloo" / "metrics.json").read_text())
    assert got["history"] == ref["history"] or [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in got["history"]] == \
        [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in ref["history"]]
    assert got["test"]["auc"] == ref["test"]["auc"] and got["test_loss"] == ref["test_loss"] and got["bytes"] == ref["bytes"]
    links = got["transport"]["links"]
    assert got["transport"]["framing_bytes_sent"] == 64 * sum(r["messages"] for r in links if r["direction"] == "send")
