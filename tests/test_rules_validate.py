"""`citywatch rules validate` over broken rule files (fixtures written here, each with one
mistake): every error at its FILE:LINE:COL, exit 1, never a traceback; the demo rules
validate clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citywatch.ops.cli import app
from citywatch.ops.settings import DEMO_DIR

ZONES = DEMO_DIR / "zones" / "new-york-city-boroughs.geojson"
HEAD = f"""zones:
  - layer: nyc-boroughs
    path: {ZONES}
rules:
"""
RULE = """  - id: {id}
    domain: environment
    condition: {condition}
    alert: {{severity: Moderate, category: Health, message: "{message}"}}
"""


def rule(condition: str = '{type: threshold, attribute: pm25, op: ">", value: 20}',
         message: str = "PM2.5 {pm25} at {site_name} in {zone}", id: str = "r1") -> str:
    return RULE.format(id=id, condition=condition, message=message)


def _nested(depth: int) -> str:
    return HEAD + "  - " + "[" * depth + "]" * depth + "\n"


BOMB = HEAD.replace("rules:\n", "") + "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
) + "\nrules: []\n"

# (name, file text, line, column, what the message says)
CASES = [
    ("missing zone file", HEAD.replace(str(ZONES), "/nowhere/boroughs.geojson") + rule(),
     3, 11, "cannot read zone layer"),
    ("wrong name_field", HEAD.replace("    path:", "    name_field: borough\n    path:")
     + rule(), 3, 17, "no 'borough' property"),
    ("wrong id_field", HEAD.replace("rules:", "    id_field: code\nrules:") + rule(), 4, 15,
     "no 'code' property"),
    ("misspelled zone", HEAD + rule(
        condition="{type: in_zone, layer: nyc-boroughs, zones: [Queens, Brookyln]}"),
     7, 69, "zone 'Brookyln' is not in layer 'nyc-boroughs' (did you mean 'Brooklyn'"),
    ("unknown placeholder", HEAD + rule(message="{pm25} in {zon}"), 8, 60,
     "unknown placeholder {zon} in the message (did you mean {zone}?)"),
    ("format spec too wide", HEAD + rule(message="{pm25:>900000000}"), 8, 60,
     "too wide"),
    ("attribute access", HEAD + rule(message="{pm25.real}"), 8, 60, "plain name"),
    ("conversion", HEAD + rule(message="{site_name!r}"), 8, 60, "conversions"),
    ("unbalanced brace", HEAD + rule(message="PM2.5 {pm25"), 8, 60,
     "not a valid template"),
    ("unknown layer at its use site", HEAD + rule(
        condition="{type: in_zone, layer: nyc-borough}"), 7, 39,
     "unknown zone layer 'nyc-borough'"),
    ("unknown layer in a window", HEAD + rule(
        condition="{type: window, attribute: pm25, aggregate: avg, size: 1d, "
                  "group_by: 'zone:boroughs', op: '>', value: 20}"), 7, 84,
     "unknown zone layer 'boroughs'"),
    ("unknown site layer", HEAD + rule(
        condition="{type: proximity, within_m: 500, sites: schools}"), 7, 56,
     "unknown site layer 'schools'"),
    ("duplicate rule id", HEAD + rule() + rule(), 9, 9, "duplicate rule id 'r1'"),
    ("schema error", HEAD + rule(condition='{type: threshold, attribute: pm25, op: "~", '
                                           'value: 20}'), 7, 55, "op"),
    ("invalid YAML", HEAD + "  - id: [unclosed\n", 6, 1, "invalid YAML"),
    ("nesting 50,000 deep", _nested(50_000), 5, 67, "nested deeper than 64"),
    ("alias bomb", BOMB, 9, 10, "once aliases are expanded"),
]


@pytest.mark.parametrize(("name", "text", "line", "column", "says"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_broken_file_is_refused_at_the_place_of_use(
        tmp_path: Path, name: str, text: str, line: int, column: int, says: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["rules", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert errors, result.stderr
    located = [e for e in errors if says in e]
    assert located, errors
    where = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): ", located[0])
    assert where is not None and (int(where[1]), int(where[2])) == (line, column), located[0]


def test_a_document_over_1_mb_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + rule() + "# " + "x" * 1_000_000 + "\n")
    result = CliRunner().invoke(app, ["rules", "validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:1:1: the rule file is larger than" in result.stderr


def test_the_demo_rules_validate_clean() -> None:
    result = CliRunner().invoke(app, ["rules", "validate", str(DEMO_DIR / "rules.yaml")])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if ".yaml:" in line] == []
    assert len(result.stdout.splitlines()) == 8


def test_an_untrained_forecast_series_is_a_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CITYWATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + rule(condition="{type: forecast_exceedance, series: pm25-bronx, "
                                          "op: '>', value: 35, horizon: 6h}",
                                message="{forecast} expected at {expected_at}"))
    result = CliRunner().invoke(app, ["rules", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: no trained model for series 'pm25-bronx'" in result.stderr


def test_an_unsafe_template_is_refused_by_every_load_path() -> None:
    """The schema itself refuses it, so no worker, API or CLI path can run it."""
    from pydantic import ValidationError

    from citywatch.rules.model import RuleSet

    with pytest.raises(ValidationError, match="too wide"):
        RuleSet.model_validate({"rules": [{
            "id": "r", "domain": "traffic",
            "condition": {"type": "threshold", "attribute": "volume", "op": ">", "value": 1},
            "alert": {"severity": "Minor", "category": "Transport",
                      "message": "{volume:>900000000}"}}]})
