"""``python -m bench --profile-front DIR``: where the front's CPU goes under the bench's load.

py-spy cannot read this machine's Python, and ``bench.profile_writes --role front`` calls the
WSGI app alone, without gunicorn, the threads or the bus. With ``--profile-front`` the
bench puts this folder on the stack's ``PYTHONPATH``; its ``sitecustomize`` runs each
request thread of the front's gunicorn workers under cProfile with a thread-CPU clock
(time waiting on the GIL, a socket or an Event is not counted) and writes one ``.prof`` per
thread when the worker stops. Nothing of it is imported by a service itself: without the
option no code of this folder runs. ``python -m bench.front_profile DIR`` merges and prints them.

Read it for *where*, not *how much*: the clock is a system call per function call and
return, so the profiled front spends ~5x its CPU, and call-heavy Python is charged most.
Kernel time (context switches, loopback TCP) shows better with ``perf record -p`` on the
workers, or as counts (``strace -c -f -p``, ``/proc/PID/task/*/status``).
"""

import os

PROFILE_DIR_VARIABLE = "BENCH_PROFILE_FRONT_DIR"
FOLDER = os.path.dirname(os.path.abspath(__file__))
