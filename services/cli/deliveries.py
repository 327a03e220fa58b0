"""Delivery subcommands of ``scimbus``: the deliverer and sweeper roles, and the operator's
``deliveries`` (status, retry) and ``resync`` commands."""

from __future__ import annotations

import argparse
import os
import sys

from libs.config import load_settings


def cmd_deliverer(args: argparse.Namespace) -> None:
    from services.cli.command import run_pool_role

    run_pool_role("deliverer", "services.deliverer.pool", args)


def cmd_sweeper(args: argparse.Namespace) -> None:
    from libs.web import logs
    from services.sweeper.sweep import run_sweeper

    settings = load_settings()
    logs.configure(settings)  # the same JSON (or plain) lines as every other role
    if args.metrics_port:
        from services.runtime import probe
        from services.runtime.rq_pool import serve_pool_probes

        collectors = ()
        if settings.gateway_status_url:  # issue 17: the gateway's counts, exported by this singleton
            from libs.metrics.gateway import GatewayStatusCollector

            collectors = (GatewayStatusCollector(settings.gateway_status_url),)
        serve_pool_probes(settings, args.metrics_port, collectors)
        probe.record("sweeper", f"http://127.0.0.1:{args.metrics_port}/readyz")
    run_sweeper(args.interval or settings.sweep_interval)


def _context():
    from services.deliverer.fanout import get_context

    return get_context()


def cmd_deliveries(args: argparse.Namespace) -> None:
    from libs.store import deliveries as ledger

    ctx = _context()
    if not ctx.connectors:
        print("no connectors configured ([connectors.<name>] tables of the config file)")
        return
    now = ledger.utcnow()
    with ctx.store.engine.connect() as conn:
        for name, connector in ctx.connectors.items():
            if args.connector and name != args.connector:
                continue
            app, types = connector.options["app"], tuple(connector.mappings)
            waiting = ledger.pending(conn, name, app, types, limit=100_000)
            failing = ledger.failing(conn, name)
            dead = ledger.dead(conn, name)
            oldest = min((p.since for p in waiting), default=None)
            lag = f", oldest {int((now - oldest).total_seconds())}s old" if oldest else ""
            print(f"{name} ({connector.kind_name}): {len(waiting)} pending{lag}, {len(failing)} failing, "
                  f"{len(dead)} dead-lettered")
            for row in failing:
                when = row["next_attempt_at"]
                print(f"  failing {row['resource_type']} {row['resource_id']}: attempt {row['attempts']}, "
                      f"next at {when:%Y-%m-%d %H:%M:%S}: {row['last_error']}" if when else
                      f"  failing {row['resource_type']} {row['resource_id']}: {row['last_error']}")
            for row in dead:
                print(f"  dead #{row['pk']} {row['resource_type']} {row['resource_id']} v{row['version']} "
                      f"after {row['attempts']} attempt(s): {row['reason']}")


def cmd_retry(args: argparse.Namespace) -> None:
    from libs.store import deliveries as ledger
    from services.deliverer.fanout import enqueue

    ctx = _context()
    if args.connector not in ctx.connectors:
        sys.exit(f"no connector {args.connector!r}; configured: {', '.join(ctx.connectors) or 'none'}")
    with ctx.store.transaction() as conn:
        keys = ledger.release_dead(conn, args.connector, args.ids or None)
    for key in keys:
        enqueue(ctx.queue, args.connector, key, f"dlv-{args.connector}-retry-{key.resource_type}-"
                                                f"{key.resource_id}-{os.urandom(4).hex()}", timeout=ctx.settings.delivery_timeout)
    print(f"{args.connector}: {len(keys)} resource(s) re-queued for delivery")


_LEFT = {"conflict": "leave conflicting", "foreign": "leave foreign"}
"""How resync reports what it leaves (never with "would": a dry run and a real one leave it alike)."""


def cmd_resync(args: argparse.Namespace) -> None:
    from services.deliverer.resync import resync

    ctx = _context()
    connector = ctx.connectors.get(args.connector)
    if connector is None:
        sys.exit(f"no connector {args.connector!r}; configured: {', '.join(ctx.connectors) or 'none'}")

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            width = 30
            filled = int(width * done / max(total, 1))
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

    report = resync(ctx, connector, dry_run=args.dry_run, adopt=args.adopt, prune_foreign=args.prune_foreign,
                    progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for d in report.drift:
        detail = f" ({', '.join(d.fields)})" if d.fields else ""
        would = "would " if args.dry_run and d.action not in _LEFT else ""
        print(f"{would}{_LEFT.get(d.action, d.action)} {d.resource_type} {d.key}{detail}")
    print(f"{args.connector}: {'drift: would have ' if args.dry_run else ''}{report.summary()}")


def register(sub) -> None:
    p = sub.add_parser("deliverer", help="run a pool of delivery workers (downstream connectors)")
    p.add_argument("--processes", type=int, default=int(os.environ.get("SCIM_DELIVERER_PROCESSES", "1")))
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("SCIM_DELIVERER_METRICS_PORT", "8604")))
    p.set_defaults(func=cmd_deliverer)

    p = sub.add_parser("sweeper", help="re-enqueue committed changes not yet delivered, and due retries")
    p.add_argument("--metrics-port", type=int, default=0, help="serve /healthz and /readyz on this port (0: none)")
    p.add_argument("--interval", type=float, default=0.0)
    p.set_defaults(func=cmd_sweeper)

    p = sub.add_parser("deliveries", help="pending, failing and dead-lettered deliveries per connector")
    p.add_argument("--connector", help="only this connector")
    p.set_defaults(func=cmd_deliveries)
    retry_sub = p.add_subparsers(dest="action")
    r = retry_sub.add_parser("retry", help="re-queue dead-lettered deliveries of a connector")
    r.add_argument("connector")
    r.add_argument("ids", nargs="*", type=int, help="dead-letter numbers (default: all of the connector)")
    r.set_defaults(func=cmd_retry)

    p = sub.add_parser("resync", help="compare a connector's target with the directory and repair the drift")
    p.add_argument("connector")
    p.add_argument("--dry-run", action="store_true", help="report the drift, change nothing")
    p.add_argument("--adopt", action="store_true",
                   help="take over target entries that hold a resource's place (its DN, its userName) without "
                        "our anchor, writing it on them; without it they are reported and left")
    p.add_argument("--prune-foreign", action="store_true",
                   help="remove target entries whose anchor names no resource of ours (none, or another); "
                        "without it they are reported and left")
    p.set_defaults(func=cmd_resync)
