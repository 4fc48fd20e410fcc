"""A TCP proxy a test puts between one process and a server, to cut that process off (a network
partition) while every other process still reaches the server.

    with TcpProxy("127.0.0.1", 5432) as proxy:   # proxy.port: point one process's URL at it
        proxy.cut("blackhole")                   # or "reset"
        proxy.heal()

``reset``: every connection through it is reset and new ones are refused (the client learns at once).
``blackhole``: nothing more is forwarded either way and new connections are accepted but never
answered (the client learns nothing: its calls hang until their own time-outs). ``heal`` resets
what the cut left hanging and forwards new connections again."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0), not a polite FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``host``:``upstream_port`` on threads of its own, until cut."""

    def __init__(self, host: str, upstream_port: int) -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._state = "open"  #: open, reset or blackhole
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def cut(self, how: str = "reset") -> None:
        """Cut the connections through the proxy: ``reset`` or ``blackhole`` (see the module)."""
        if how not in ("reset", "blackhole"):
            raise ValueError(f"cut how? 'reset' or 'blackhole', not {how!r}")
        with self._lock:
            self._state = how
            doomed = list(self._sockets) if how == "reset" else []
        for sock in doomed:
            _reset(sock)

    def heal(self) -> None:
        """Forward again; connections left hanging by a blackhole are reset, so their clients notice."""
        with self._lock:
            self._state = "open"
            doomed, self._sockets = list(self._sockets), set()
        for sock in doomed:
            _reset(sock)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.heal()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                state = self._state
                if state == "blackhole":  # accepted, never answered
                    self._sockets.add(client)
                    continue
            if state == "reset":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server), name="tcpproxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        """Copy bytes both ways while the proxy is open; in a blackhole, read and drop them."""
        peers = {client: server, server: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while True:
                try:
                    events = selector.select(timeout=0.5)
                except (OSError, ValueError):
                    return
                for key, _ in events:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        for peer in peers:
                            _reset(peer)
                        return
                    with self._lock:
                        state = self._state
                    if state == "open":
                        try:
                            peers[source].setblocking(True)
                            peers[source].sendall(data)
                            peers[source].setblocking(False)
                        except OSError:
                            for peer in peers:
                                _reset(peer)
                            return
                if client.fileno() < 0 or server.fileno() < 0:
                    return
