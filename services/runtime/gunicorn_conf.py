"""gunicorn settings shared by the front and the reader (``-c python:services.runtime.gunicorn_conf``).

Both run ``services.runtime.gunicorn_worker.EpollWorker`` (gthread where ``select.epoll`` is
missing): its threads take requests straight from the kernel instead of through gthread's
poller, pool and pipe. The front runs 16 threads per process, since its requests spend most
of their time waiting on the bus; the reader's requests are short and CPU-bound and it runs
two (see that module for why and what it measured). On the front the worker took its CPU per
write from 1.15 and 1.03 ms to 0.87 and 0.89 (interleaved runs of ``python -m bench --no-peer``,
2,000 users, 16 clients). Values come from the CLI's environment.

Memory: the master loads the app (``preload_app``) and freezes its objects before each fork,
so the workers share the ~50 MB of code and objects it holds instead of each importing its
own copy; frozen, those objects are never written by a worker's garbage collections (a
write to a shared page gives the writer a private copy of it). Building the app opens no
connection: Redis and SQLAlchemy connect on first use, in the worker.
"""

import gc
import os
import select

from prometheus_client import multiprocess

from libs.config import Settings

bind = os.environ.get("SCIM_BIND", "127.0.0.1:8601").split(",")  # set by the CLI from its --bind options
workers = int(os.environ.get("SCIM_HTTP_WORKERS", "2"))
worker_class = "services.runtime.gunicorn_worker.EpollWorker" if hasattr(select, "epoll") else "gthread"
if os.environ.get("SCIM_ROLE") == "scimbus-reader":
    threads = int(os.environ.get("SCIM_READER_THREADS", Settings.reader_threads))
else:
    threads = int(os.environ.get("SCIM_HTTP_THREADS", Settings.http_threads))
keepalive = 75  # longer than nginx's upstream keepalive_timeout, so nginx closes first
timeout = 90  # a request may wait SCIM_WRITE_TIMEOUT (30 s) on the bus; this is the hard stop
graceful_timeout = 40  # on SIGTERM, let waiting writes get their answer
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = None
control_socket_disable = True  # two gunicorns (front, reader) on one host would share its default path
errorlog = "-"
loglevel = os.environ.get("SCIM_LOG_LEVEL", "info").lower()
proc_name = os.environ.get("SCIM_ROLE", "scimbus")
preload_app = True
# Issue 5: a filter up to SCIM_MAX_FILTER_LENGTH must reach the app (400 above it), not
# gunicorn's HTML 414; the gateway caps the request line (large_client_header_buffers 64k).
limit_request_line = 0
# Likewise a header field the gateway passes (up to its 64k buffer: a long bearer token) must
# reach the app, which answers it; gunicorn's own limit (8,190 bytes) answered 431.
limit_request_field_size = 65536


def pre_fork(server, worker):
    gc.collect()  # garbage frozen now would never be freed
    gc.freeze()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
