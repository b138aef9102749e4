"""The composition root of a worker process: the stream layer's worker wired to the rule
engine, the forecast models and the incident store.

This is the one place where the layers meet: ``citywatch.streams.worker.Pipeline`` knows
only its own interfaces (``RuleSource``, ``ModelSource``, ``AlertSink``,
``routing.DeliveryQueue``); the classes below implement them with ``citywatch.rules``,
``citywatch.forecasts`` and ``citywatch.ops.store``.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> pipeline = build_pipeline(Settings(kafka_bootstrap="127.0.0.1:9092"))  # doctest: +SKIP
    >>> pipeline.run()   # blocks until SIGTERM / SIGINT                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from datetime import timedelta
from pathlib import Path

from citywatch.forecasts.grid import ForecastBook
from citywatch.ops.settings import Settings
from citywatch.ops.store.forecast_models import ModelRegistry
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.rulesets import AppliedRuleSet, RuleSetBook
from citywatch.ops.store.sink import open_sink, outage_is_unavailable
from citywatch.ops.store.store import IncidentStore, shown_url
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.rules.model import RuleSet
from citywatch.streams.rule_state import ChangelogState
from citywatch.streams.store_stage import SinkUnavailable
from citywatch.streams.worker import Pipeline

log = logging.getLogger(__name__)


class StoreRuleSource:
    """Rule engines for the rule set version in force in the store (or the configured
    file when none was applied yet), loaded from the store alone: the version's layer
    files are written into ``cache_dir``.

    A version that cannot load here never replaces the one running: the worker logs one
    line, remembers it (:attr:`refused`, :attr:`problem`) and keeps its engine. A worker
    that starts while the version in force cannot load starts on the newest earlier
    version that does, and says so.

    Example:
        >>> store = IncidentStore("sqlite://")
        >>> store.create_schema()
        >>> from citywatch.ops.settings import DEMO_DIR
        >>> import tempfile
        >>> source = StoreRuleSource(RuleSetBook(store), DEMO_DIR / "rules.yaml",
        ...                          ForecastBook(),
        ...                          cache_dir=Path(tempfile.mkdtemp()))
        >>> source.newer(source.load(ChangelogState()).version, ChangelogState()) is None
        True
    """

    def __init__(self, book: RuleSetBook, rules_path: Path, forecasts: ForecastBook, *,
                 cache_dir: Path) -> None:
        self.book = book
        self.rules_path = rules_path
        self.forecasts = forecasts
        self.cache_dir = cache_dir
        self.loaded: str | None = None
        self.refused: dict[str, str] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def problem(self) -> str | None:
        """Why the version in force is not the one running, if it is not."""
        return "; ".join(f"{version}: {reason}"
                         for version, reason in self.refused.items()) or None

    def _engine(self, ruleset: RuleSet, state: ChangelogState) -> RuleEngine:
        return RuleEngine.from_ruleset(ruleset, state, self.forecasts)

    def _try(self, applied: AppliedRuleSet, state: ChangelogState) -> RuleEngine | None:
        """An engine for ``applied``, or None (remembered, logged once) when it cannot
        load here; store outages propagate as SinkUnavailable."""
        try:
            with outage_is_unavailable():
                ruleset = self.book.materialise(applied, self.cache_dir)
            engine = self._engine(ruleset, state)
        except SinkUnavailable:
            raise
        except Exception as exc:  # whatever it is, this version cannot run here
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.refused[applied.version] = reason
            log.warning("rule set %s (applied by %s) cannot load here: %s", applied.version,
                        applied.applied_by, reason)
            return None
        self.loaded = applied.version
        return engine

    def load(self, state: ChangelogState) -> RuleEngine:
        history = self.book.history()
        for applied in history:
            engine = self._try(applied, state)
            if engine is not None:
                if applied is not history[0]:
                    log.warning("running rule set %s: the version in force, %s, cannot "
                                "load here", applied.version, history[0].version)
                log.warning("running rule set %s from the store (applied by %s); the "
                            "configured file %s is used only until a rule set is applied",
                            applied.version, applied.applied_by, self.rules_path)
                return engine
        if history:
            log.warning("no applied rule set loads here; running the configured file %s",
                        self.rules_path)
        return self._engine(load_ruleset(self.rules_path), state)

    def newer(self, current: str, state: ChangelogState) -> RuleEngine | None:
        with outage_is_unavailable():
            self.book.heartbeat(self.worker, current, self.problem)
            applied = self.book.current()
        if applied is None or applied.version in (self.loaded, current) \
                or applied.version in self.refused:
            return None
        engine = self._try(applied, state)
        if engine is not None:
            log.warning("rule set %s applied by %s", applied.version, applied.applied_by)
        return engine


class RegistryModelSource:
    """Forecast grids of the newest registered models, swapped into ``forecasts``.

    Example:
        >>> store = IncidentStore("sqlite://")
        >>> store.create_schema()
        >>> RegistryModelSource(ModelRegistry(store), ForecastBook()).refresh()
        []
    """

    def __init__(self, registry: ModelRegistry, forecasts: ForecastBook) -> None:
        self.registry = registry
        self.forecasts = forecasts

    def refresh(self) -> list[str]:
        swapped = self.forecasts.refresh(self.registry.newest_grids())
        return [f"{key} -> {self.forecasts.grids[key].model_version}" for key in swapped]

    def versions(self) -> dict[str, str]:
        return {key: grid.model_version for key, grid in self.forecasts.grids.items()}


def build_pipeline(settings: Settings, bootstrap: str | None = None) -> Pipeline:
    """A worker process's pipeline, every part built from one ``settings``."""
    bootstrap = bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise ValueError("no Kafka: set CITYWATCH_KAFKA_BOOTSTRAP")
    store = IncidentStore(settings.database_url, correlation_window=timedelta(hours=24))
    store.create_schema()
    forecasts = ForecastBook()
    rules = StoreRuleSource(RuleSetBook(store), settings.rules_path, forecasts,
                            cache_dir=settings.data_dir / "rulesets")
    models = RegistryModelSource(ModelRegistry(store), forecasts)
    return Pipeline(settings, bootstrap, rules=rules, models=models,
                    alerts=functools.partial(open_sink, settings), deliveries=Outbox(store),
                    ready_note=f"; store {shown_url(settings.database_url)}")
