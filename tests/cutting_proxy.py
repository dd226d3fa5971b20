"""A TCP proxy on loopback that drops the connection once, mid-request: a client losing its
network at a chosen point of an upload, with a real server behind it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class CuttingProxy:
    """Forwards to `target`; the first time the bytes sent upstream pass `cut_after`, both ends
    of that connection are closed, and later connections pass untouched."""

    target: tuple[str, int]
    cut_after: int
    sent_upstream: int = 0
    cuts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket = field(default_factory=socket.socket)

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()
        return f"http://{host}:{port}"

    def start(self) -> CuttingProxy:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    cut = self.cuts == 0 and self.sent_upstream + len(data) > self.cut_after
                    if cut:
                        self.cuts += 1
                    else:
                        self.sent_upstream += len(data)
                if cut:
                    break
                upstream.sendall(data)
        _close(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextlib.contextmanager
def cutting_proxy(url: str, cut_after: int) -> Iterator[CuttingProxy]:
    parts = urlsplit(url)
    proxy = CuttingProxy(
        target=(parts.hostname or "127.0.0.1", parts.port or 80), cut_after=cut_after
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
