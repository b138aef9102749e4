"""The bundled demo zone layers: the shared originals, repaired once, loading silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import shapely
from shapely.geometry import shape

from citywatch.geo.repair import repaired
from citywatch.geo.zones import ZoneLayer
from citywatch.ops.settings import DEMO_DIR

BUNDLED = sorted((DEMO_DIR / "zones").glob("*.geojson"))


@pytest.mark.parametrize("bundled", BUNDLED, ids=lambda p: p.stem)
def test_bundled_layer_is_the_repaired_original(bundled: Path, shared_data: Path) -> None:
    original = json.loads((shared_data / "boundaries" / bundled.name).read_text())
    ours = json.loads(bundled.read_text())
    assert len(ours["features"]) == len(original["features"])
    broken = [f["properties"]["name"] for f in original["features"]
              if not shape(f["geometry"]).is_valid]
    assert broken  # the originals do need the repair
    for mine, theirs in zip(ours["features"], original["features"], strict=True):
        assert mine["properties"] == theirs["properties"]
        mine_shape, their_shape = shape(mine["geometry"]), shape(theirs["geometry"])
        assert mine_shape.is_valid
        if their_shape.is_valid:
            assert mine_shape.equals_exact(their_shape, 0)
        else:  # the same area, to Shapely's own repair of the original
            fixed = shapely.make_valid(their_shape, method="structure", keep_collapsed=False)
            assert mine_shape.equals_exact(fixed, 0)
    assert json.loads(json.dumps(repaired(original)[0]))["features"] == ours["features"]


@pytest.mark.parametrize("bundled", BUNDLED, ids=lambda p: p.stem)
def test_bundled_layer_loads_without_a_warning(bundled: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        layer = ZoneLayer.from_file(bundled.stem, bundled)
    assert len(layer) == len(json.loads(bundled.read_text())["features"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
