"""The package installs as citywatch.<folder>, never as bare top-level packages."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FOLDERS = ["streams", "rules", "geo", "forecasts", "connectors", "ops"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_subpackage_imports(folder: str) -> None:
    module = importlib.import_module(f"citywatch.{folder}")
    assert module.__name__ == f"citywatch.{folder}"


def test_no_bare_top_level_packages(tmp_path) -> None:
    code = ("import importlib.util, sys; "
            f"found = [n for n in {FOLDERS!r} if importlib.util.find_spec(n)]; "
            "print(','.join(found)); sys.exit(1 if found else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, f"bare packages importable: {result.stdout}"


def test_console_script_help() -> None:
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "demo" in result.stdout and "worker" in result.stdout


def test_demo_files_are_installed() -> None:
    from citywatch.ops.demo import demo_feeds
    from citywatch.ops.settings import DEMO_DIR

    assert [f.stem for f in demo_feeds()] == ["epa_pm25_nyc", "i94_traffic", "sf_inspections",
                                              "usgs_earthquakes"]
    assert (DEMO_DIR / "rules.yaml").is_file()
    assert len(list((DEMO_DIR / "data").glob("*.csv"))) == 4
    assert len(list((DEMO_DIR / "zones").glob("*.geojson"))) == 2


def test_version_and_serve_options(tmp_path) -> None:
    import subprocess
    import sys
    import time

    import httpx

    from citywatch.streams.broker import free_port

    shown = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "--version"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == "citywatch 0.1.0"
    port = free_port()
    env = {"PATH": "/usr/bin:/bin",
           "CITYWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "CITYWATCH_API_PORT": "9"}  # overridden by --port
    server = subprocess.Popen([sys.executable, "-m", "citywatch.ops.cli", "serve",
                               "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health").json()["store"] == "ok"
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
