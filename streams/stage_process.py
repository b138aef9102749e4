"""A stage that runs in a process of its own beside the worker's Faust app (ingest, the
alert store): started and stopped with the worker, its metrics relayed into the
worker's, and the worker exits with status 75 for its supervisor if the stage dies.

Faust costs ~110 µs per Kafka message whatever the agent does; a stage that reads one
record per message (raw records, alerts) runs as a synchronous librdkafka loop in its
own process instead, which also keeps its work off the rules stage's core and event loop.

Example:
    >>> def main(settings, bootstrap, reports):          # runs in the child process
    ...     reports.put({("records_in", "ingest"): 1})
    >>> stage = StageProcess("citywatch-example", main, StreamSettings(), "127.0.0.1:9092")
    >>> stage.name
    'citywatch-example'
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError
from mode import Service

from citywatch.streams.metrics import WorkerMetrics
from citywatch.streams.settings import StreamSettings

log = logging.getLogger(__name__)

Reports = Any  # a multiprocessing queue of {(metric, stage): increment}
StageMain = Callable[..., None]  # main(settings, bootstrap, reports, *args)


def die_with_parent(label: str) -> None:
    """Ask Linux to SIGTERM this process when the worker that started it dies (a killed
    worker must not leave its stages running), and name it ``cw-<label>`` (what ``ps
    -o comm`` and ``top`` show)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        libc.prctl(15, f"cw-{label}"[:15].encode())  # PR_SET_NAME


def stage_setup(settings: StreamSettings, label: str) -> threading.Event:
    """What every stage process does first: die with its worker, log at the worker's
    level, collect garbage rarely (decoding allocates many short-lived objects), and
    stop on SIGTERM or SIGINT (the returned event is set)."""
    die_with_parent(label)
    logging.basicConfig(level=settings.log_level.upper().replace("WARN", "WARNING"),
                        format=f"[%(asctime)s] [{label} %(process)d] %(levelname)s "
                               "%(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return stopping


def readable(message: Any, what: str) -> bool:
    """Whether a confluent-kafka ``message`` holds a record; an error other than the end
    of a partition is logged, naming ``what`` was being read."""
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("%s not read: %s", what, error)
    return False


def relay_counts(metrics: WorkerMetrics, counts: Mapping[tuple[str, str], Any]) -> None:
    """A stage process's report into the worker's metrics: ``(records_in|records_out|
    dead_letters, stage) → increment`` and ``(store_write, stage) → [seconds, ...]``."""
    for (name, stage), value in counts.items():
        if name == "dead_letters":
            metrics.dead_letters.labels(stage=stage).inc(value)
        elif name == "store_write":
            for seconds in value:
                metrics.store_write.observe(seconds)
        else:
            direction = name.removeprefix("records_")
            metrics.records.labels(stage=stage, direction=direction).inc(value)


class StageProcess(Service):
    """Runs ``main(settings, bootstrap, reports, *args)`` in a spawned process (``args``
    must pickle) while the worker runs; SIGTERM stops it (it finishes its batch and
    commits), and it is killed after ``stop_timeout`` seconds."""

    def __init__(self, name: str, main: StageMain, settings: StreamSettings,
                 bootstrap: str, *args: Any, metrics: WorkerMetrics | None = None,
                 stop_timeout: float = 20.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.name = name
        self.main = main
        self.settings = settings
        self.bootstrap = bootstrap
        self.args = args
        self.metrics = metrics or WorkerMetrics()
        self.stop_timeout = stop_timeout
        self._context = multiprocessing.get_context("spawn")
        self._reports: Any = self._context.Queue()
        self.process: Any = None

    async def on_start(self) -> None:
        self.process = self._context.Process(
            target=self.main, args=(self.settings, self.bootstrap, self._reports, *self.args),
            name=self.name, daemon=True)
        self.process.start()
        threading.Thread(target=self._relay, name=f"{self.name}-metrics",
                         daemon=True).start()

    async def on_stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.is_alive():
            process.terminate()
            deadline = time.monotonic() + self.stop_timeout
            while process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.is_alive():
                process.kill()

    @Service.task
    async def _watch(self) -> None:
        """Exit the worker (status 75) if the stage's process dies on its own."""
        while not self.should_stop:
            await asyncio.sleep(1.0)
            process = self.process
            if process is not None and not process.is_alive() and not self.should_stop:
                log.critical("the %s process exited with status %s; exiting with status 75 "
                             "for the supervisor to restart the worker", self.name,
                             process.exitcode)
                logging.shutdown()
                os._exit(75)

    def _relay(self) -> None:
        """Metrics the stage's process reports, into this worker's."""
        while True:
            try:
                counts = self._reports.get(timeout=1.0)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            relay_counts(self.metrics, counts)
