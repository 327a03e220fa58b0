"""A TCP relay in front of a real server that can be told to lose the server's answers.

While ``lose_answers`` is set, requests still reach the server and are carried out, but
nothing comes back: the client sees a timeout for an operation that was applied (a network
that dropped the answer, a server that answered after its client gave up). ``lose_after``,
a test on the bytes of a request, sets it as that request goes through.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from tests.support.servers import free_port


class LossyRelay:
    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.port = free_port()
        self.lose_answers = False
        self.lose_after: Callable[[bytes], bool] | None = None
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets: list[socket.socket] = [self.listener]
        self.lock = threading.Lock()

    def __enter__(self) -> LossyRelay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not answers and self.lose_after is not None and self.lose_after(data):
                    self.lose_answers = True
                if not (answers and self.lose_answers):
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
