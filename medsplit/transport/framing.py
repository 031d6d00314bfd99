"""Frames: how one wire-format message crosses a gloo link so that its receiver can never be
made to decode memory its peer did not send, nor be aborted by a lying length.

gloo's point-to-point receive takes a buffer of a fixed size: a message shorter than the buffer
is accepted silently (the rest of the buffer keeps whatever it held), a longer one aborts the
receiving process from C++ (``gloo::EnforceNotMet``, exit 134). So a length announced in one
message and a payload received into a buffer of that length in another lets a peer either abort
the receiver (send more) or make it decode its own leftover memory (send less).

A frame is therefore cut into gloo messages of at most :data:`CHUNK_BYTES` each, and the
receiver posts every receive into a zero-filled buffer of exactly :data:`CHUNK_BYTES`:

* nothing medsplit sends is larger than the buffer posted for it, whatever length a frame
  announces, so a lying length cannot abort the receiver;
* a chunk shorter than its slot leaves zeros, never old memory; the trailer then does not match;
* bytes past the announced end (a chunk longer than announced) are seen, because the buffer was
  zero-filled, and refused.

Layout (little-endian)::

    prefix  = magic "MSF1" | sequence number (u64) | payload length (u64)
    payload = the wire-format message
    trailer = payload length again (u64) | CRC32 of prefix + payload (u32) [| HMAC-SHA256 (32 bytes)]

The sequence number counts frames per direction of a link from 0: a lost, repeated or injected
frame is refused. With a shared secret (``split.secret_file``) the trailer carries an HMAC-SHA256
over the link's direction, the prefix (so the sequence number) and the payload, keyed per run
(:mod:`medsplit.transport.auth`): a frame from whoever does not hold the secret, or a replay of
an earlier one, is refused before its payload is decoded.

What this cannot stop: a peer that bypasses medsplit and posts one raw gloo message larger than
:data:`CHUNK_BYTES` still aborts the process it sends to (gloo enforces its buffer sizes in C++,
there is no hook to refuse politely); the run then stops, and nothing is decoded.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from typing import Callable

import numpy as np
import torch

from medsplit.split.wire import WireFormatError
from medsplit.transport.base import TransportError

MAGIC = b"MSF1"
#: The size of every receive buffer; no gloo message medsplit sends is larger. The receiver posts
#: a frame's first receive before it knows the frame's length and the rest only once the first
#: chunk has arrived, and gloo's send waits for the receiver's ready notice: every frame over one
#: chunk pays a notice's one-way delay back and its data's one-way delay again, on top of the first
#: chunk's. So one chunk should hold what a training step sends: 4 MiB (a batch of 16 ResNet-34
#: activations at 128 px and CUT 3 is exactly 4 MiB in fp32 and 1 MiB in int8) plus 64 KiB for
#: the frame, the wire header and the codec's scales. With 1 MiB chunks an int8 activation or
#: gradient (1 MiB + under 1 KB) took two, which cost 20 ms a message at 20 ms RTT (issue 31).
#: A receive costs a zero-filled buffer of this size and a scan of it (0.4 ms on this machine).
CHUNK_BYTES = (4 << 20) + (64 << 10)
PREFIX = struct.Struct("<4sQQ")
TRAILER = struct.Struct("<QI")
MAC_BYTES = 32


class FrameError(WireFormatError, TransportError):
    """A frame that is not what its peer announced: wrong magic, length, checksum, sequence number
    or authentication code. A WireFormatError (the bytes are malformed) and a TransportError (the
    link cannot go on: after a bad frame the stream has lost its place), so that the Channel names
    the link, epoch and step around it like any other receive failure."""


def overhead(authenticated: bool) -> int:
    """Bytes a frame adds to its payload (prefix and trailer)."""
    return PREFIX.size + TRAILER.size + (MAC_BYTES if authenticated else 0)


def chunk_count(payload_bytes: int, authenticated: bool) -> int:
    return -(-(payload_bytes + overhead(authenticated)) // CHUNK_BYTES)


def encode_frame(payload: bytes, seq: int, mac: Callable[..., bytes] | None = None) -> bytes:
    """The frame around ``payload``; ``mac(prefix, payload)`` (if given) authenticates both.

    One copy of the payload (into the frame); the checksum and code are computed on the parts.
    """
    prefix = PREFIX.pack(MAGIC, seq, len(payload))
    trailer = TRAILER.pack(len(payload), zlib.crc32(payload, zlib.crc32(prefix)))
    return b"".join([prefix, payload, trailer] + ([mac(prefix, payload)] if mac is not None else []))


def chunks(frame: bytes) -> list[torch.Tensor]:
    """``frame`` cut into the gloo messages that carry it (views, no copy)."""
    if not frame:  # never made by encode_frame; a test's (or a hostile peer's) empty message
        return [torch.empty(0, dtype=torch.uint8)]
    with warnings.catch_warnings():  # read-only buffer: gloo only reads it
        warnings.simplefilter("ignore", UserWarning)
        data = torch.frombuffer(frame, dtype=torch.uint8)
    return list(data.split(CHUNK_BYTES))


def _zeros(n: int) -> torch.Tensor:
    """A zero-filled byte buffer. numpy's zeros is calloc: a large one comes as fresh pages the
    kernel has zeroed, so it costs no more than ``torch.empty`` (which gloo would fill anyway)."""
    return torch.from_numpy(np.zeros(n, dtype=np.uint8))


def receive_frame(receive: Callable[[list[torch.Tensor]], None], max_bytes: int, expected_seq: int,
                  where: str, verify: Callable[[bytes, bytes], bool] | None = None) -> bytes:
    """Receive one frame and return its payload, or raise :class:`FrameError` naming ``where``.

    Args:
        receive: posts a receive into each of the given buffers (in order) and waits for all;
            every buffer is exactly :data:`CHUNK_BYTES` long.
        max_bytes: the largest payload accepted; checked before anything past the first chunk is
            allocated or received.
        expected_seq: the sequence number this frame must carry.
        where: who sent it to whom, for the error message ("server: frame from client1").
        verify: checks the authentication code (``verify(prefix, payload, code)``); None when the
            run has no shared secret.
    """
    first = _zeros(CHUNK_BYTES)
    receive([first])
    raw = first.numpy()
    magic, seq, length = PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise FrameError(f"{where} does not start with medsplit's frame marker (got {bytes(magic)!r}): "
                         "not a medsplit peer, or the link lost its place after an earlier bad frame")
    if length > max_bytes:
        raise FrameError(f"{where} announces a payload of {length} bytes, over the limit of {max_bytes} bytes "
                         "for what is expected next")
    mac_bytes = MAC_BYTES if verify is not None else 0
    total = PREFIX.size + length + TRAILER.size + mac_bytes
    n = -(-total // CHUNK_BYTES)
    if n > 1:
        buffer = _zeros(n * CHUNK_BYTES)
        buffer[:CHUNK_BYTES] = first
        receive(list(buffer[CHUNK_BYTES:].split(CHUNK_BYTES)))
        raw = buffer.numpy()
    if raw[total:].any():
        raise FrameError(f"{where} is longer than the {length} bytes of payload it announces "
                         f"(bytes arrived past its end)")
    end = PREFIX.size + length
    trailer_length, crc = TRAILER.unpack_from(raw, end)
    if trailer_length != length:
        raise FrameError(f"{where} announces {length} bytes of payload but its trailer says {trailer_length}: "
                         "it is shorter or longer than announced")
    prefix, payload = raw[: PREFIX.size], raw[PREFIX.size : end]  # views: checked in place
    if zlib.crc32(payload, zlib.crc32(prefix)) != crc:
        raise FrameError(f"{where} fails its CRC32 checksum ({length} bytes announced): truncated or corrupted")
    if verify is not None and not verify(prefix, payload, raw[end + TRAILER.size : total].tobytes()):
        raise FrameError(f"{where} is not authenticated: its HMAC does not match the run's key "
                         "(a party without split.secret_file's secret, or a message of another run)")
    if seq != expected_seq:
        what = "replayed or repeated" if seq < expected_seq else "out of sequence (frames were lost or injected)"
        raise FrameError(f"{where} carries sequence number {seq}, expected {expected_seq}: {what}")
    return payload.tobytes()

