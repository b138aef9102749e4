"""``citywatch backtest`` on the bundled demo data against a variant of the demo rules,
checked against two independent ``rules test`` runs; expectations; hand-written events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from citywatch.ops.demo import demo_feeds
from citywatch.ops.settings import DEMO_DIR


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citywatch.ops.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "CITYWATCH_DATA_DIR": str(cwd)})


def _rule_files(folder: Path) -> tuple[Path, Path]:
    """The demo rules (zone paths made absolute) and a variant: one threshold lowered,
    one zone list changed, one persistence window widened."""
    rules = yaml.safe_load((DEMO_DIR / "rules.yaml").read_text())
    for zone in rules["zones"]:
        zone["path"] = str((DEMO_DIR / zone["path"]).resolve())
    baseline = folder / "baseline.yaml"
    baseline.write_text(yaml.safe_dump(rules, sort_keys=False))
    by_id = {rule["id"]: rule for rule in rules["rules"]}
    by_id["quake-m45"]["condition"]["value"] = 4.0
    zone_test = next(c for c in by_id["pm25-high-nyc"]["condition"]["conditions"]
                     if c["type"] == "in_zone")
    zone_test["zones"] = ["Bronx", "Queens"]
    by_id["i94-congestion-persisting"]["condition"]["duration"] = "5h"
    candidate = folder / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(rules, sort_keys=False))
    return baseline, candidate


def _dry_run_events(folder: Path) -> Path:
    """Every demo feed's envelopes as JSON Lines, through the connectors' dry run."""
    events = folder / "events.jsonl"
    with events.open("w") as out:
        for feed in demo_feeds():
            done = cli("connect", "file", "--config", str(feed), "--dry-run", cwd=folder)
            assert done.returncode == 0, done.stderr
            out.write(done.stdout)
    return events


def _fired(rule_file: Path, events: Path, folder: Path) -> set[tuple[str, frozenset[str]]]:
    done = cli("rules", "test", str(rule_file), "--events", str(events), cwd=folder)
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    return {(a["rule_id"], frozenset(a["source_event_ids"])) for a in alerts}


def test_backtest_diff_equals_two_independent_rule_runs(tmp_path: Path) -> None:
    baseline, candidate = _rule_files(tmp_path)
    events = _dry_run_events(tmp_path)
    old, new = _fired(baseline, events, tmp_path), _fired(candidate, events, tmp_path)
    expected = {"added": len(new - old), "removed": len(old - new),
                "unchanged": len(old & new)}
    assert expected["added"] and expected["removed"] and expected["unchanged"]

    args = ["backtest", "--baseline", str(baseline), "--candidate", str(candidate),
            "--json", "--out", str(tmp_path / "report.json")]
    for feed in demo_feeds():  # the feed mappings themselves, not the JSON Lines
        args += ["--events", str(feed)]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["totals"] == expected
    for rule in ("quake-m45", "pm25-high-nyc", "i94-congestion-persisting"):
        mine = {k for k in new - old if k[0] == rule}, {k for k in old - new if k[0] == rule}
        counts = report["diff"][rule]["counts"]
        assert (counts["added"], counts["removed"]) == tuple(map(len, mine)), rule
        assert report["diff"][rule]["rule_changes"], rule
    assert report["diff"]["quake-m45"]["rule_changes"] == ["condition.value: 4.5 -> 4.0"]
    assert report["diff"]["quake-m45"]["counts"]["removed"] == 0
    # the quakes it adds are exactly those with 4.0 <= mag < 4.5 (pandas on the source)
    quakes = pd.json_normalize(json.loads(
        (DEMO_DIR / "data/usgs_all_week.geojson").read_text())["features"])
    between = quakes[(quakes["properties.mag"] >= 4.0) & (quakes["properties.mag"] < 4.5)]
    assert report["diff"]["quake-m45"]["counts"]["added"] == between["id"].nunique()
    per_day = report["per_rule"]["candidate"]["quake-m45"]
    assert per_day["alerts"] == len({k for k in new if k[0] == "quake-m45"})
    assert sum(report["daily"]["candidate"].values()) == report["alerts"]["candidate"]


def test_expectations_fail_with_exit_1_and_name_the_rule(tmp_path: Path) -> None:
    baseline, candidate = _rule_files(tmp_path)
    quakes = str(DEMO_DIR / "feeds/usgs_earthquakes.yaml")
    report = json.loads(cli("backtest", "--baseline", str(baseline), "--candidate",
                            str(candidate), "--events", quakes, "--json",
                            cwd=tmp_path).stdout)
    count = report["per_rule"]["candidate"]["quake-m45"]["alerts"]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"rules": {"quake-m45": count,
                                              "quake-tsunami-flag": {"min": 0, "max": 5}}}))
    assert cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
               "--events", quakes, "--expect", str(good), cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rules": {"quake-m45": count + 1}}))
    failed = cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
                 "--events", quakes, "--expect", str(bad), cwd=tmp_path)
    assert failed.returncode == 1
    assert f"expectation failed: quake-m45: {count} alert(s), expected {count + 1}" \
        in failed.stderr


def test_hand_written_events(tmp_path: Path) -> None:
    """Only what a person would write; id and received_at derived; a bad one named."""
    baseline, _ = _rule_files(tmp_path)
    events = tmp_path / "mine.jsonl"  # written for this test: two quakes and a typo
    events.write_text(
        '{"domain": "disaster", "kind": "earthquake.reported", "time": "2024-01-02T03:04:05Z",'
        ' "entity": "q1", "geometry": {"type": "Point", "coordinates": [-122.3, 37.9]},'
        ' "attributes": {"mag": 5.1, "place": "test", "tsunami": 0}}\n'
        '{"domain": "disaster", "kind": "earthquake.reported", "time": "2024-01-02T04:00:00Z",'
        ' "entity": "q2", "attributes": {"mag": 3.0, "place": "test", "tsunami": 0}}\n'
        '{"domain": "disaster", "kind": "earthquake.reported", "time": "yesterday",'
        ' "entity": "q3"}\n')
    done = cli("rules", "test", str(baseline), "--events", str(events), cwd=tmp_path)
    assert done.returncode == 1  # one line refused
    assert "mine.jsonl:3" in done.stderr and "field 'time'" in done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(a["rule_id"], a["entity_id"]) for a in alerts] == [("quake-m45", "q1")]


def _haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Written here again on purpose: the test's own great-circle distance."""
    r = 6_371_008.8
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (np.sin((p2 - p1) / 2) ** 2
         + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2)
    return float(2 * r * np.arcsin(np.sqrt(a)))


