"""Delivery commands of ``scimbus``: the deliverer and sweeper roles, and the operator's
``deliveries`` (status, retry) and ``resync`` commands."""

from __future__ import annotations

import os
import sys

import click

from libs.config import load_settings
from services.runtime.roles import ROLES

SUMMARY = {role.name: role.summary for role in ROLES}


@click.command("deliverer", help=SUMMARY["deliverer"] + ".", short_help=SUMMARY["deliverer"])
@click.option("--processes", type=click.IntRange(min=0),
              help="delivery worker processes [default: SCIM_DELIVERER_PROCESSES, 1]")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="port of /metrics, /healthz and /readyz; 0: none [default: SCIM_DELIVERER_METRICS_PORT, 8604]")
def cmd_deliverer(processes: int | None, metrics_port: int | None) -> None:
    from services.runtime.launch import run_pool_role

    settings = load_settings()
    run_pool_role(settings, "deliverer", "services.deliverer.pool",
                  processes=settings.deliverer_processes if processes is None else processes,
                  metrics_port=settings.deliverer_metrics_port if metrics_port is None else metrics_port)


@click.command("sweeper", help=SUMMARY["sweeper"] + ".", short_help=SUMMARY["sweeper"])
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0,
              help="serve /metrics, /healthz and /readyz on this port; 0: none")
@click.option("--interval", type=click.FloatRange(min=0), default=0.0,
              help="seconds between sweeps [default: SCIM_SWEEP_INTERVAL, 2]")
def cmd_sweeper(metrics_port: int, interval: float) -> None:
    from libs.web import logs
    from services.sweeper.sweep import run_sweeper

    settings = load_settings()
    logs.configure(settings)  # the same JSON (or plain) lines as every other role
    if metrics_port:
        from services.runtime import probe
        from services.runtime.pool_probes import serve_pool_probes

        collectors = ()
        if settings.gateway_status_url:  # issue 17: the gateway's counts, exported by this singleton
            from libs.metrics.gateway import GatewayStatusCollector

            collectors = (GatewayStatusCollector(settings.gateway_status_url),)
        serve_pool_probes(settings, metrics_port, collectors)
        probe.record("sweeper", f"http://127.0.0.1:{metrics_port}/readyz")
    run_sweeper(interval or settings.sweep_interval)


def _context():
    from services.deliverer.fanout import get_context

    return get_context()


@click.group("deliveries", invoke_without_command=True)
@click.option("--connector", help="only this connector")
@click.pass_context
def cmd_deliveries(ctx_: click.Context, connector: str | None) -> None:
    """Pending, failing and dead-lettered deliveries per connector."""
    if ctx_.invoked_subcommand is None:
        _status(connector)


def _status(only: str | None) -> None:
    from libs.store import deliveries as ledger
    from libs.store.delivery_status import connector_status

    ctx = _context()
    if not ctx.connectors:
        print("no connectors configured ([connectors.<name>] tables of the config file)")
        return
    now = ledger.utcnow()
    for name, connector in ctx.connectors.items():
        if only and name != only:
            continue
        status = connector_status(ctx.store, name, connector.options["app"], tuple(connector.mappings))
        oldest = status.oldest_pending
        lag = f", oldest {int((now - oldest).total_seconds())}s old" if oldest else ""
        print(f"{name} ({connector.kind_name}): {status.pending} pending{lag}, {len(status.failing)} failing, "
              f"{len(status.dead)} dead-lettered")
        for row in status.failing:
            when = row["next_attempt_at"]
            print(f"  failing {row['resource_type']} {row['resource_id']}: attempt {row['attempts']}, "
                  f"next at {when:%Y-%m-%d %H:%M:%S}: {row['last_error']}" if when else
                  f"  failing {row['resource_type']} {row['resource_id']}: {row['last_error']}")
        for row in status.dead:
            print(f"  dead #{row['pk']} {row['resource_type']} {row['resource_id']} v{row['version']} "
                  f"after {row['attempts']} attempt(s): {row['reason']}")


@cmd_deliveries.command("retry")
@click.argument("connector")
@click.argument("ids", nargs=-1, type=int)
def cmd_retry(connector: str, ids: tuple[int, ...]) -> None:
    """Re-queue the dead-lettered deliveries of CONNECTOR (IDS: dead-letter numbers; default: all)."""
    from libs.store.delivery_status import release_dead
    from services.deliverer.fanout import enqueue

    ctx = _context()
    if connector not in ctx.connectors:
        sys.exit(f"no connector {connector!r}; configured: {', '.join(ctx.connectors) or 'none'}")
    keys = release_dead(ctx.store, connector, list(ids) or None)
    for key in keys:
        enqueue(ctx.queue, connector, key, f"dlv-{connector}-retry-{key.resource_type}-"
                                           f"{key.resource_id}-{os.urandom(4).hex()}", timeout=ctx.settings.delivery_timeout)
    print(f"{connector}: {len(keys)} resource(s) re-queued for delivery")


_LEFT = {"conflict": "leave conflicting", "foreign": "leave foreign"}
"""How resync reports what it leaves (never with "would": a dry run and a real one leave it alike)."""


@click.command("resync")
@click.argument("connector")
@click.option("--dry-run", is_flag=True, help="report the drift, change nothing")
@click.option("--adopt", is_flag=True,
              help="take over target entries that hold a resource's place (its DN, its userName) without our "
                   "anchor, writing it on them; without it they are reported and left")
@click.option("--prune-foreign", is_flag=True,
              help="remove target entries whose anchor names no resource of ours (none, or another); without "
                   "it they are reported and left")
def cmd_resync(connector: str, dry_run: bool, adopt: bool, prune_foreign: bool) -> None:
    """Compare CONNECTOR's target with the directory and repair the drift."""
    from services.cli.progress import Progress
    from services.deliverer.resync import resync

    ctx = _context()
    target = ctx.connectors.get(connector)
    if target is None:
        sys.exit(f"no connector {connector!r}; configured: {', '.join(ctx.connectors) or 'none'}")
    with Progress(f"resync {connector}") as progress:
        report = resync(ctx, target, dry_run=dry_run, adopt=adopt, prune_foreign=prune_foreign, progress=progress)
    for d in report.drift:
        detail = f" ({', '.join(d.fields)})" if d.fields else ""
        would = "would " if dry_run and d.action not in _LEFT else ""
        print(f"{would}{_LEFT.get(d.action, d.action)} {d.resource_type} {d.key}{detail}")
    print(f"{connector}: {'drift: would have ' if dry_run else ''}{report.summary()}")


@click.command("maintain")
def cmd_maintain() -> None:
    """Purge now what the retention no longer keeps (the sweeper does it every minute)."""
    from libs.store.access import open_store
    from libs.store.retention import purge_with_settings

    settings = load_settings()
    store = open_store(settings, pool_size=1)
    try:
        report = purge_with_settings(store, settings)
    finally:
        store.close()
    print(", ".join(f"{table}: {count} purged" for table, count in report.purged.items()))


COMMANDS = (cmd_deliverer, cmd_sweeper, cmd_deliveries, cmd_resync, cmd_maintain)
