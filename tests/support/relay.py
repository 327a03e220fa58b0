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


class RangingRelay(LossyRelay):
    """A relay in front of slapd that hands out one multi-valued attribute in ranges, as Active
    Directory hands out ``member`` past 1,500 values: an entry carrying more than ``size`` values
    of it comes back as ``member;range=0-<size-1>`` with the first ``size``; a search asking for
    ``member;range=<n>-*`` is sent to slapd as one for ``member`` and answered with the values
    from ``n`` on, ``member;range=<n>-<m>`` while more remain, ``member;range=<n>-*`` for the last.
    ``ranged`` counts the entries it cut."""

    def __init__(self, port: int, attribute: str = "member", size: int = 100) -> None:
        super().__init__(port)
        self.attribute, self.size = attribute.lower(), size
        self.asked: dict[int, int] = {}  # message id → first value asked for
        self.ranged = 0

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        from ldap3.strategy.base import BaseStrategy

        buffer = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                buffer += data
                while (size := BaseStrategy.compute_ldap_message_size(buffer)) != -1 and len(buffer) >= size:
                    message, buffer = buffer[:size], buffer[size:]
                    sink.sendall(self._rewrite(message, answers))
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _rewrite(self, raw: bytes, answer: bool) -> bytes:
        from ldap3.protocol.rfc4511 import LDAPMessage
        from pyasn1.codec.ber import decoder, encoder

        message, _ = decoder.decode(raw, asn1Spec=LDAPMessage())
        op = message["protocolOp"]
        kind = op.getName()
        if not answer and kind == "searchRequest":
            selection = op["searchRequest"]["attributes"]
            for n in range(len(selection)):
                name = str(selection[n])
                if name.lower().startswith(self.attribute + ";range="):
                    self.asked[int(message["messageID"])] = int(name.split("=", 1)[1].split("-")[0])
                    selection[n] = self.attribute
            return encoder.encode(message)
        if answer and kind == "searchResEntry":
            start = self.asked.get(int(message["messageID"]), 0)
            for attribute in op["searchResEntry"]["attributes"]:
                values = [bytes(v) for v in attribute["vals"]]
                if str(attribute["type"]).lower() != self.attribute or (start == 0 and len(values) <= self.size):
                    continue
                chunk = values[start:start + self.size]
                last = start + len(chunk) >= len(values)
                attribute["type"] = f"{self.attribute};range={start}-{'*' if last else start + len(chunk) - 1}"
                attribute["vals"].clear()
                for n, value in enumerate(chunk):
                    attribute["vals"][n] = value
                self.ranged += 1
            return encoder.encode(message)
        return raw
