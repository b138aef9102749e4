"""Complete validation of a rule file in a deployment: the rules layer's checks
(:func:`~citywatch.rules.validate.validate_ruleset`) fed with what only the deployment
knows — the attributes its feed configurations declare, and which forecast series have a
trained model in the registry. ``rules validate`` and ``rules apply`` both use it.

Example:
    >>> from citywatch.ops.settings import DEMO_DIR, Settings
    >>> check_rules(DEMO_DIR / "rules.yaml", Settings(database_url="sqlite://")).ok
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.forecast_models import ModelRegistry
from citywatch.ops.store.outage import OUTAGE_ERRORS
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.loader import RuleSetError, load_ruleset
from citywatch.rules.validate import ValidationReport, validate_ruleset

DEMO_FEEDS = DEMO_DIR / "feeds"


def feed_attributes(paths: Iterable[Path]) -> dict[str, set[str]]:
    """Attribute names per domain that the feed configurations at ``paths`` (files, or
    folders of ``*.yaml``) declare; files that are not feed configurations are skipped."""
    found: dict[str, set[str]] = {}
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            try:
                data = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and isinstance(data.get("attributes"), dict):
                found.setdefault(str(data.get("domain")), set()).update(
                    map(str, data["attributes"]))
    return found


def trained_series(settings: Settings) -> set[str] | None:
    """Series with a trained model in the registry; None when the store is unreachable."""
    store = IncidentStore(settings.database_url)
    try:
        store.create_schema()
        return set(ModelRegistry(store).newest_grids())
    except OUTAGE_ERRORS:
        return None
    finally:
        store.close()


def check_rules(path: Path, settings: Settings, feeds: Iterable[Path] = (DEMO_FEEDS,),
                ) -> ValidationReport:
    """Every problem of the rule file at ``path`` (see the module docs)."""
    series = None
    try:
        if any(rule.forecast_series() for rule in load_ruleset(path).rules):
            series = trained_series(settings)
    except (RuleSetError, OSError, UnicodeDecodeError):
        pass  # validate_ruleset reports it, located
    return validate_ruleset(path, attributes=feed_attributes(feeds), trained_series=series)
