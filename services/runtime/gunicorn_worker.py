"""A gunicorn worker whose threads take requests straight from the kernel (Linux).

gunicorn's ``gthread`` worker runs every request on a kept-alive connection through four
hand-offs: its main thread polls, unregisters the socket and submits it to a thread pool
(a Future, a work queue, a condition); the pool thread serves the request, then sends the
connection back through a pipe; the main thread reads the pipe and registers the socket
again. Each hand-off is Python code run under the GIL and a thread to wake. On the
reader, whose requests are short, that machinery costs about as much CPU as the Flask
app's own work: ~0.35 ms of a 1.33 ms GET, measured one request at a time.

Here each thread waits on one shared epoll set in which every connection is armed
``EPOLLONESHOT``: the kernel hands a readable connection to exactly one waiting thread,
which parses, serves and answers the request with gthread's own code (``handle``: the
same parser, limits, keep-alive and error handling), then re-arms the connection with
one ``epoll_ctl`` and waits again. No thread stands between the kernel and the one that
serves. With few threads per process (the reader runs two) fewer threads contend for the
GIL too; on two cores at 16 concurrent ``userName eq`` GETs (interleaved A/B runs,
``python -m bench.reads``): 1,340-1,770 GETs/s and p99 14.8-20.3 ms at two threads, against
1,100-1,290 GETs/s and p99 27-34 ms with gthread at 2 or 16 (docs/capacity.md).

Each system call a request thread makes releases the GIL; on a busy process the release
hands it to another thread, and taking it back costs a futex wait and a context switch. So a
response's header block leaves with its body in one send (``_OneSend``), and gthread's
``ioctl``s on a socket that is already blocking, or around draining a body already read,
are skipped. With 16 kept-alive clients on one process of 16 threads whose app waits 2 ms
(the bus) and answers a PATCH-sized request, the worker's CPU per request fell from 379 to
320 µs (medians of 4 interleaved runs); the front's context switches under the bench, by 8%.

What gthread's main loop did, the main thread does here once a second: the heartbeat to
the arbiter, the parent check, and closing kept-alive connections idle past
``keepalive``. It never touches a connection a thread is serving: it marks an idle one
closing and shuts its socket down, and the thread that receives the resulting event
closes it, so only one thread ever owns a connection's close.

Each worker process can also listen on a unix socket of its own (``SCIM_WORKER_SOCKETS``,
set by ``scimbus reader --worker-sockets PREFIX``: ``PREFIX-0.sock``, ``PREFIX-1.sock``…)
so that nginx sees every process as a server and sends each request to the one with the
fewest in flight (``least_conn``). Through one shared socket a kept-alive connection stays
with whichever process accepted it, and the busier process sets the tail: p99 16.2 and
14.9 ms against 18.8 and 18.2 through the shared socket (interleaved runs). A process
claims the first free slot by locking ``PREFIX-N.sock.lock``; the kernel releases the lock
when the process dies, so its replacement takes the same path.

A stop (SIGTERM, ``max_requests``) stops accepting, answers requests that arrive on kept-
alive connections within ``STOP_KEEPALIVE_LINGER`` with ``Connection: close`` (as gthread
does), closes the idle ones, and waits up to ``graceful_timeout`` for requests in flight.
HTTP/2 (nothing in scimbus enables it) would hold a thread per connection; where ``select.epoll`` is missing
(macOS), ``services.runtime.gunicorn_conf`` keeps gthread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import threading
import time

import orjson
from gunicorn.sock import UnixSocket
from gunicorn.workers import base
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from libs.scim.errors import ScimError

WRITTEN_FOR = {"gunicorn": "27.0"}
"""The library minor versions whose internals this module drives (tests/services/runtime/test_library_contracts.py)."""

_ARMED = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, "epoll") else 0
_POLL_SECONDS = 0.5  # how soon an idle thread notices the worker stopping


class _Socket(socket.socket):
    """A connection's socket. gthread sets it blocking before each request, for the selector
    it left it non-blocking for; here it never leaves blocking mode, and the call would be an
    ``ioctl`` that releases the GIL for nothing (see ``_OneSend``)."""

    __slots__ = ()

    def setblocking(self, flag) -> None:
        if not (flag and self.gettimeout() is None):
            super().setblocking(flag)


class _Connection(TConn):
    def __init__(self, cfg, sock, client, server) -> None:
        super().__init__(cfg, _Socket(sock.family, sock.type, sock.proto, fileno=sock.detach()), client, server)
        self.sock.setblocking(True)
        self.data_ready = True  # a thread gets the connection only once epoll finds it readable
        self.busy = False
        self.closing = False


class _OneSend:
    """A connection's socket while one response is written: gunicorn sends the header block
    and then each body chunk with a ``sendall`` of its own; this holds the headers back and
    sends them with the first chunk. Each send is a system call that releases the GIL, and
    on a busy front each release hands the GIL to another thread and costs this one a wait
    to take it back; nginx reads one segment instead of two."""

    __slots__ = ("sock", "held", "started")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held = b""
        self.started = False

    def sendall(self, data) -> None:
        if not self.started:  # the header block: gunicorn sends it before any body byte
            self.started, self.held = True, data
            return
        if self.held:
            data, self.held = self.held + data, b""
        self.sock.sendall(data)

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, b""
            self.sock.sendall(held)

    def sendfile(self, *args, **kwargs):
        self.flush()
        return self.sock.sendfile(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class _ScimErrorPage:
    """The socket gunicorn writes its own refusal to (a request it cannot parse, a request
    line or header field over its limits, before the app sees anything): the same status,
    with a SCIM error body instead of gunicorn's HTML page, which Entra would read as an
    unexpected answer. gunicorn keeps deciding what is refused and with which status."""

    __slots__ = ("sock",)

    _DETAILS = {
        400: "The request is not valid HTTP/1.1.",
        403: "The request is forbidden.",
        414: "The request line is longer than the server accepts.",
        417: "The server cannot meet the request's Expect header.",
        431: "The header fields of the request are larger than the server accepts.",
        501: "The request's transfer coding is not supported.",
    }

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        head = data.split(b"\r\n", 1)[0].split(b" ", 2)  # HTTP/1.1 400 Bad Request
        status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 500
        reason = head[2] if len(head) > 2 else b"Error"
        error = ScimError(self._DETAILS.get(status, "The server failed to process the request."))
        error.status = status  # type: ignore[misc]  # gunicorn's status, as libs.web.errors does werkzeug's
        body = orjson.dumps(error.to_body())
        self.sock.sendall(b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: application/scim+json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (status, reason, len(body), body))

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class EpollWorker(ThreadWorker):
    """gthread's request handling with threads that poll for themselves (see the module)."""

    def init_process(self) -> None:
        self.epoll = select.epoll()
        self.connections: dict[int, _Connection] = {}
        self.listeners = {listener.fileno(): listener for listener in self.sockets}
        self.lock = threading.Lock()
        self.accepting = False
        self.serving = True
        self.own_socket_prefix = os.environ.get("SCIM_WORKER_SOCKETS", "")
        self.own_socket = None
        base.Worker.init_process(self)  # gthread's would build its pool and pipe; this ends in run()

    def handle_exit(self, sig, frame) -> None:
        self.alive = False
        self._wake()

    def handle_quit(self, sig, frame) -> None:
        base.Worker.handle_quit(self, sig, frame)

    def handle_error(self, req, client, addr, exc) -> None:
        super().handle_error(req, _ScimErrorPage(client), addr, exc)

    def handle_request(self, req, conn):
        sock = conn.sock
        conn.sock = out = _OneSend(sock)  # this thread owns the connection until it re-arms it
        try:
            keep = super().handle_request(req, conn)
            out.flush()  # a response without a body: its header block alone
            return keep
        finally:
            conn.sock = sock
            if not self.alive:  # max_requests reached: stop accepting now, not at the next tick
                self._wake()

    def _keepalive_after(self, conn, keepalive):
        # gthread drains what the app left of the body under a timeout: two ioctls to set and
        # reset it, each a release of the GIL. A body read to its end (Content-Length: every
        # SCIM request nginx forwards; the app drains what it does not read) leaves nothing.
        body = getattr(conn.parser.mesg, "body", None)
        if (keepalive and body is not None and getattr(body.reader, "length", None) == 0
                and not body.buf.tell() and not body.failed):
            return True
        return super()._keepalive_after(conn, keepalive)

    def _wake(self) -> None:
        try:
            os.write(self.PIPE[1], b".")
        except OSError:
            pass

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
        with self.lock:
            self._accept_enabled(True)
        self._claim_own_socket()
        threads = [threading.Thread(target=self._serve, name=f"http-{i}", daemon=True)
                   for i in range(self.cfg.threads)]
        for thread in threads:
            thread.start()
        while self.alive:
            self.notify()
            self._sleep(1.0)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False
            self._expire(time.monotonic())
            self._claim_own_socket()
        self._stop(threads)

    def _claim_own_socket(self) -> None:
        """Listen on the first free ``PREFIX-N.sock`` (see the module); until one is free
        (a worker started while the one it replaces still stops), try again each second."""
        if not self.own_socket_prefix or self.own_socket is not None:
            return
        for slot in range(self.cfg.workers):
            path = f"{self.own_socket_prefix}-{slot}.sock"
            lock = os.open(path + ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue
            listener = UnixSocket(path, self.cfg, self.log)  # replaces the dead owner's socket file
            listener.setblocking(False)
            self.own_socket = (listener, lock)  # the lock is held as long as this process lives
            with self.lock:
                self.sockets.append(listener)
                self.listeners[listener.fileno()] = listener
                if self.accepting:
                    self.epoll.register(listener.fileno(), _ARMED)
            self.log.info("Listening at: unix:%s (this worker's own)", path)
            return

    def _sleep(self, seconds: float) -> None:
        try:
            if select.select([self.PIPE[0]], [], [], seconds)[0]:
                os.read(self.PIPE[0], 64)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise

    def _stop(self, threads: list[threading.Thread]) -> None:
        with self.lock:
            self._accept_enabled(False)
        now = time.monotonic()
        linger, deadline = now + STOP_KEEPALIVE_LINGER, now + self.cfg.graceful_timeout
        while self.connections and time.monotonic() < deadline:
            self.notify()
            self._sleep(0.1)
            # Until the linger ends, a request on a kept-alive connection is still served
            # (gthread's handle_request answers it "Connection: close" once not alive).
            self._expire(time.monotonic() if time.monotonic() < linger else float("inf"))
        self.serving = False
        for thread in threads:
            thread.join(_POLL_SECONDS * 2)
        for listener in self.sockets:
            listener.close()
        self.epoll.close()

    def _accept_enabled(self, enabled: bool) -> None:
        """Arm or disarm the listeners; call with the lock held."""
        if enabled == self.accepting:
            return
        for fd in self.listeners:
            if enabled:
                self.epoll.register(fd, _ARMED)
            else:
                self.epoll.unregister(fd)
        self.accepting = enabled

    def _expire(self, now: float) -> None:
        with self.lock:
            for connection in self.connections.values():
                if not connection.busy and not connection.closing and connection.timeout <= now:
                    connection.closing = True
                    try:
                        connection.sock.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and closes it
                    except OSError:
                        pass

    def _serve(self) -> None:
        poll = self.epoll.poll
        while self.serving:
            try:
                events = poll(_POLL_SECONDS, 1)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return  # the epoll set was closed: the worker is gone
            for fd, _ in events:
                listener = self.listeners.get(fd)
                if listener is not None:
                    self._accept(listener)
                else:
                    self._answer(fd)

    def _answer(self, fd: int) -> None:
        with self.lock:
            connection = self.connections.get(fd)
            if connection is None:
                return
            if connection.closing:
                self._forget(fd)
            else:
                connection.busy = True
        if connection.closing:
            connection.close()
            return
        try:
            keep = self.handle(connection)
            # A request the client sent right behind this one (pipelined, or read ahead
            # while draining a body) is in the parser's buffer, not in the socket: epoll
            # would never report it.
            while keep and connection.parser.unreader.buf.getvalue():
                keep = self.handle(connection)
        except Exception:
            self.log.exception("Error serving a connection")
            keep = False
        with self.lock:
            connection.busy = False
            if keep:
                connection.set_timeout()
                self.epoll.modify(fd, _ARMED)
                return
            self._forget(fd)
        connection.close(graceful=True)  # outside the lock: it may wait (briefly) for the peer's FIN

    def _forget(self, fd: int) -> None:
        """Stop watching a connection that is about to be closed; call with the lock held.
        Its descriptor stays open until then, so no new connection can reuse the number."""
        del self.connections[fd]
        self.epoll.unregister(fd)
        if self.alive and len(self.connections) < self.worker_connections:
            self._accept_enabled(True)

    def _accept(self, listener) -> None:
        # Under the lock: once _stop has disarmed the listeners no thread still accepts, so
        # no connection is taken in that the stopping worker would drop.
        failed = False
        with self.lock:
            if not (self.accepting and self.alive):
                return
            try:
                sock, client = listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                    self.log.warning("accept failed: %s", exc)
                    failed = True
            else:
                connection = _Connection(self.cfg, sock, client, listener.getsockname())
                connection.set_timeout()
                fd = connection.sock.fileno()  # ``sock`` itself was handed over (detached)
                self.connections[fd] = connection
                self.epoll.register(fd, _ARMED)
            if len(self.connections) >= self.worker_connections:
                self._accept_enabled(False)
            elif not failed:
                self.epoll.modify(listener.fileno(), _ARMED)
        if failed:
            # e.g. out of descriptors: re-armed after a pause, not spun on; the pause is
            # outside the lock, so the other threads go on serving meanwhile
            time.sleep(0.1)
            with self.lock:
                if self.accepting and self.alive:
                    self.epoll.modify(listener.fileno(), _ARMED)
