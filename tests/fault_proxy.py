"""A small TCP fault proxy for outage tests (the part of Toxiproxy these tests need).

It forwards every connection on ``127.0.0.1:<port>`` to a real server. ``cut()`` drops
every open connection and refuses new ones (accepted and closed at once) until
``restore()``: to a client, the server is gone and comes back.

Example:
    >>> with FaultProxy("127.0.0.1", 5432) as proxy:   # doctest: +SKIP
    ...     url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    ...     proxy.cut(); time.sleep(30); proxy.restore()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class FaultProxy:
    """Forward ``127.0.0.1:port`` → ``host:target_port``; cut and restore on demand."""

    def __init__(self, host: str, target_port: int, port: int = 0) -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = False
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        """Forward again."""
        self._up.set()

    def close(self) -> None:
        self._stopped = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