def test_labels_precision_recall_match_an_independent_haversine_count(
        tmp_path: Path) -> None:
    """Labels: every M >= 4.5 quake of the real USGS week. Rules: quakes of M >= 2.5
    within 1,500 km (baseline) or 3,000 km (candidate) of Anchorage. An alert catches a
    label at the same time and within 1 km (the same quake)."""
    quakes = pd.json_normalize(json.loads(
        (DEMO_DIR / "data/usgs_all_week.geojson").read_text())["features"])
    big = quakes[quakes["properties.mag"] >= 4.5]
    labels = pd.DataFrame({
        "id": big["id"],
        "time": pd.to_datetime(big["properties.time"], unit="ms", utc=True).map(
            lambda t: t.isoformat()),
        "lon": big["geometry.coordinates"].map(lambda c: c[0]),
        "lat": big["geometry.coordinates"].map(lambda c: c[1]),
        "category": "Geo"})
    labels_csv = tmp_path / "labels.csv"
    labels.to_csv(labels_csv, index=False)

    def rules(radius_m: int) -> Path:
        path = tmp_path / f"near-anchorage-{radius_m}.yaml"
        path.write_text(yaml.safe_dump({"rules": [{
            "id": "near-anchorage", "domain": "disaster", "kinds": ["earthquake.reported"],
            "condition": {"type": "all", "conditions": [
                {"type": "threshold", "attribute": "mag", "op": ">=", "value": 2.5},
                {"type": "proximity", "point": [-149.9, 61.2], "within_m": radius_m}]},
            "alert": {"severity": "Moderate", "category": "Geo", "message": "M{mag}"}}]}))
        return path

    baseline, candidate = rules(1_500_000), rules(3_000_000)
    feed = str(DEMO_DIR / "feeds/usgs_earthquakes.yaml")
    done = cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
               "--events", feed, "--labels", str(labels_csv), "--label-before", "0s",
               "--label-after", "0s", "--label-distance-m", "1000", "--json", cwd=tmp_path)
    assert done.returncode != 2, done.stderr
    report = json.loads(done.stdout)

    events = tmp_path / "quakes.jsonl"
    events.write_text(cli("connect", "file", "--config", feed, "--dry-run",
                          cwd=tmp_path).stdout)
    rows = list(labels.itertuples())
    for side, path in (("baseline", baseline), ("candidate", candidate)):
        alerts = [json.loads(line) for line in cli(
            "rules", "test", str(path), "--events", str(events), cwd=tmp_path
        ).stdout.splitlines()]
        alerts = list({a["id"]: a for a in alerts}.values())

        def caught(alert: dict, label: object) -> bool:
            lon, lat = alert["geometry"]["coordinates"][:2]
            return (pd.Timestamp(alert["event_time"]) == pd.Timestamp(label.time)
                    and _haversine_m(lon, lat, label.lon, label.lat) <= 1000)

        useful = sum(any(caught(a, label) for label in rows) for a in alerts)
        found = sum(any(caught(a, label) for a in alerts) for label in rows)
        got = report["labels"][side]
        assert got["alerts"] == len(alerts) > 0
        assert got["labels"] == len(rows) > 0
        assert got["alerts_catching"] == useful and got["labels_caught"] == found
        assert got["precision"] == round(useful / len(alerts), 4)
        assert got["recall"] == round(found / len(rows), 4)
    assert report["labels"]["candidate"]["recall"] > report["labels"]["baseline"]["recall"]


