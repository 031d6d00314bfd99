"""The README and the documentation site say what the code does.

- the README stays short and undated, identifies the original study and sends reproduce
  commands through ``make data`` / ``MEDSPLIT_DATA``, not this repository's CI folder;
- its results table holds the numbers of the committed results files;
- its console example is what a real run prints (slow: it runs it);
- the site builds with ``mkdocs build --strict`` (skipped only where mkdocs is not installed:
  ``pip install -e ".[docs]"``), and its configuration page lists every key of the schema.

``python tests/package/test_docs.py --update-readme`` reruns the console example and writes it into
the README.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLE = re.compile(r"<!-- console-example: (?P<command>.+?) -->\n```text\n(?P<output>.*?)```", re.S)
# The estimate's timings change from run to run; everything else a run prints must match.
TIMING = re.compile(r"~[0-9.]+ s per batch: about [0-9hmins ]+? of training steps")
# A run name's config hash moves whenever the schema gains a key; the numbers must not.
NAME_HASH = re.compile(r"(-\d+px)-[0-9a-f]{6}\b")


def comparable(output: str) -> str:
    return NAME_HASH.sub(r"\1-HASH", TIMING.sub("TIMING", output))


def test_readme_is_short_undated_and_names_the_original_study():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\bas of\b", text, re.I)
    assert not re.search(r"\b20[0-9]{2}-[01][0-9]-[0-3][0-9]\b", text), "dated narrative belongs on the study pages"
    assert "github.com/Aadit3003/split-learning-healthcare" in text and "BITS Pilani" in text
    assert "MEDSPLIT_DATA=../shared/data" not in text
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / page).exists(), f"README links {page}, which does not exist"


def test_reproduce_commands_go_through_make_data_or_medsplit_data():
    for page in [*(REPO / "docs").glob("*.md"), *(REPO / "docs" / "studies").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert "MEDSPLIT_DATA=../shared/data" not in text and "--data-root ../shared/data" not in text, page.name


def test_readme_results_table_holds_the_committed_numbers():
    from medsplit.results.studies import load_studies

    studies = {s.file: s for s in load_studies(REPO / "benchmarks" / "results", REPO)}
    text = README.read_text(encoding="utf-8")
    cells = set()
    for name in ("results-retinamnist-20ep.json", "results-lungs-sites-96px.json", "results-eyepacs-long.json"):
        for row in studies[name].rows:
            for column, value in row.items():
                if "mean ± std" in column:
                    cells.add(value)
                    cells.add(value.split(" [")[0])
    quoted = re.findall(r"(?:AUC|ACC|Dice) (\d\.\d{3} ± \d\.\d{3}(?: \[\d\.\d{3}–\d\.\d{3}\])?)", text)
    assert len(quoted) >= 11
    for number in quoted:
        assert number in cells, f"README quotes {number}, which no committed results file gives"
    fsha = next(s for s in studies.values() if s.kind == "attack")
    paper = [r for r in fsha.rows if r["iterations"] == 10000 and r["defence"] == "none" and r["variant"] == "U-shaped lungs"][0]
    assert f"lowest MSE {paper['lowest MSE (iteration)'].replace(' (', ' (iteration ')}" in text


def run_example(command: str, cwd: Path) -> str:
    """What ``command`` prints on stdout (the banner, data, size, outputs and test lines), with
    the run's own folder as working directory so the printed paths are the default ones."""
    words = command.split()
    assert words[:3] == ["python", "-m", "medsplit"], command
    words = [sys.executable, *words[1:]]
    words[words.index("train") + 1] = str(REPO / words[words.index("train") + 1])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MEDSPLIT_DATA": str(cwd / "no-data")}
    proc = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip("\n") + "\n"


@pytest.mark.slow
def test_readme_console_example_is_what_a_run_prints(tmp_path):
    match = EXAMPLE.search(README.read_text(encoding="utf-8"))
    assert match, "README has no console example block"
    printed = run_example(match["command"], tmp_path)
    assert comparable(printed) == comparable(match["output"])


def test_configuration_reference_lists_every_key_with_type_default_and_meaning():
    sys.path.insert(0, str(REPO / "docs" / "hooks"))
    try:
        from config_reference import config_reference
    finally:
        sys.path.pop(0)
    from medsplit.config import describe_keys

    page = config_reference()
    for row in describe_keys():
        assert row["doc"], f"{row['key']} has no documentation in medsplit/config/schema.py"
        line = next((ln for ln in page.splitlines() if ln.startswith(f"| `{row['key']}` |")), None)
        assert line, f"{row['key']} is missing from the configuration reference"
        assert row["type"].split(" ")[0] in line
        for choice in row["choices"] or ():
            assert f"`{choice}`" in line


@pytest.mark.slow  # a child process, about 10 s; CI runs the slow tests too (make test)
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason='the docs tools are not installed: pip install -e ".[docs]"')
def test_documentation_site_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    config_page = (tmp_path / "site" / "configuration.html").read_text(encoding="utf-8")
    assert "data.img_size" in config_page and "<!-- config-keys -->" not in config_page
    assert "medsplit.split.cut" in (tmp_path / "site" / "api.html").read_text(encoding="utf-8")
    assert (tmp_path / "site" / "results.html").exists() and (tmp_path / "site" / "studies" / "fsha.html").exists()


def update_readme() -> None:
    """Rerun the README's console example and write what it printed into the README."""
    import tempfile

    text = README.read_text(encoding="utf-8")
    match = EXAMPLE.search(text)
    with tempfile.TemporaryDirectory() as folder:
        printed = run_example(match["command"], Path(folder))
    README.write_text(text[:match.start("output")] + printed + text[match.end("output"):], encoding="utf-8")
    print(printed)


if __name__ == "__main__" and sys.argv[1:] == ["--update-readme"]:
    update_readme()
