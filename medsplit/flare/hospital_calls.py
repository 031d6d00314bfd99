"""The server site's ``train()`` call of every hospital site, and what a failed call means.

A hospital whose call fails with its own error (a message it refused, its policy refusing the
job, its hijack detector's alarm) stops the run: every wait of the server ends and the other
hospitals are told to stop. So does any failure where every hospital must stay. Where hospitals
may drop out (``split.min_hospitals``), a hospital that went away
(:func:`~medsplit.flare.transport.site_went_away`: its process died, FLARE cannot reach it, its own
run stopped on an outage) ends only the server's waits on it: the server's next exchange with it
decides that it left, as over gloo (:mod:`medsplit.train.roster`), and the run goes on without it.
The call of a hospital whose process died never returns, and FLARE's controller waits for every
outstanding call when the job ends; so where hospitals may drop out the server starts ``train()``
without waiting for its answer and each hospital reports its outcome back (the server site's
``report``, into :class:`Outcomes`), and the server does not wait for a hospital that left.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

from medsplit.flare.transport import Inbox, SiteGone, site_went_away


def root_message(e: BaseException) -> str:
    msg = str(e)
    return msg if msg else "".join(traceback.format_exception_only(type(e), e)).strip()


class Outcomes:
    """What each hospital site reported of its ``train()`` (``{"result": ...}`` or ``{"error", "type"}``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._outcomes: dict[str, dict] = {}

    def put(self, site: str, outcome: dict) -> None:
        with self._cond:
            self._outcomes.setdefault(site, outcome)  # the first report counts
            self._cond.notify_all()

    def wait(self, site: str) -> dict:
        with self._cond:
            self._cond.wait_for(lambda: site in self._outcomes)
            return self._outcomes[site]


class SiteError(RuntimeError):
    """A hospital's ``train()`` that raised, as the hospital reported it (``cause_type``: its class)."""

    def __init__(self, cause_type: str, message: str):
        super().__init__(f"{cause_type}: {message}")
        self.cause_type = cause_type


class HospitalCalls:
    """Every hospital site's ``train()``, called on its own thread.

    Args:
        sites: the hospital sites, in client order.
        proxies: site -> Collab proxy.
        inbox: the server site's inbox (a failed hospital ends the waits on it, or all of them).
        call_timeout: how long a ``train()`` call may take (the whole job).
        tolerant: hospitals may drop out (``split.min_hospitals`` below the hospitals).
        outcomes: where the hospitals report their outcome (``tolerant`` runs).
    """

    def __init__(self, sites: list[str], proxies: dict, inbox: Inbox, call_timeout: float, tolerant: bool,
                 outcomes: Outcomes):
        self.sites, self.proxies, self.inbox, self.outcomes = list(sites), proxies, inbox, outcomes
        self.call_timeout, self.tolerant = call_timeout, tolerant
        self.results: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.went_away: set[str] = set()  # failed by going away, in a run that may go on without them
        self._threads = {s: threading.Thread(target=self._call, args=(s,), daemon=True) for s in self.sites}

    def start(self) -> None:
        for t in self._threads.values():
            t.start()

    def _call(self, site: str) -> None:
        try:
            if self.tolerant:
                self.proxies[site](expect_result=False).train()
                outcome = self.outcomes.wait(site)
                if "error" in outcome:
                    raise SiteError(str(outcome.get("type")), str(outcome["error"]))
                self.results[site] = outcome["result"]
            else:
                self.results[site] = self.proxies[site](timeout=self.call_timeout).train()
        except Exception as e:  # the site's own error, or FLARE's, as FLARE relays it
            self.errors[site] = root_message(e)
            if self.tolerant and site_went_away(e):
                self.went_away.add(site)
                self.inbox.fail(site, self.errors[site], stops_run=False)
                return
            self.inbox.fail(site, self.errors[site])
            self.stop_others(site, self.errors[site])

    def stop_others(self, site: str, why: str) -> None:
        """Tell every hospital but ``site`` that ``site`` stopped the run (their waits end)."""
        for other in self.sites:
            if other != site:
                try:
                    self.proxies[other](expect_result=False).stop(site, why)
                except Exception:
                    pass

    def wait(self, server_failed: bool, timeout: float, departed: set[str],
             check_alive: Callable[[str], None] | None = None, check_every: float = 2.0) -> dict[str, str]:
        """Wait for the hospitals' calls; the errors that fail the job (site -> message).

        Args:
            server_failed: the server's own part ended in error: a hospital whose process died
                never answers its call, so the others are waited for only ``timeout`` seconds
                (so are they where hospitals may drop out: one may die after its last exchange
                with the server, and its report never comes).
            timeout: seconds a site may wait for a message.
            departed: the sites the run went on without (the server's roster): not waited for,
                and their failure is not the job's when they went away.
            check_alive: raises :class:`~medsplit.flare.transport.SiteGone` for a site FLARE
                cannot reach (asked every ``check_every`` seconds of a bounded wait): a site whose
                process died is named at once, not after ``timeout``.
        """
        bounded = server_failed or self.tolerant
        unreachable: dict[str, str] = {}
        for site, t in self._threads.items():
            if site in departed:
                continue
            if not bounded:
                t.join()
                continue
            deadline = time.monotonic() + timeout
            while t.is_alive() and time.monotonic() < deadline:
                t.join(min(check_every, max(deadline - time.monotonic(), 0.0)))
                if t.is_alive() and check_alive is not None:
                    try:
                        check_alive(site)
                    except SiteGone as e:
                        unreachable[site] = str(e)
                        break
        failed = {s: m for s, m in self.errors.items() if not (s in departed and s in self.went_away)}
        for site, t in self._threads.items():
            if site not in departed and t.is_alive() and site not in failed:
                failed[site] = unreachable.get(site) or (
                    f"did not finish within {timeout:.0f} s after the server "
                    f"{'stopped' if server_failed else 'finished'} (site process gone?)")
        return failed
