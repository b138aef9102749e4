"""The layers run one way: computed from the source's imports (AST), independent of
import-linter, which CI also runs (``.importlinter``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["streams", "geo", "forecasts", "rules", "connectors", "ops"]
# bottom to top; a package may import only those before it, except its siblings in a tier
TIERS = [{"streams", "geo"}, {"forecasts"}, {"rules", "connectors"}, {"ops"}]
DOMAIN = {"geo", "forecasts", "rules"}
DOMAIN_FORBIDDEN = {"faust", "aiokafka", "confluent_kafka", "kafka", "sqlalchemy", "fastapi",
                    "uvicorn"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package → imported top-level citywatch package → the files that import it."""
    graph: dict[str, dict[str, set[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "citywatch" and len(parts) > 1 and parts[1] != package:
                    graph[package].setdefault(parts[1], set()).add(
                        str(path.relative_to(ROOT)))
    return graph


def tier(package: str) -> int:
    return next(i for i, members in enumerate(TIERS) if package in members)


def test_no_two_packages_import_each_other() -> None:
    graph = package_imports()
    both = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, {}))
    assert both == [], {f"{a} <-> {b}": (sorted(graph[a][b]), sorted(graph[b][a]))
                        for a, b in both}


def test_every_import_runs_down_the_layers() -> None:
    graph = package_imports()
    upward = {f"{a} -> {b}": sorted(files) for a, targets in graph.items()
              for b, files in targets.items() if tier(b) >= tier(a)}
    assert upward == {}


def test_the_domain_packages_use_no_kafka_database_or_web_library() -> None:
    found = {}
    for package in DOMAIN:
        for path in (ROOT / package).rglob("*.py"):
            bad = {m for m in imported_modules(path) if m.split(".")[0] in DOMAIN_FORBIDDEN}
            if bad:
                found[str(path.relative_to(ROOT))] = sorted(bad)
    assert found == {}


def test_every_package_says_what_it_holds_and_what_it_may_use() -> None:
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert doc and "May use:" in doc, package
