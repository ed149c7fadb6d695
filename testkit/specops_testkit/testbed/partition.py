"""A TCP proxy that can cut one client off from a server, as a network partition would.

Point one operator replica's kubeconfig at ``proxy.address`` instead of the API server: bytes pass
through unchanged (TLS included, end to end).  ``cut()`` partitions it: nothing passes any more in
either direction and new connections are accepted but never answered (packets dropped, not
refused: the client only notices through its own timeouts).  ``heal()`` ends the partition: the
connections held during it are closed, so the client reconnects, and traffic flows again.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class PartitionProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.address = self._listener.getsockname()[:2]
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._held: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="partition-proxy", daemon=True)

    @property
    def port(self) -> int:
        return int(self.address[1])

    def start(self) -> PartitionProxy:
        self._thread.start()
        return self

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        """Forward again; every connection that lived through the partition is closed."""
        with self._lock:
            stale = list(self._sockets | self._held)
            self._sockets.clear()
            self._held.clear()
        for s in stale:
            _close(s)
        self._cut.clear()

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)
        self.heal()

    def __enter__(self) -> PartitionProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------- inside

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                with self._lock:
                    self._held.add(client)  # accepted, never answered
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self._cut.is_set():
                    continue  # dropped, as on a partitioned network
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
