"""The emulated-link files are one table on the results page, each shaped epoch beside the model and
the in-process epoch (issue 31: the WAN table in the results page)."""

import functools
import json
import statistics
from pathlib import Path

from medsplit.results.studies import load_studies
from medsplit.results.wan_study import wan_study

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_a_shaped_row_shows_its_epoch_the_models_errors_and_the_in_process_ratio():
    row = {"size": 128, "protocol": "sequential", "codec": "int8", "profile": "100M-20ms", "method": "delayer",
           "rate_bps": 100e6, "epoch_s": 14.49, "predicted_epoch_s": 13.74, "error_pct": 5.46, "predicted_corrected_epoch_s": 14.06,
           "corrected_error_pct": 3.06, "predicted_rendezvous_epoch_s": 14.38,
           "rendezvous_error_pct": 0.77, "vs_inprocess": 1.4505, "links": [{"bytes": 30e6}, {"bytes": 12e6}],
           "load_before": [1.1, 1.0, 0.9]}
    inprocess = {"size": 128, "protocol": "sequential", "codec": "int8", "profile": "in-process", "method": "none",
                 "epoch_s": 9.99, "links": [], "load_before": [1.2, 1.0, 0.9]}
    study = wan_study([(Path("wan-x.json"), {"benchmark": "wan", "microbatches": 4, "rows": [inprocess, row]})])
    shown = study.rows[1]
    assert (shown["epoch s"], shown["model s (error)"], shown["corrected model s (error)"],
            shown["x in-process"], shown["MB/epoch"], shown["micro-batches"]) == ("14.49", "13.74 (+5 %)", "14.06 (+3 %)",
                                                                                 "1.45", "42.0", 4)
    assert study.rows[0]["micro-batches"] == 1 and study.rows[0]["x in-process"] == ""  # the baseline runs without
    # files from before the chunk size was recorded used 1 MiB; the party namespaces' TCP setting is shown
    assert (shown["gloo chunk"], shown["TCP slow start after idle"], study.rows[0]["gloo chunk"]) == ("1 MiB", "on", "")
    later = wan_study([(Path("wan-y.json"), {"benchmark": "wan", "chunk_bytes": (4 << 20) + (64 << 10),
                                             "party_sysctls": {"net.ipv4.tcp_slow_start_after_idle": "0"},
                                             "rows": [row]})])
    assert (later.rows[0]["gloo chunk"], later.rows[0]["TCP slow start after idle"]) == ("4 MiB + 64 KiB", "off")


def test_every_committed_wan_file_is_in_the_one_table():
    files = sorted(p.name for p in RESULTS.glob("wan*.json"))
    studies = [s for s in load_studies(RESULTS, RESULTS.parents[1]) if s.title.startswith("Emulated hospital links")]
    assert len(studies) == 1 and studies[0].file == ", ".join(files)
    assert any(r["x in-process"] for r in studies[0].rows)


@functools.cache  # read once for the tests below, which only read it
def _quiet_studies() -> tuple:
    return tuple((p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob("wan*quiet*.json")))


def test_the_corrected_model_is_within_15_percent_of_all_quiet_shaped_epochs_but_one():
    """Issue 31's target for the link-time model, read from the committed quiet runs (load below 3).
    The model as written (one one-way delay per message) misses one of the 30 epochs with 1 MiB
    gloo chunks; corrected (two per message where a step's message took two chunks, one where it
    takes one or micro-batches pipeline the sends) none of them. Of the 19 epochs with 4 MiB
    chunks, measured after the correction, one is outside: SplitFed with fp32 gradients, 16.3 %
    below (SplitFed's hospitals overlap their transfers with each other's compute, which the model
    does not count: its SplitFed rows lie below it the more, the more bytes cross)."""
    rows = [(study.get("chunk_bytes"), study.get("microbatches", 1), r) for _, study in _quiet_studies()
            for r in study["rows"] if "corrected_error_pct" in r and r["load_before"][0] < 3]
    one_mib = [r for chunk, _, r in rows if chunk is None]
    four_mib = [r for chunk, _, r in rows if chunk is not None]
    assert (len(one_mib), len(four_mib), sum(m > 1 for _, m, _ in rows)) == (30, 19, 8)
    assert sum(abs(r["error_pct"]) > 15 for r in one_mib) == 1
    assert max(abs(r["corrected_error_pct"]) for r in one_mib) <= 15
    (outside,) = [r for r in four_mib if abs(r["corrected_error_pct"]) > 15]
    assert (outside["protocol"], outside["codec"]) == ("splitfed", "int8") and -17 < outside["corrected_error_pct"] < -15


def test_the_relay_over_100_mbit_20_ms_meets_the_issues_1_25x_target_with_int8_both_ways_and_4_mib_chunks():
    """The issue's speed target (relay, 128 px, CUT 3, int8, 100 Mbit/s 20 ms: at most 1.25x the
    in-process epoch, side by side): met by the median of ten runs with int8 activations and
    gradients and gloo chunks that hold a step's message; missed by every other setting measured
    (int8 activations alone: 1.4x and more)."""
    ratios = {}
    for _, study in _quiet_studies():
        for r in study["rows"]:
            if r["protocol"] == "sequential" and r["profile"] == "100M-20ms" and "vs_inprocess" in r:
                key = (r["codec"], study.get("microbatches", 1), bool(study.get("party_sysctls")), study.get("chunk_bytes"))
                ratios.setdefault(key, []).append(r["vs_inprocess"])
    best = ratios.pop(("int8/int8", 1, False, 4259840))
    assert len(best) == 10 and statistics.median(best) <= 1.25 and sum(r <= 1.25 for r in best) == 9
    assert all(statistics.median(v) > 1.25 for v in ratios.values())
    assert min(r for (codec, *_), v in ratios.items() if codec == "int8" for r in v) > 1.35
