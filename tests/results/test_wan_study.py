"""The emulated-link files are one table on the results page, each shaped epoch beside the model and
the in-process epoch (issue 31: the WAN table in the results page)."""

from pathlib import Path

from medsplit.results.studies import load_studies
from medsplit.results.wan_study import wan_study

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_a_shaped_row_shows_its_epoch_the_models_errors_and_the_in_process_ratio():
    row = {"size": 128, "protocol": "sequential", "codec": "int8", "profile": "100M-20ms", "method": "delayer",
           "epoch_s": 14.49, "predicted_epoch_s": 13.74, "error_pct": 5.46, "predicted_corrected_epoch_s": 14.06,
           "corrected_error_pct": 3.06, "predicted_rendezvous_epoch_s": 14.38,
           "rendezvous_error_pct": 0.77, "vs_inprocess": 1.4505, "links": [{"bytes": 30e6}, {"bytes": 12e6}],
           "load_before": [1.1, 1.0, 0.9]}
    inprocess = {"size": 128, "protocol": "sequential", "codec": "int8", "profile": "in-process", "method": "none",
                 "epoch_s": 9.99, "links": [], "load_before": [1.2, 1.0, 0.9]}
    study = wan_study([(Path("wan-x.json"), {"benchmark": "wan", "microbatches": 4, "rows": [inprocess, row]})])
    shown = study.rows[1]
    assert (shown["epoch s"], shown["model s (error)"], shown["corrected model s (error)"], shown["model + rendezvous s (error)"],
            shown["x in-process"], shown["MB/epoch"], shown["micro-batches"]) == ("14.49", "13.74 (+5 %)", "14.06 (+3 %)",
                                                                                 "14.38 (+1 %)", "1.45", "42.0", 4)
    assert study.rows[0]["micro-batches"] == 1 and study.rows[0]["x in-process"] == ""  # the baseline runs without


def test_every_committed_wan_file_is_in_the_one_table():
    files = sorted(p.name for p in RESULTS.glob("wan*.json"))
    studies = [s for s in load_studies(RESULTS, RESULTS.parents[1]) if s.title.startswith("Emulated hospital links")]
    assert len(studies) == 1 and studies[0].file == ", ".join(files)
    assert any(r["x in-process"] for r in studies[0].rows)


def test_the_corrected_model_is_within_15_percent_of_every_quiet_unpipelined_epoch_and_above_the_pipelined_ones():
    """Issue 31's target for the link-time model, read from the committed quiet runs (load below 3).
    Without micro-batches the model as written misses one of them, the corrected one (two one-way
    delays per message) none. With micro-batches the link partly hides behind compute, which the
    model does not count: there it is an upper bound, and the measured epochs lie below it (the
    furthest, SplitFed with two micro-batches, 15.4 % below: outside the 15 %)."""
    import json

    studies = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("wan*quiet*.json"))]
    rows = [(study.get("microbatches", 1), r) for study in studies for r in study["rows"]
            if "corrected_error_pct" in r and r["load_before"][0] < 3]
    plain = [r for m, r in rows if m == 1]
    pipelined = [r for m, r in rows if m > 1]
    assert len(plain) == 14 and len(pipelined) == 3
    assert sum(abs(r["error_pct"]) > 15 for r in plain) == 1
    assert max(abs(r["corrected_error_pct"]) for r in plain) <= 15
    assert all(r["epoch_s"] < r["predicted_corrected_epoch_s"] for r in pipelined)
    assert min(r["corrected_error_pct"] for r in pipelined) < -15  # the target is missed there, and said so
