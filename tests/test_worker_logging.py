"""The worker logs at the level asked for (Faust's spinner used to force DEBUG)."""

from __future__ import annotations

import logging
from pathlib import Path

from citywatch.streams.settings import StreamSettings
from citywatch.streams.worker import make_faust_app, make_faust_worker


def test_worker_logs_at_the_level_asked_for(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    app = make_faust_app(StreamSettings(data_dir=tmp_path), "127.0.0.1:9")
    worker = make_faust_worker(app, log_level="warn")
    worker.redirect_stdouts = False  # the test's own output stays where it is
    try:
        worker._setup_logging()  # what the worker does first when it starts
        assert root.level == logging.WARNING
        for name in ("faust.topics", "aiokafka.producer.sender", "mode"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
