"""The ``scimbus`` command: one subcommand per role, plus operator commands (click).

One install (and one container image) serves every role; compose, Kubernetes and the
local run all start the same ``scimbus <role>`` commands (the roles:
``services.runtime.roles``). Each command group has a module of its own beside this one
(deliveries, security, init); this module holds the root, the roles that serve HTTP or
apply writes, and the database commands.

Settings are read when a command runs, never while the command line is parsed: ``--help``
works whatever the environment holds, and a bad setting ends the command with one line
naming the variable, its value and what is expected (exit status 2), never a traceback.
"""

from __future__ import annotations

import sys
import textwrap

import click

from libs.config import Settings, SettingsError, load_settings
from services.runtime.roles import ROLES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SUMMARY = {role.name: role.summary for role in ROLES}


class _Listed(click.Group):
    """Lists the roles first, then the other commands as added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        roles = [role.name for role in ROLES if role.name in self.commands]
        return roles + [name for name in self.commands if name not in roles]


@click.group(cls=_Listed, context_settings=CONTEXT)
# package_name: the installed version, looked up only when --version is asked (importlib.metadata
# costs ~0.1 s of every command's start otherwise)
@click.version_option(None, "--version", "-V", package_name="scimbus", prog_name="scimbus",
                      message="%(prog)s %(version)s")
def scimbus() -> None:
    """scimbus: a SCIM 2.0 service for Microsoft Entra ID.

    \b
    Roles (one process group each; compose, Kubernetes and `scimbus run` start them):
      front, reader, worker, deliverer, sweeper
    Settings come from SCIM_* variables (see README.md, libs/config.py).
    """


def settings() -> Settings:
    """The settings, read now; a bad one raises SettingsError, which ``main`` reports."""
    return load_settings()


# --- the roles -----------------------------------------------------------------------------

def _http_options(port: int):
    def decorate(func):
        # Repeatable: the local run binds its loopback port (metrics, probes) and the unix
        # socket the gateway proxies to.
        func = click.option("--bind", "binds", multiple=True, metavar="ADDRESS",
                            help=f"host:port or unix:PATH, repeatable [default: $SCIM_BIND or 127.0.0.1:{port}]")(func)
        func = click.option("--workers", type=click.IntRange(min=1), help="gunicorn worker processes "
                            "[default: SCIM_HTTP_WORKERS, 2]")(func)
        return func
    return decorate


def _binds(given: tuple[str, ...], port: int) -> list[str]:
    import os

    return list(given) or (os.environ.get("SCIM_BIND") or f"127.0.0.1:{port}").split(",")


@scimbus.command("front", help=SUMMARY["front"] + ".", short_help=SUMMARY["front"])
@_http_options(8601)
@click.option("--threads", type=click.IntRange(min=1), help="threads per worker [default: SCIM_HTTP_THREADS, 16]")
def cmd_front(binds: tuple[str, ...], workers: int | None, threads: int | None) -> None:
    from services.runtime.launch import gunicorn

    s = settings()
    gunicorn(s, "front", "services.front.wsgi", binds=_binds(binds, 8601), workers=workers or s.http_workers,
             threads=threads or s.http_threads)


@scimbus.command("reader", help=SUMMARY["reader"] + ".", short_help=SUMMARY["reader"])
@_http_options(8602)
@click.option("--threads", type=click.IntRange(min=1), help="threads per worker [default: SCIM_READER_THREADS, 2]")
@click.option("--worker-sockets", metavar="PREFIX",
              help="each worker process also listens on PREFIX-<n>.sock, its own (the local run's gateway)")
def cmd_reader(binds: tuple[str, ...], workers: int | None, threads: int | None, worker_sockets: str | None) -> None:
    from services.runtime.launch import gunicorn

    s = settings()
    gunicorn(s, "reader", "services.reader.wsgi", binds=_binds(binds, 8602), workers=workers or s.http_workers,
             threads=threads or s.reader_threads, worker_sockets=worker_sockets)


def _pool_options(processes: str, port: str):
    def decorate(func):
        func = click.option("--processes", type=click.IntRange(min=0),
                            help=f"worker processes [default: {processes}]")(func)
        func = click.option("--metrics-port", type=click.IntRange(0, 65535),
                            help=f"port of /metrics, /healthz and /readyz; 0: none [default: {port}]")(func)
        return func
    return decorate


@scimbus.command("worker", help=SUMMARY["worker"] + ".", short_help=SUMMARY["worker"])
@_pool_options("SCIM_WORKER_PROCESSES, 2", "SCIM_WORKER_METRICS_PORT, 8603")
def cmd_worker(processes: int | None, metrics_port: int | None) -> None:
    from services.runtime.launch import run_pool_role

    s = settings()
    run_pool_role(s, "worker", "services.worker.pool",
                  processes=s.worker_processes if processes is None else processes,
                  metrics_port=s.worker_metrics_port if metrics_port is None else metrics_port)


@scimbus.command("run")
@click.option("--workers", type=click.IntRange(min=0),
              help="write worker processes; 0: none, a scaler starts them (SCIM_WORKERS_SCALE_TO_ZERO) "
                   "[default: SCIM_WORKER_PROCESSES, 2]")
def cmd_run(workers: int | None) -> None:
    """Run the whole stack in the foreground (the local run)."""
    from services.runtime.local_run import run

    s = settings()
    sys.exit(run(workers=s.worker_processes if workers is None else workers))


@scimbus.command("health")
@click.argument("role", required=False, type=click.Choice([r.name for r in ROLES]))
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="seconds to wait for each role's answer")
def cmd_health(role: str | None, timeout: float) -> None:
    """Exit 0 when the roles started here are ready (the container HEALTHCHECK).

    Each serving role records its /readyz URL when it starts; this asks each of them (or
    only ROLE's).
    """
    from services.runtime import probe

    sys.exit(probe.check(role, timeout))


# --- the database --------------------------------------------------------------------------

@scimbus.command("migrate")
def cmd_migrate() -> None:
    """Bring the database schema to the latest revision."""
    from libs.security.key_encryption import KeyEncryptionError
    from libs.store.migrate import upgrade

    s = settings()
    try:
        upgrade(s.database, settings=s)
    except KeyEncryptionError as exc:  # 0005 seals the signing keys already stored
        sys.exit(f"scimbus: cannot migrate: {exc}")
    click.echo(f"database is at the latest revision: {s.database.split('@')[-1]}")


_FORCE = click.option("--force", is_flag=True, help="replace an existing file (backup) or database (restore)")


@scimbus.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@_FORCE
def cmd_backup(path: str, force: bool) -> None:
    """Copy the database to PATH, while the services run."""
    from libs.store.backup import BackupError, backup

    s = settings()
    try:
        backup(s.database, path, force=force)
    except BackupError as exc:
        sys.exit(f"scimbus: cannot back up: {exc}")
    click.echo(f"backed up {s.database.split('@')[-1]} to {path}")


@scimbus.command("restore")
@click.argument("path", type=click.Path(dir_okay=False))
@_FORCE
def cmd_restore(path: str, force: bool) -> None:
    """Load a backup into an empty database, then migrate it."""
    from libs.security.key_encryption import KeyEncryptionError
    from libs.store.backup import BackupError, restore

    s = settings()
    try:
        done = restore(path, s.database, force=force, settings=s)
    except (BackupError, KeyEncryptionError) as exc:
        sys.exit(f"scimbus: cannot restore: {exc}")
    click.echo(f"restored {path} (revision {done.from_revision}) into {s.database.split('@')[-1]}, "
               f"now at revision {done.to_revision}")


@scimbus.command("settings")
@click.option("--markdown", is_flag=True, help="a Markdown table instead of text")
def cmd_settings(markdown: bool) -> None:
    """Every SCIM_* setting: type, default, bounds and meaning (from libs/config.py)."""
    from libs.config import setting_docs

    docs = setting_docs()
    if markdown:
        click.echo("| variable | type | default | bounds | meaning |\n|---|---|---|---|---|")
        for d in docs:
            default = "" if d.default in (None, "") else f"`{d.default}`"
            click.echo(f"| `{d.variable}` | {d.kind} | {default} | {d.bounds} | {d.doc.replace('|', '/')} |")
        return
    for d in docs:
        default = "" if d.default in (None, "") else f" = {d.default}"
        bounds = f", {d.bounds}" if d.bounds else ""
        click.echo(f"{d.variable} ({d.kind}{bounds}){default}")
        if d.doc:
            click.echo(textwrap.fill(d.doc.replace("``", "`"), 96, initial_indent="    ", subsequent_indent="    "))


@scimbus.command("token")
def cmd_token() -> None:
    """Print the bearer token SCIM clients use."""
    click.echo(settings().tokens[0])


def _add_command_groups() -> None:
    from services.cli import deliveries, init, security

    for module in (deliveries, security, init):
        for command in module.COMMANDS:
            scimbus.add_command(command)


_add_command_groups()


def main(argv: list[str] | None = None) -> None:
    """The ``scimbus`` entry point. Exits (SystemExit) after ``--help``/``--version`` and on
    errors; returns after a command that ran to its end."""
    try:
        code = scimbus.main(args=argv, prog_name="scimbus", standalone_mode=False)
    except SettingsError as exc:
        click.echo(f"scimbus: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:  # a usage error: click's message, its exit status (2)
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("scimbus: aborted", err=True)
        sys.exit(1)
    if isinstance(code, int):  # --help, --version: click returns their exit status
        sys.exit(code)


if __name__ == "__main__":
    main()
