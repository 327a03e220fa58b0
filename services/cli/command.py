"""The ``scimbus`` command: one subcommand per role, plus operator commands.

One install (and one container image) serves every role; compose, Kubernetes and the
local run all start the same ``scimbus <role>`` commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from libs.config import Settings, load_settings


def _prepare_metrics(role: str) -> None:
    from libs.metrics.multiproc import prepare_metrics_dir

    settings = load_settings()
    base = Path(settings.metrics_dir) if settings.metrics_dir else settings.var_dir / "metrics"
    prepare_metrics_dir(base, role)


def _gunicorn(role: str, module: str, args: argparse.Namespace) -> None:
    load_settings()  # fail at boot, naming the variable, on a bad setting
    _prepare_metrics(role)
    from services.runtime import probe

    binds = args.bind or (os.environ.get("SCIM_BIND") or f"127.0.0.1:{args.port}").split(",")
    probe.record(role, next((u for u in map(probe.probe_url, binds) if u), None))
    threads_variable = "SCIM_READER_THREADS" if role == "reader" else "SCIM_HTTP_THREADS"
    os.environ.update({"SCIM_BIND": ",".join(binds), "SCIM_HTTP_WORKERS": str(args.workers),
                       threads_variable: str(args.threads), "SCIM_ROLE": f"scimbus-{role}"})
    if getattr(args, "worker_sockets", None):
        os.environ["SCIM_WORKER_SOCKETS"] = args.worker_sockets
    # glibc gives each thread that allocates an arena of its own (up to 8 per core): 16 request
    # threads spread a worker's garbage over up to 16 heaps that each keep their high-water
    # mark. Two arenas cut the front's peak PSS by ~4-5 MB under load and the reader's by ~9
    # MB after GETs of a 30,000-member group; CPython allocates under the GIL, so two arenas
    # are not contended.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:services.runtime.gunicorn_conf",
                               f"{module}:app"])


def cmd_front(args: argparse.Namespace) -> None:
    _gunicorn("front", "services.front.wsgi", args)


def cmd_reader(args: argparse.Namespace) -> None:
    _gunicorn("reader", "services.reader.wsgi", args)


def run_pool_role(role: str, module: str, args: argparse.Namespace) -> None:
    """A pool role (worker, deliverer): fresh metrics files, its readiness URL recorded for
    ``scimbus health``, then ``module.run_pool``. The module is imported only after the
    metrics folder is set, since importing it defines the metrics."""
    import importlib

    from services.runtime import probe

    _prepare_metrics(role)
    if args.metrics_port:
        probe.record(role, f"http://127.0.0.1:{args.metrics_port}/readyz")
    importlib.import_module(module).run_pool(load_settings(), processes=args.processes,
                                             metrics_port=args.metrics_port)


def cmd_worker(args: argparse.Namespace) -> None:
    run_pool_role("worker", "services.worker.pool", args)


def cmd_migrate(args: argparse.Namespace) -> None:
    from libs.security.key_encryption import KeyEncryptionError
    from libs.store.migrate import upgrade

    settings = load_settings()
    try:
        upgrade(settings.database, settings=settings)
    except KeyEncryptionError as exc:  # 0005 seals the signing keys already stored
        sys.exit(f"scimbus: cannot migrate: {exc}")
    print(f"database is at the latest revision: {settings.database.split('@')[-1]}")


def cmd_backup(args: argparse.Namespace) -> None:
    from libs.store.backup import BackupError, backup

    settings = load_settings()
    try:
        backup(settings.database, args.path, force=args.force)
    except BackupError as exc:
        sys.exit(f"scimbus: cannot back up: {exc}")
    print(f"backed up {settings.database.split('@')[-1]} to {args.path}")


def cmd_restore(args: argparse.Namespace) -> None:
    from libs.security.key_encryption import KeyEncryptionError
    from libs.store.backup import BackupError, restore

    settings = load_settings()
    try:
        done = restore(args.path, settings.database, force=args.force, settings=settings)
    except (BackupError, KeyEncryptionError) as exc:
        sys.exit(f"scimbus: cannot restore: {exc}")
    print(f"restored {args.path} (revision {done.from_revision}) into {settings.database.split('@')[-1]}, "
          f"now at revision {done.to_revision}")


def cmd_token(args: argparse.Namespace) -> None:
    print(load_settings().tokens[0])


def cmd_run(args: argparse.Namespace) -> None:
    from services.runtime.local_run import run

    sys.exit(run(workers=args.workers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scimbus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, port, threads, default_threads in (
            ("front", cmd_front, 8601, "SCIM_HTTP_THREADS", Settings.http_threads),
            ("reader", cmd_reader, 8602, "SCIM_READER_THREADS", Settings.reader_threads)):
        p = sub.add_parser(name, help=f"serve the {name} under gunicorn")
        # Repeatable: the local run binds its loopback port (metrics, probes) and the unix
        # socket the gateway proxies to.
        p.add_argument("--bind", action="append",
                       help=f"host:port or unix:path, repeatable (default: $SCIM_BIND or 127.0.0.1:{port})")
        p.set_defaults(port=port)
        p.add_argument("--workers", type=int, default=int(os.environ.get("SCIM_HTTP_WORKERS", "2")))
        p.add_argument("--threads", type=int, default=int(os.environ.get(threads, default_threads)))
        p.set_defaults(func=func)
    sub.choices["reader"].add_argument(
        "--worker-sockets", metavar="PREFIX",
        help="each worker process also listens on PREFIX-<n>.sock, its own (services.runtime.gunicorn_worker)")

    p = sub.add_parser("worker", help="run a pool of write workers")
    p.add_argument("--processes", type=int, default=int(os.environ.get("SCIM_WORKER_PROCESSES", "2")))
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("SCIM_WORKER_METRICS_PORT", "8603")))
    p.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="bring the database schema to the latest revision").set_defaults(func=cmd_migrate)
    for name, func, text in (("backup", cmd_backup, "copy the database to PATH, while the services run"),
                             ("restore", cmd_restore, "load a backup into an empty database, then migrate it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("path", metavar="PATH")
        p.add_argument("--force", action="store_true", help="replace an existing file (backup) or database (restore)")
        p.set_defaults(func=func)
    sub.add_parser("token", help="print the bearer token SCIM clients use").set_defaults(func=cmd_token)

    p = sub.add_parser("run", help="run the whole stack in the foreground (the local run)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("SCIM_WORKER_PROCESSES", "2")),
                   help="write worker processes; 0: none, a scaler starts them (SCIM_WORKERS_SCALE_TO_ZERO)")
    p.set_defaults(func=cmd_run)

    from services.runtime import probe  # issue 6: container health checks

    probe.register(sub)

    from services.cli import deliveries as deliveries_cli  # issue 4: deliverer, sweeper, deliveries, resync

    deliveries_cli.register(sub)

    from services.cli import security as security_cli  # issue 5: tokens, audit

    security_cli.register(sub)

    from services.cli import init as init_cli  # issue 17: the first start of compose

    init_cli.register(sub)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
