"""The attack report in plain words (issue 29, item 6): a summary without raw keys, a compact
table of what each privacy number covers, figure labels in words, and threat models of the
attacks that ran on the report's own task only."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import torch

from medsplit.report.attack_report import write_attack_report
from medsplit.report.attack_words import defence_words, run_words, setting_labels
from medsplit.report.tables import without_empty_columns

RAW_KEY = re.compile(r"\b[a-z-]+/[a-z]+/[\d.]+/\d+\b")  # attack/defence/strength/seed, e.g. fsha/none/0/0
FUNDUS_LABEL_LEAKAGE = "label-private (U-shaped) training of the fundus classifier"


class _Tables(HTMLParser):
    """Every table of a page as (header cells, body rows)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._row = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self.tables:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _row(attack, defence, strength, **values):
    return {"attack": attack, "defence": defence, "strength": strength, "seed": 0, **values}


def attack_results(task: str) -> dict:
    base = {"ssim": 0.3, "mse": 0.02, "utility": 0.8, "baseline_ssim": 0.5, "baseline_mse": 0.03, "dcor": 0.9,
            "dcor2_unbiased": 0.4}
    rows = [_row("inversion", "none", 0, **base), _row("inversion", "laplace", 0.5, **base, **{"privacy.epsilon_per_release_inference": 2.0}),
            _row("inversion", "dpsgd", 1.0, **base, **{"privacy.epsilon": 2.5}),
            _row("fsha", "none", 0, ssim=0.2, mse=0.04, iterations=12, utility=0.5)]
    if task == "retinopathy":
        rows.append(_row("label-leakage", "none", 0, norm_auc=0.98, cosine_auc=1.0))
    recon = lambda: torch.rand(2, 1, 8, 8)  # noqa: E731
    laplace_notes = {"mechanism": "per-sample L1 clip", "scope": "inference: epsilon C/b = 2 per release of one image"}
    dpsgd_notes = {"covers": "the parameters of part 'client'", "normalisation": "GroupNorm for BatchNorm",
                   "not_covered": "the activations the client sends"}
    extras = {
        "inversion/none/0/0": {"recon": recon(), "history": [{"iteration": 0, "ssim": 0.1, "mse": 0.05}]},
        "inversion/laplace/0.5/0": {"recon": recon(), "privacy_notes": laplace_notes},
        "inversion/dpsgd/1.0/0": {"recon": recon(), "privacy_notes": dpsgd_notes},
        "fsha/none/0/0": {"recon": recon(), "history": [{"iteration": 0, "ssim": 0.2, "mse": 0.04}],
                          "detector": {"flagged": True, "flagged_at_step": 9, "probes": 4, "probe_every": 3}},
    }
    return {"task": task, "profile": "tiny", "rows": rows, "extras": extras, "skipped": [], "seconds": 1.0,
            "data_source": "synthetic", "originals": torch.rand(2, 1, 8, 8), "profile_config": {"name": "tiny"},
            "device": "cpu"}


def _section(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    end = html.find('<section', start)
    return html[start:end if end > 0 else None]


def test_names_in_words():
    assert defence_words("dpsgd", "1.0") == "DP-SGD (sigma 1)" and defence_words("none", 0) == "no defence"
    assert run_words("fsha/none/0/0") == "FSHA, no defence, seed 0"
    assert setting_labels(["none/0/0", "nopeek/1.0/0"]) == {"none/0/0": "no defence", "nopeek/1.0/0": "NoPeek (alpha 1)"}
    assert setting_labels(["none/0/0", "none/0/1"])["none/0/1"] == "no defence, seed 1"
    assert without_empty_columns([{"a": 1, "b": None}, {"a": 2, "b": ""}]) == [{"a": 1}, {"a": 2}]


def test_the_summary_and_tables_hold_no_raw_keys_and_no_columns_of_dashes(tmp_path):
    html = write_attack_report(attack_results("lungs"), tmp_path).read_text()
    summary = unescape(_section(html, "summary"))
    assert not RAW_KEY.search(summary), RAW_KEY.search(summary)
    for raw in ("dcor2_unbiased", "not_covered", "privacy_notes"):
        assert raw not in summary
    assert "Hijack detector: on FSHA (seed 0) alarm at step 9" in summary
    parser = _Tables()
    parser.feed(html)
    for table in parser.tables:
        header, body = table[0], table[1:]
        for i, name in enumerate(header):
            assert any(row[i] not in ("\u2014", "") for row in body), f"column {name!r} holds only dashes"
    notes = next(t for t in parser.tables if "what its privacy number covers" in t[0])
    assert notes[0] == ["defence", "attacks", "what its privacy number covers"]  # one text column, not one per fact
    dpsgd = next(r for r in notes[1:] if r[0] == "DP-SGD (sigma 1)")
    assert "the epsilon covers: the parameters" in dpsgd[2] and "it does not cover: the activations" in dpsgd[2]


def test_each_task_s_report_states_the_threat_models_of_its_own_attacks(tmp_path):
    lungs = unescape(write_attack_report(attack_results("lungs"), tmp_path).read_text())
    threats = _section(lungs, "threat-models")
    assert "the lung U-Net cut U-shaped" in threats and "Malicious server" in threats
    assert FUNDUS_LABEL_LEAKAGE not in lungs and "SDAR (Zhu" not in threats  # neither ran here
    fundus = unescape(write_attack_report(attack_results("retinopathy"), tmp_path).read_text())
    assert FUNDUS_LABEL_LEAKAGE in _section(fundus, "threat-models")
    assert "Label leakage (an honest-but-curious server" in _section(fundus, "summary")
