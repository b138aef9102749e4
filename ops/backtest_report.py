"""A backtest report as one self-contained HTML file: the numbers of
``citywatch.rules.backtest`` and two plots (alerts per day for both versions; alerts
added and removed per rule) drawn by matplotlib as inline SVG. Nothing is fetched from
anywhere when it is opened.

Example:
    >>> report = {"events": 3, "event_time": {"from": "2024-01-01T00:00:00+00:00",
    ...           "to": "2024-01-02T00:00:00+00:00", "days": 1},
    ...           "versions": {"baseline": "a1", "candidate": "b2"},
    ...           "alerts": {"baseline": 1, "candidate": 2},
    ...           "per_rule": {"baseline": {"r": {"alerts": 1, "per_day": 1.0,
    ...                                          "entities": 1, "zones": 0}},
    ...                        "candidate": {"r": {"alerts": 2, "per_day": 2.0,
    ...                                           "entities": 2, "zones": 0}}},
    ...           "daily": {"baseline": {"2024-01-01": 1}, "candidate": {"2024-01-01": 2}},
    ...           "diff": {"r": {"counts": {"added": 1, "removed": 0, "unchanged": 1},
    ...                          "rule_changes": ["condition.value: 5 -> 4"],
    ...                          "added_sample": [], "removed_sample": []}},
    ...           "totals": {"added": 1, "removed": 0, "unchanged": 1},
    ...           "noisy": {"baseline": [], "candidate": []}, "labels": None}
    >>> page = html_report(report)
    >>> page.count("<svg"), any(w in page for w in ("<script", "<link", "src=", "url(http"))
    (2, False)
"""

from __future__ import annotations

import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

from matplotlib.figure import Figure  # noqa: E402 - after choosing the backend

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d232a; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; }
th:first-child, td:first-child, td.text, th:last-child { text-align: left; }
.added { color: #1a7f37; } .removed { color: #cf222e; }
figure { margin: 1.5rem 0; } figcaption { color: #57606a; }
"""


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight",
                   metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def daily_plot(report: dict[str, Any]) -> str:
    """Alerts per day of event time, both versions, as SVG."""
    figure = Figure(figsize=(9, 3.2))
    axes = figure.subplots()
    days = sorted(set(report["daily"]["baseline"]) | set(report["daily"]["candidate"]))
    for side, colour in (("baseline", "#57606a"), ("candidate", "#0969da")):
        counts = [report["daily"][side].get(day, 0) for day in days]
        axes.plot(range(len(days)), counts, marker="o", markersize=2.5, linewidth=1,
                  color=colour, label=f"{side} ({report['versions'][side]})")
    step = max(1, len(days) // 8)
    axes.set_xticks(range(0, len(days), step), days[::step], rotation=30, ha="right",
                    fontsize=8)
    axes.set_ylabel("alerts per day")
    axes.legend(frameon=False)
    return _svg(figure)


def diff_plot(report: dict[str, Any]) -> str:
    """Alerts added and removed per rule, as SVG horizontal bars."""
    rules = list(report["diff"])
    figure = Figure(figsize=(9, 0.45 * max(3, len(rules)) + 0.8))
    axes = figure.subplots()
    added = [report["diff"][r]["counts"]["added"] for r in rules]
    removed = [-report["diff"][r]["counts"]["removed"] for r in rules]
    axes.barh(rules, added, color="#1a7f37", label="added")
    axes.barh(rules, removed, color="#cf222e", label="removed")
    axes.axvline(0, color="#1d232a", linewidth=0.8)
    axes.set_xlabel("alerts (candidate vs baseline)")
    axes.invert_yaxis()
    axes.legend(frameon=False)
    return _svg(figure)


def html_report(report: dict[str, Any]) -> str:
    """The whole report as one HTML page."""
    e = html.escape
    span = report["event_time"]
    rows = []
    for rule, diff in report["diff"].items():
        old = report["per_rule"]["baseline"].get(rule, {})
        new = report["per_rule"]["candidate"].get(rule, {})
        counts = diff["counts"]
        rows.append(
            f"<tr><td>{e(rule)}</td><td>{old.get('alerts', 0)}</td>"
            f"<td>{new.get('alerts', 0)}</td><td class=added>+{counts['added']}</td>"
            f"<td class=removed>-{counts['removed']}</td><td>{counts['unchanged']}</td>"
            f"<td>{new.get('per_day', 0)}</td>"
            f"<td class=text>{e('; '.join(diff['rule_changes']))}</td></tr>")
    labels = ""
    if report.get("labels"):
        scores = "".join(
            f"<tr><td>{side}</td><td>{got['precision']}</td><td>{got['recall']}</td>"
            f"<td>{got['labels_caught']} of {got['labels']}</td>"
            f"<td>{got['median_lead_seconds']}</td></tr>"
            for side in ("baseline", "candidate")
            for got in [report["labels"][side]])
        labels = ("<h2>Against labelled incidents</h2><table><tr><th>version</th>"
                  "<th>precision</th><th>recall</th><th>labels caught</th>"
                  f"<th>median lead (s)</th></tr>{scores}</table>")
    noisy = ", ".join(report["noisy"]["candidate"]) or "none"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>citywatch backtest</title>
<style>{STYLE}</style></head><body>
<h1>Backtest: {e(report['versions']['baseline'])} → {e(report['versions']['candidate'])}</h1>
<p>{report['events']:,} events from {e(str(span['from']))} to {e(str(span['to']))}.
Baseline {report['alerts']['baseline']} alerts, candidate {report['alerts']['candidate']}:
<span class=added>{report['totals']['added']} added</span>,
<span class=removed>{report['totals']['removed']} removed</span>,
{report['totals']['unchanged']} unchanged. Noisy rules: {e(noisy)}.</p>
<table><tr><th>rule</th><th>baseline</th><th>candidate</th><th>added</th>
<th>removed</th><th>unchanged</th><th>per day</th><th>what changed</th></tr>
{''.join(rows)}</table>
{labels}
<figure id=daily>{daily_plot(report)}<figcaption>Alerts per day of event time (days with
alerts).</figcaption></figure>
<figure id=diff>{diff_plot(report)}<figcaption>Alerts the candidate adds and removes, per
rule.</figcaption></figure>
</body></html>
"""
