"""The documented example connector: ≤ 30 lines of code, installed as a real plug-in
from tests/plugin_example, listed, run from the CLI, and passing the contract kit."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from citywatch.connectors.testing import ConnectorContract

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "plugin_example"
DOCS = HERE.parent / "docs" / "connectors.md"
PRSA = HERE.parent.parent / "shared/data/air_quality/PRSA_Data_Aotizhongxin_20130301-20170228.csv"
pytestmark = pytest.mark.skipif(not PRSA.is_file(), reason="shared data not present")


def _code_lines(source: str) -> int:
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(
                node):
            doc = node.body[0]
            skip.update(range(doc.lineno, doc.end_lineno + 1))
    return sum(1 for i, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in skip)


def test_docs_show_the_tested_example_in_30_lines() -> None:
    source = (EXAMPLE / "citywatch_prsa.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert source.strip() in [b.strip() for b in blocks]
    assert _code_lines(source) <= 30


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))


def _cli(plugin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "citywatch.ops.cli", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_installed_plugin_is_listed_and_runs(plugin_dir: Path, tmp_path: Path) -> None:
    listing = _cli(plugin_dir, "connectors", "list")
    assert listing.returncode == 0
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith("prsa"))
    assert "plug-in from citywatch-prsa" in line and "Beijing PRSA" in line
    assert sum(ln.split()[0] in {"file", "http", "mqtt", "cap", "ngsi-ld"}
               for ln in listing.stdout.splitlines()) == 5
    config = tmp_path / "prsa.yaml"
    config.write_text(f"path: {PRSA}\n")
    run = _cli(plugin_dir, "connect", "prsa", "--config", str(config), "--dry-run")
    assert run.returncode == 1  # the file has NA readings: rejected, named, counted
    assert len(run.stdout.splitlines()) == 34_139
    assert len(run.stderr.splitlines()) == 925
    assert "field 'PM2.5'" in run.stderr.splitlines()[0]


class TestPrsaContract(ConnectorContract):
    resume_after = 100

    @pytest.fixture(autouse=True)
    def _installed(self, plugin_dir: Path) -> None:
        from citywatch.connectors.registry import load_connector

        self.cls = load_connector("prsa")

    def make_source(self, session: str = "default"):
        return self.cls(PRSA)

    def make_bad_source(self):
        return self.cls(PRSA)  # its NA readings are the bad records


def test_docs_contract_kit_snippet_runs_as_written(tmp_path: Path) -> None:
    """The docs' contract-kit block names nothing it does not define or import, and,
    beside the installed example with the data file it names, its tests pass."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
                 if "ConnectorContract" in b)
    test_file = tmp_path / "test_prsa.py"
    test_file.write_text(block)
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select",
                           "F", str(test_file)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    (tmp_path / "citywatch_prsa.py").write_text((EXAMPLE / "citywatch_prsa.py").read_text())
    (tmp_path / PRSA.name).symlink_to(PRSA)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-k", "not resume", test_file.name],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-2000:]
    assert " passed" in run.stdout
