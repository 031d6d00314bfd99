"""The check-in before a gloo group forms: every party announces its rank, the number of parties
it expects and its config (a hash per key) in the rendezvous store, and the server answers all of
them with one verdict, within ``split.timeout_s``.

Why before the group forms: gloo's own set-up waits for every rank it was told about, and with a
duplicated rank or another ``split.clients`` it waits (or hangs) with nothing that names the
party at fault. The check-in names it: a rank claimed twice (both claimants), a rank out of range,
another number of parties, the config keys that differ (from per-key hashes: no value crosses),
a party that never checked in, and, with ``split.secret_file``, a party without the secret.

The verdict carries the run's nonce (the per-run key of :mod:`~medsplit.transport.auth`) and which
arrival holds each rank; a party that checks in after the verdict finds its rank taken and says by
whom.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time

from medsplit.transport import auth
from medsplit.transport.base import TransportError

ARRIVALS = "medsplit/checkin/arrivals"
RECORD = "medsplit/checkin/{}"
VERDICT = "medsplit/checkin/verdict"
READ = "medsplit/checkin/read"  # how many parties have read the verdict
READ_GRACE_S = 5.0
POLL_S = 0.05


def describe(record: dict) -> str:
    """``client0 (rank 1, host h, pid 12)``: who a check-in record says it is."""
    return f"{record.get('name')} (rank {record.get('rank')}, host {record.get('host')}, pid {record.get('pid')})"


def _clients(world_size: object) -> str:
    return f"split.clients={world_size - 1}" if isinstance(world_size, int) else "unknown split.clients"


def _encode(record: dict, secret: bytes | None) -> bytes:
    body = json.dumps(record, sort_keys=True)
    return json.dumps({"record": body, "proof": auth.sign_record(secret, body.encode()) if secret else None}).encode()


def _decode(raw: bytes, secret: bytes | None) -> tuple[dict, bool]:
    """A stored record and whether it is authenticated (always True without a secret)."""
    try:
        outer = json.loads(raw)
        record = json.loads(outer["record"])
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except (ValueError, KeyError, TypeError) as e:
        return {"name": "?", "rank": "?", "host": "?", "pid": "?", "malformed": str(e)}, False
    signed = secret is None or auth.record_signed(secret, outer["record"].encode(), outer.get("proof"))
    return record, signed


def differing_keys(mine: dict, theirs: object) -> list[str]:
    """Config keys whose hashes differ (or that only one side has)."""
    if not isinstance(theirs, dict):
        return ["(no per-key hashes sent)"]
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


def judge(mine: dict, arrivals: dict[int, tuple[dict, bool]], names: dict[int, str]) -> tuple[list[str], dict[int, int]]:
    """Problems with the check-ins so far, and the arrival holding each rank.

    Args:
        mine: the server's own record.
        arrivals: arrival number -> (record, authenticated).
        names: every expected rank but the server's -> party name.
    """
    problems, holders, claims = [], {}, {}
    for n, (record, signed) in sorted(arrivals.items()):
        who = describe(record)
        if record.get("malformed"):
            problems.append(f"check-in {n} is malformed ({record['malformed']})")
            continue
        if not signed:
            problems.append(f"{who} is not authenticated: its check-in does not carry the proof of split.secret_file's "
                            "secret (no secret file, or another secret)")
            continue
        rank = record.get("rank")
        claims.setdefault(rank, []).append(record)
        if rank not in names:
            problems.append(f"{who} claims rank {rank}, but the server expects hospitals at ranks 1..{len(names)} "
                            f"({_clients(mine['world_size'])})")
            continue
        holders.setdefault(rank, n)
        if record.get("world_size") != mine["world_size"]:
            problems.append(f"{who} expects {record.get('world_size')} parties ({_clients(record.get('world_size'))}), "
                            f"the server {mine['world_size']} ({_clients(mine['world_size'])})")
        if bool(record.get("authenticated")) != bool(mine.get("authenticated")):
            uses = lambda r: "uses split.secret_file" if r.get("authenticated") else "has no split.secret_file"  # noqa: E731
            problems.append(f"{who} {uses(record)}, the server {uses(mine)}")
        if record.get("config_hash") != mine.get("config_hash"):
            keys = differing_keys(mine.get("config_keys", {}), record.get("config_keys"))
            problems.append(f"{who} has config hash {record.get('config_hash')}, the server {mine.get('config_hash')}: "
                            f"the configs differ in {', '.join(keys)}")
    for rank, records in sorted(claims.items(), key=lambda kv: str(kv[0])):
        if len(records) > 1:
            problems.append(f"rank {rank} is claimed by {len(records)} processes: " + " and ".join(describe(r) for r in records)
                            + " (a duplicated --rank)")
    return problems, holders


def server_check_in(store, mine: dict, names: dict[int, str], timeout_s: float, secret: bytes | None,
                    deadline: float | None = None) -> dict:
    """Collect every hospital's check-in and publish one verdict (refusing names every fault).

    Args:
        store: the rendezvous store (rank 0 hosts it).
        mine: the server's record (name, rank, world_size, host, pid, config_hash, config_keys).
        names: each hospital's rank -> name.
        timeout_s: how long to wait for hospitals that have not checked in (``split.timeout_s``).
        secret: the shared secret, or None.
        deadline: when to stop waiting (``time.monotonic()``; default ``timeout_s`` from now):
            the start-up's deadline, of which the check-in is one part.

    Returns:
        The verdict (``nonce``; ``holders``: rank -> arrival).

    Raises:
        TransportError: the run is refused; the message names every party at fault.
    """
    deadline = time.monotonic() + timeout_s if deadline is None else deadline
    arrivals: dict[int, tuple[dict, bool]] = {}
    while True:
        count = store.add(ARRIVALS, 0)
        for n in range(1, count + 1):
            if n not in arrivals and store.check([RECORD.format(n)]):
                arrivals[n] = _decode(store.get(RECORD.format(n)), secret)
        problems, holders = judge(mine, arrivals, names)
        pending = len(arrivals) < count  # claimed an arrival number, record not written yet
        missing = [r for r in names if r not in holders]
        if (problems and not pending) or not (missing or pending) or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    if missing:
        problems.append(", ".join(f"{names[r]} (rank {r})" for r in missing)
                        + (" had not checked in yet" if problems else f" did not check in within {timeout_s:g} s (split.timeout_s)"))
    verdict = {"ok": not problems, "reason": "; ".join(problems), "nonce": secrets.token_hex(16),
               "holders": {str(r): n for r, n in holders.items()},
               "parties": {str(r): describe(arrivals[n][0]) for r, n in holders.items()}}
    store.set(VERDICT, _encode(verdict, secret))
    if problems:
        # The store lives in this process: give those that checked in a moment to read why
        # before it goes (each says it has read; at most READ_GRACE_S).
        until = time.monotonic() + READ_GRACE_S
        while store.add(READ, 0) < store.add(ARRIVALS, 0) and time.monotonic() < until:
            time.sleep(POLL_S)
        raise TransportError(f"server: refused the run at check-in: {verdict['reason']}")
    return verdict


def client_check_in(store, mine: dict, timeout_s: float, secret: bytes | None, deadline: float | None = None) -> dict:
    """Check in with the server and wait for its verdict (see :func:`server_check_in`).

    Raises:
        TransportError: the server refused the run (its reason), gave no verdict in time, its
            verdict is not authenticated, or this party's rank is held by another process.
    """
    n, verdict = _post_and_await(store, ARRIVALS, RECORD, VERDICT, mine, timeout_s if deadline is None else
                                 max(0.5, deadline - time.monotonic()), secret, what="check-in verdict",
                                 late=f"the server gave no check-in verdict within {timeout_s:g} s (split.timeout_s)",
                                 refused="the server refused this run", read_counter=READ)
    name = mine["name"]
    holder = verdict.get("holders", {}).get(str(mine["rank"]))
    if holder != n:
        raise TransportError(f"{name}: rank {mine['rank']} is already taken by "
                             f"{verdict.get('parties', {}).get(str(mine['rank']), 'another process')} (a duplicated --rank)")
    return verdict


# ---- a restarted hospital asks to join the run again ----------------------------------------
REJOINS = "medsplit/rejoin/arrivals"
REJOIN_RECORD = "medsplit/rejoin/{}"
REJOIN_ANSWER = "medsplit/rejoin/{}/answer"


def request_rejoin(store, mine: dict, wait_s: float, secret: bytes | None) -> dict:
    """A restarted hospital checks in again (the same record as :func:`client_check_in`, signed
    with ``split.secret_file``'s secret) and waits up to ``wait_s`` for the server's answer, which
    comes at the run's next epoch boundary.

    Returns:
        The admission: ``nonce`` (the run's), ``incarnations`` (rank -> how often it has joined,
        this party's new one included) and ``present`` (the ranks it forms links with).

    Raises:
        TransportError: refused (the server's reason), no answer in time, or not authenticated.
    """
    _, answer = _post_and_await(store, REJOINS, REJOIN_RECORD, REJOIN_ANSWER, mine, wait_s, secret,
                                what="answer to its rejoin request",
                                late=f"the server did not admit this restarted party within {wait_s:g} s "
                                     "(it answers at the next epoch boundary)",
                                refused="the server refused to let it rejoin")
    return answer


def _post_and_await(store, counter: str, record_key: str, answer_key: str, mine: dict, wait_s: float,
                    secret: bytes | None, what: str, late: str, refused: str,
                    read_counter: str | None = None) -> tuple[int, dict]:
    """Post ``mine`` (signed) as arrival ``n`` of ``counter`` and wait up to ``wait_s`` for the
    server's signed answer (``answer_key``, formatted with ``n`` where it has a ``{}``); returns
    ``(n, answer)``. ``read_counter``: counted up once the answer is read, whatever it says (a
    refusing server waits for that before its store goes). Raises :class:`TransportError` naming
    this party: no answer in time (``late``), an answer not signed with the run's secret, or a
    refusal (``refused``: its reason)."""
    name = mine["name"]
    n = store.add(counter, 1)
    store.set(record_key.format(n), _encode(mine, secret))
    key = answer_key.format(n)
    try:
        store.wait([key], datetime.timedelta(seconds=wait_s))
        raw = store.get(key)
    except Exception as e:  # noqa: BLE001 - the store raises several C++ error types
        raise TransportError(f"{name} (rank {mine['rank']}): {late}: {e}") from e
    if read_counter is not None:
        store.add(read_counter, 1)
    answer, signed = _decode(raw, secret)
    if not signed or answer.get("malformed"):
        raise TransportError(f"{name}: the {what} in the rendezvous store is not authenticated by "
                             "split.secret_file's secret (another server, or a process without the secret wrote it)")
    if not answer.get("ok"):
        raise TransportError(f"{name}: {refused}: {answer.get('reason')}")
    return n, answer


def rejoin_requests(store, seen: int, mine: dict, names: dict[int, str], secret: bytes | None) -> list[tuple[int, dict, list[str]]]:
    """The rejoin requests after number ``seen`` whose record is written: ``(number, record,
    problems)``, each judged as a check-in (:func:`judge`: rank, parties, config keys, secret)."""
    found = []
    for n in range(seen + 1, store.add(REJOINS, 0) + 1):
        if not store.check([REJOIN_RECORD.format(n)]):
            break  # claimed a number, record not written yet: the next boundary reads it
        record, signed = _decode(store.get(REJOIN_RECORD.format(n)), secret)
        found.append((n, record, judge(mine, {n: (record, signed)}, names)[0]))
    return found


def answer_rejoin(store, n: int, answer: dict, secret: bytes | None) -> None:
    """The server's answer to rejoin request ``n`` (see :func:`request_rejoin`)."""
    store.set(REJOIN_ANSWER.format(n), _encode(answer, secret))
