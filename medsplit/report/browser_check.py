"""Open reports in headless Chromium and check what a reader would see.

``python -m medsplit.report.browser_check reports/*.html [--out reports/screenshots]``
loads every page at 1400 CSS pixels wide and checks that

- neither the page nor any table or code block scrolls sideways (the elements that stick
  out are named when one does),
- every image decoded (``naturalWidth > 0``),
- nothing was requested from anywhere but the file itself and ``data:`` URIs (the reports
  must open offline), neither by the browser nor in ``src``/``href`` attributes of
  ``img``/``script``/``link``/``iframe`` elements,

and saves a full-page PNG screenshot per report for a person to look at. Screenshots go to
``reports/screenshots/`` by default, which git ignores. Exit status 1 when a check fails,
2 when Chromium is missing (Debian: ``apt-get install chromium``).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so
nothing beyond the standard library is needed and no port is opened.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["check_report", "find_chromium", "ReportCheck", "WIDTH"]

WIDTH = 1400
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
          "--disable-sync", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio"]

_PAGE_STATE = """(() => {
  const root = document.documentElement;
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.right > root.clientWidth + 1 && wide.length < 8) wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' right=' + Math.round(r.right));
  }
  const scrollers = [...document.querySelectorAll('.table-wrap, pre')].filter(e => e.scrollWidth > e.clientWidth + 1)
      .map(e => (e.previousElementSibling ? e.previousElementSibling.textContent.slice(0, 60) : e.tagName.toLowerCase()) + ' (' + e.scrollWidth + ' px)');
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => (i.alt || i.src.slice(0, 60)));
  const remote = [...document.querySelectorAll('img[src], script[src], link[href], iframe[src], source[src]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#'));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, height: root.scrollHeight,
          images: document.images.length, broken, remote, wide, scrollers, title: document.title};
})()"""


@dataclass
class ReportCheck:
    """What the browser saw on one report page."""

    path: Path
    screenshot: Path | None = None
    images: int = 0
    height: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Browser:
    """One headless Chromium, talked to over the DevTools pipe (fd 3 in, fd 4 out)."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child: the protocol wants our ends on fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [executable, *_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # close_fds runs after preexec_fn, so the kept fds are the ones wire_fds made
            pass_fds=(3, 4), preexec_fn=wire_fds,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.time() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it start? try running it by hand)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        for k, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(k)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)


def check_report(html: Path, out_dir: Path | None, executable: str | None = None, width: int = WIDTH) -> ReportCheck:
    """Load ``html`` in headless Chromium at ``width`` px and check it (see the module docstring).

    Args:
        html: the report file.
        out_dir: where the full-page screenshot goes (``<name>.png``); ``None`` takes none.
        executable: Chromium to use; found on PATH when ``None``.
        width: viewport width in CSS pixels.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    html = Path(html).resolve()
    result = ReportCheck(path=html)
    with tempfile.TemporaryDirectory(prefix="medsplit-chromium-") as profile:
        browser = _Browser(executable, Path(profile))
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            browser.events.clear()
            browser.send("Page.navigate", {"url": html.as_uri()}, session=session)
            browser.wait_for("Page.loadEventFired")
            state = browser.send("Runtime.evaluate", {"expression": _PAGE_STATE, "returnByValue": True},
                                 session=session)["result"]["value"]
            requested = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
            remote = [u for u in requested if not u.startswith(("data:", "file:", "about:"))]
            failed = [e["params"].get("errorText", "?") for e in browser.events if e.get("method") == "Network.loadingFailed"]
            result.images, result.height = state["images"], state["height"]
            if state["scrollWidth"] > state["clientWidth"]:
                result.problems.append(f"scrolls sideways at {width} px: page is {state['scrollWidth']} px wide; "
                                       f"too wide: {', '.join(state['wide']) or '?'}")
            if state["scrollers"]:
                result.problems.append(f"{len(state['scrollers'])} table(s) or code block(s) scroll sideways: {state['scrollers'][:3]}")
            if state["broken"]:
                result.problems.append(f"{len(state['broken'])} image(s) did not load: {state['broken'][:3]}")
            if remote or state["remote"]:
                result.problems.append(f"remote resources: {sorted(set(remote + state['remote']))[:5]}")
            if failed:
                result.problems.append(f"{len(failed)} request(s) failed: {failed[:3]}")
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                shot = browser.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": width, "height": state["height"], "scale": 1}}, session=session)
                result.screenshot = out_dir / f"{html.stem}.png"
                result.screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsplit.report.browser_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="*", type=Path, help="HTML reports (default: reports/*.html)")
    parser.add_argument("--out", type=Path, default=Path("reports/screenshots"), help="screenshot folder (git ignores reports/)")
    parser.add_argument("--width", type=int, default=WIDTH, help="viewport width in CSS pixels")
    args = parser.parse_args(argv)
    executable = find_chromium()
    if executable is None:
        print("no chromium on PATH: install it (Debian: apt-get install chromium) to check the reports", file=sys.stderr)
        return 2
    pages = args.reports or sorted(Path("reports").glob("*.html"))
    if not pages:
        print("no reports to check (none given and reports/*.html is empty)", file=sys.stderr)
        return 1
    failures = 0
    for page in pages:
        check = check_report(page, args.out, executable, args.width)
        status = "ok  " if check.ok else "FAIL"
        print(f"{status} {page}  ({check.images} images, {check.height} px tall) -> {check.screenshot}")
        for problem in check.problems:
            print(f"     {problem}")
        failures += not check.ok
    print(f"{len(pages) - failures} of {len(pages)} reports passed at {args.width} px")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
