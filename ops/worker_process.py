"""Run the Faust worker as a child process (used by the demo, tests and benchmarks).

Example:
    >>> with WorkerProcess(settings, bootstrap, log_path=Path("w.log")):  # doctest: +SKIP
    ...     pump_feeds(...)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from citywatch.ops.settings import Settings


class WorkerProcess:
    """``citywatch worker`` in a subprocess with the given settings and bootstrap."""

    def __init__(self, settings: Settings, bootstrap: str, log_path: Path) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env(),
               "CITYWATCH_KAFKA_BOOTSTRAP": self.bootstrap}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "citywatch.ops.cli", "worker"], env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The worker's process id (-1 when not running)."""
        return self._process.pid if self._process is not None else -1

    def stop(self, timeout: float = 20.0) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit (crash tests)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
