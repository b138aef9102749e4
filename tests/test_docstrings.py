"""Every docstring example in the package runs (examples needing a broker are skipped
with ``# doctest: +SKIP``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["streams", "rules", "geo", "forecasts", "connectors", "ops"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(f"citywatch.{package}")
        names.append(module.__name__)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{module.__name__}."):
            if ".migrations" in info.name or info.name.endswith("make_slices"):
                continue
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"
