"""The report section of a run whose hospitals may drop out (``split.min_hospitals``): who left,
when and why, and who came back."""

from __future__ import annotations

from medsplit.report.html import Report


def dropouts_section(report: Report, record: dict) -> None:
    """Hospitals that dropped out (``record["dropouts"]``) and the rule the run went on under."""
    dropouts = record.get("dropouts") or []
    clients = record.get("clients")
    report.section("Hospitals that dropped out")
    rule = (f"split.min_hospitals = {record.get('min_hospitals')}: the run goes on while at least that many of the "
            f"{clients} hospitals remain. The averaging protocols average over the hospitals present in each round; "
            "the relay hands the weights past a hospital that left. A hospital that leaves during an epoch has "
            "trained that epoch's batches up to then (the server's weights keep them), but its own client weights "
            "and its losses of that epoch leave with it. The learning curves' history has a 'hospitals' column: "
            "how many took part at the end of each epoch.")
    if not dropouts:
        report.text("No hospital dropped out. " + rule)
        return
    report.text(f"{len(dropouts)} dropout(s). " + rule)
    report.table([{"hospital": d.get("hospital"), "left in epoch": d.get("epoch"), "after batches": d.get("after"),
                   "back from epoch": d.get("rejoined") if d.get("rejoined") is not None else "-", "why": d.get("why")}
                  for d in dropouts], caption="Dropouts (epochs count from 1; 'after batches': its own batches of that epoch)")
