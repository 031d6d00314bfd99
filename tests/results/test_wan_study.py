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


def test_the_corrected_model_is_within_15_percent_of_every_quiet_shaped_epoch():
    """Issue 31's target for the link-time model, read from the committed quiet runs (load below 3).
    The model as written (one one-way delay per message) misses one unpipelined epoch; the
    corrected one (two per message, one where micro-batches pipeline the sends) none. The 8
    unpipelined runs measured after the correction was fitted (int8 gradients, 2026-12-07) are
    within 15 % of it too."""
    import json

    studies = [(p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob("wan*quiet*.json"))]
    rows = [(name, study.get("microbatches", 1), r) for name, study in studies for r in study["rows"]
            if "corrected_error_pct" in r and r["load_before"][0] < 3]
    plain = [r for _, m, r in rows if m == 1]
    pipelined = [r for _, m, r in rows if m > 1]
    unseen = [r for name, m, r in rows if m == 1 and "int8-gradients" in name]
    assert (len(plain), len(pipelined), len(unseen)) == (22, 8, 8)
    assert sum(abs(r["error_pct"]) > 15 for r in plain) == 1
    assert max(abs(r["corrected_error_pct"]) for r in plain + pipelined) <= 15
    assert max(abs(r["corrected_error_pct"]) for r in unseen) <= 15


def test_the_relay_over_100_mbit_20_ms_stays_above_the_issues_1_25x_target():
    """The issue's speed target (relay, 128 px, CUT 3, int8, 100 Mbit/s 20 ms: at most 1.25x the
    in-process epoch) is missed in the committed runs, and the docs say so: the best setting's
    median (int8 both ways) is above 1.25x; one single run came in below it (its in-process epoch was
the slowest of them)."""
    import json
    import statistics

    ratios = {}
    for p in sorted(RESULTS.glob("wan-128px*quiet*.json")):
        study = json.loads(p.read_text())
        for r in study["rows"]:
            if r["protocol"] == "sequential" and r["profile"] == "100M-20ms" and "vs_inprocess" in r:
                key = (r["codec"], study.get("microbatches", 1), bool(study.get("party_sysctls")))
                ratios.setdefault(key, []).append(r["vs_inprocess"])
    medians = {key: statistics.median(v) for key, v in ratios.items()}
    assert 1.25 < min(medians.values()) < 1.3 and min(medians, key=medians.get)[0] == "int8/int8"
    assert min(ratios[("int8", 1, False)]) > 1.4  # activations alone compressed: 1.45x
    assert sum(r <= 1.25 for v in ratios.values() for r in v) == 1
