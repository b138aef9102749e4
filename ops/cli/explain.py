"""``citywatch explain``: why an alert fired, from the store alone."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer

from citywatch.ops.cli.common import load_settings, open_store

app = typer.Typer()
EXIT_UNKNOWN = 4


@app.command()
def explain(alert_id: str, format: Annotated[Literal["text", "json", "prov"], typer.Option(
        "--format", help="text (readable), json, or prov (W3C PROV-JSON).")] = "text",
            ) -> None:
    """Why an alert fired: the rule at its version and who approved it, the source events
    and where they came from (file:line, topic/partition@offset), the zone, the values
    compared with the thresholds, the forecast model, the incident and its audit trail.
    Exit 4 when there is no such alert."""
    from citywatch.ops.explain import as_prov, explain_alert

    settings = load_settings()
    store = open_store(settings)
    try:
        explained = explain_alert(store, alert_id, configured=settings.rules_path)
    finally:
        store.close()
    if explained is None:
        typer.echo(f"no alert {alert_id}", err=True)
        raise typer.Exit(EXIT_UNKNOWN)
    if format == "json":
        typer.echo(json.dumps(explained, indent=2, default=str))
    elif format == "prov":
        typer.echo(json.dumps(as_prov(explained), indent=2, default=str))
    else:
        typer.echo(_text(explained))


def _text(e: dict[str, Any]) -> str:
    alert, rule = e["alert"], e["rule"]
    lines = [f"alert {alert['id']}: {alert['message']}",
             f"  {alert['severity']}, event time {alert['event_time']}, raised "
             f"{alert['raised_at']}",
             f"rule {rule['id']} version {rule['version']}"
             + (f" in rule set {rule['rule_set_version']}" if rule.get("rule_set_version")
                else "")]
    who = [f"{k.replace('_', ' ')} {rule[k]}" for k in
           ("proposed_by", "approved_by", "approved_at", "applied_by", "applied_at",
            "configured_file") if rule.get(k)]
    if who:
        lines.append("  " + ", ".join(who))
    if rule.get("text"):
        lines += ["  " + line for line in rule["text"].rstrip().splitlines()]
    else:
        lines.append("  (the rule text at this version is not in the store)")
    lines.append("compared:")
    for c in e["compared"]:
        shown = {k: v for k, v in c.items() if k != "condition"}
        lines.append(f"  {c['condition']}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if e["zone"]:
        lines.append(f"zone: {e['zone']['name']} ({e['zone']['layer']} {e['zone']['id']})")
    if e["model"]:
        lines.append(f"model: {e['model']['id']} version {e['model']['version']}")
    lines.append(f"source events ({len(e['sources'])}):")
    for s in e["sources"][:20]:
        lines.append(f"  {s['event_id']}  from {s['origin'] or '(origin not recorded)'}")
    if len(e["sources"]) > 20:
        lines.append(f"  … and {len(e['sources']) - 20} more")
    if e["incident"]:
        incident = e["incident"]
        lines.append(f"incident {incident['id']}: {incident['status']}, "
                     f"{incident['alert_count']} alert(s)")
        lines += [f"  {a['at']}  {a['actor']}: {a['action']}" for a in incident["audit"]]
    return "\n".join(lines)
