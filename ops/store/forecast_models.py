"""The model registry: trained forecast models with their lineage, in the incident store.

Example:
    >>> from citywatch.ops.store.store import IncidentStore
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> ModelRegistry(store).list()
    []
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from citywatch.forecasts.grid import ForecastGrid
from citywatch.forecasts.models import load_model
from citywatch.forecasts.training import TrainedModel
from citywatch.ops.store.schema import ForecastModelRow
from citywatch.ops.store.store import IncidentStore


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ModelRegistry:
    """Save, list and load trained models (newest version per series wins)."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def save(self, model: TrainedModel) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(insert(ForecastModelRow).values(
                model_id=model.model_id, version=model.version, series_key=model.series_key,
                kind=model.kind, train_start=_aware(model.train_start),
                train_end=_aware(model.train_end), parameters=model.parameters,
                metrics=model.metrics, serialized=model.serialized,
                created_at=datetime.now(UTC), grid=model.grid))

    def save_if_new(self, model: TrainedModel) -> bool:
        """Save unless the series' newest model already has this version (a retrain on
        unchanged data); returns whether it was saved."""
        with self.store.engine.connect() as conn:
            newest = conn.execute(select(ForecastModelRow.version)
                                  .where(ForecastModelRow.series_key == model.series_key)
                                  .order_by(ForecastModelRow.id.desc()).limit(1)).scalar()
        if newest == model.version:
            return False
        self.save(model)
        return True

    def list(self) -> list[Any]:
        """The newest model of every series."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(ForecastModelRow).order_by(ForecastModelRow.id)).all()
        newest = {row.series_key: row for row in rows}
        return sorted(newest.values(), key=lambda r: r.series_key)

    def newest_grids(self) -> dict[str, tuple[str, Callable[[], ForecastGrid | None]]]:
        """Series → (newest version, loader of its grid), for :class:`ForecastBook`."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(ForecastModelRow.id, ForecastModelRow.series_key,
                                       ForecastModelRow.version)
                                .order_by(ForecastModelRow.id)).all()
        newest = {row.series_key: row for row in rows}
        return {key: (row.version, lambda row_id=row.id: self._grid(row_id))
                for key, row in newest.items()}

    def _grid(self, row_id: int) -> ForecastGrid | None:
        with self.store.engine.connect() as conn:
            data = conn.execute(select(ForecastModelRow.grid)
                                .where(ForecastModelRow.id == row_id)).scalar_one()
        return ForecastGrid.from_dict(data) if data else None

    def load(self, series_key: str) -> tuple[Any, Any]:
        """``(row, model)`` of the newest model for ``series_key``; KeyError if none."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(ForecastModelRow)
                               .where(ForecastModelRow.series_key == series_key)
                               .order_by(ForecastModelRow.id.desc()).limit(1)).one_or_none()
        if row is None:
            raise KeyError(f"no model for series '{series_key}'")
        return row, load_model(row.kind, row.serialized)
