"""Loaded by every Python of a stack the bench runs with ``--profile-front`` (see ``bench.front_profile``)."""

import os

if os.environ.get("BENCH_PROFILE_FRONT_DIR") and os.environ.get("SCIM_ROLE") == "scimbus-front":
    import sys

    def _profile_request_threads() -> None:
        """In each gunicorn worker (after the fork: the master loaded the worker class), wrap
        the request threads' loop."""
        worker = sys.modules.get("services.runtime.gunicorn_worker")
        if worker is None or hasattr(worker.EpollWorker._serve, "profiled"):
            return
        import cProfile
        import threading
        import time

        serve = worker.EpollWorker._serve

        def _serve(self) -> None:
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            try:
                serve(self)
            finally:
                profile.disable()
                profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_FRONT_DIR"],
                                                f"front-{os.getpid()}-{threading.get_ident()}.prof"))

        _serve.profiled = True
        worker.EpollWorker._serve = _serve

    os.register_at_fork(after_in_child=_profile_request_threads)
