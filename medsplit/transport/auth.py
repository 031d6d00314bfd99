"""Optional shared-secret authentication for the gloo transport (``split.secret_file``).

Every party reads the same secret from its own file. Before the process group forms, each
party's check-in and the server's verdict are authenticated with the secret itself (so a process
without it is named and refused at start-up); the verdict carries a fresh random nonce, from
which every party derives the run's key. Every frame then carries an HMAC-SHA256 under that key
over the link's direction, its sequence number and its payload (:mod:`~.framing`): a frame from
a process without the secret, one moved to another link, or a replay from this run or an
earlier one is refused before it is decoded.

Authentication only: the bytes still cross in the clear (gloo has no encryption here). Use
FLARE, a VPN or an SSH tunnel where activations must not be readable on the network.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from medsplit.transport.base import TransportError

SECRET_MIN_BYTES = 16


def read_secret(path: str | Path) -> bytes:
    """The shared secret in ``path`` (surrounding whitespace stripped), with a clear error."""
    path = Path(path).expanduser()
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise TransportError(f"split.secret_file {str(path)!r} cannot be read: {e.strerror or e}") from e
    if len(secret) < SECRET_MIN_BYTES:
        raise TransportError(f"split.secret_file {str(path)!r} holds {len(secret)} bytes; a shared secret needs at least "
                             f"{SECRET_MIN_BYTES} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > FILE`)")
    return secret


def _mac(key: bytes, label: bytes, *parts) -> bytes:
    code = hmac.new(key, label + b"\0", hashlib.sha256)
    for part in parts:
        code.update(part)
    return code.digest()


def sign_record(secret: bytes, record: bytes) -> str:
    """Authenticates a start-up record (a check-in or the server's verdict) with the secret."""
    return _mac(secret, b"medsplit start-up record", record).hex()


def record_signed(secret: bytes, record: bytes, proof: object) -> bool:
    return isinstance(proof, str) and hmac.compare_digest(sign_record(secret, record), proof)


class RunKey:
    """The run's key, derived from the secret and the run's nonce and config hash, so a frame of
    one run never verifies in another.

    Args:
        secret: the shared secret.
        nonce: the server's fresh random nonce for this run (sent in its verdict).
        config_hash: the run's config hash (every party's must agree).
    """

    def __init__(self, secret: bytes, nonce: str, config_hash: str):
        self._key = _mac(secret, b"medsplit gloo run key", f"{nonce}/{config_hash}".encode())

    def mac(self, sender: str, receiver: str, *parts) -> bytes:
        """The code for ``parts`` (a frame's prefix and payload) sent from ``sender`` to ``receiver``."""
        return _mac(self._key, f"{sender}->{receiver}".encode(), *parts)

    def verify(self, sender: str, receiver: str, *parts_then_code) -> bool:
        *parts, code = parts_then_code
        return hmac.compare_digest(self.mac(sender, receiver, *parts), code)