def test_html_report_renders_both_plots_in_headless_chromium(tmp_path: Path) -> None:
    """The self-contained report opened in Debian's Chromium (Playwright): both plots
    drawn, nothing requested from the network; the screenshot is kept with the test's
    files."""
    browser_path = os.environ.get("CITYWATCH_BROWSER", "/usr/bin/chromium")
    if not Path(browser_path).exists():
        if "CITYWATCH_BROWSER" in os.environ:  # CI installs it: missing is a failure
            raise AssertionError(f"no browser at {browser_path}")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    baseline, candidate = _rule_files(tmp_path)
    page_path = tmp_path / "report.html"
    args = ["backtest", "--baseline", str(baseline), "--candidate", str(candidate),
            "--html", str(page_path)]
    for feed in demo_feeds():
        args += ["--events", str(feed)]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"report: {page_path}" in done.stdout
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(page_path.as_uri())
            assert page.locator("figure#daily svg").count() == 1
            assert page.locator("figure#diff svg").count() == 1
            assert page.locator("figure#daily svg path").count() > 10  # lines drawn
            assert "quake-m45" in page.locator("table").first.inner_text()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert [url for url in requested if not url.startswith("file:")] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_remembering_only_repeated_ids_raises_the_same_alerts() -> None:
    """A backtest knows its whole input, so its engine remembers only the ids that occur
    more than once: the alerts equal those of an engine that remembers every id (as a
    worker does), on the demo feeds read twice over (every id repeated) and once."""
    from citywatch.connectors.file import FileSource, load_feed
    from citywatch.rules.backtest import frames_of, repeated_ids, run_rules
    from citywatch.rules.engine import RuleEngine
    from citywatch.rules.loader import load_ruleset
    from citywatch.streams.envelope import Envelope

    once = [e for feed in demo_feeds() for e in FileSource(load_feed(feed)).run()
            if isinstance(e, Envelope)]
    ruleset = load_ruleset(DEMO_DIR / "rules.yaml")
    for events in (once, once + once[::3]):
        frames = frames_of(events)
        assert repeated_ids(frames)  # the I-94 file repeats rows; the second, a third
        engine = RuleEngine.from_ruleset(ruleset)
        assert engine.repeated_ids is None
        every_id = []
        for columns, chunk in frames:
            result = engine.process(columns, envelopes=chunk)
            result.commit_state()
            every_id += [a.id for a in result.alerts]
        every_id += [a.id for a in engine.flush()]
        assert sorted(a.id for a in run_rules(ruleset, events)) == sorted(every_id)
        assert len(every_id) > 100
