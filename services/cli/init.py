"""``scimbus init``: what a fresh clone needs before ``docker compose up -d`` (issue 17).

It adds to ``.env`` every secret compose.yaml requires and the file lacks (a missing name or
an empty ``NAME=``), turns the Grafana profile on unless ``COMPOSE_PROFILES`` is already
set, writes an empty ``scimbus.toml`` (connectors) and a self-signed certificate for this
host under ``deploy/tls/`` where none exists. It never overwrites a value or a file, so it
is safe to run again, e.g. after an upgrade that requires a new secret.

The file is written as compose reads it (``NAME=value`` lines); python-dotenv would parse it
too, but only the names matter here and every value we write is URL-safe text.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
from pathlib import Path

import click

SECRETS = {
    "SCIM_TOKEN": "the bearer token Entra sends (its app's Secret Token)",
    "POSTGRES_PASSWORD": "PostgreSQL's password",
    "REDIS_PASSWORD": "Redis's password",
    "GRAFANA_ADMIN_PASSWORD": "Grafana's admin password",
    "SCIM_KEY_ENCRYPTION_KEY": "the Fernet key that seals the OAuth signing keys in the database",
}
CONFIG_STUB = """\
# scimbus settings for compose.yaml (mounted at /etc/scimbus/scimbus.toml in every role).
# Connectors ([connectors.<name>] tables) and schema extensions: see README.md.
# The roles run as uid 10001: keep this file readable by it.
"""


def _assignments(text: str) -> dict[str, str]:
    return {m[1]: m[2].strip().strip("'\"") for m in re.finditer(r"^\s*(?:export\s+)?([A-Za-z_]\w*)\s*=(.*)$", text, re.M)}


def _secret(name: str) -> str:
    if name == "SCIM_KEY_ENCRYPTION_KEY":  # Fernet's own form: 32 random bytes, URL-safe base64
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(32 if name == "SCIM_TOKEN" else 24)


def update_env(path: Path) -> list[str]:
    """Fill what ``path`` lacks; returns the names added. Present values stay as they are."""
    text = path.read_text() if path.exists() else ""
    present = _assignments(text)
    added = []
    wanted = {name: _secret(name) for name in SECRETS}
    if "COMPOSE_PROFILES" not in present:
        wanted["COMPOSE_PROFILES"] = "grafana"
    for name, value in wanted.items():
        if present.get(name):
            continue
        if name in present:  # an empty `NAME=` line, as in deploy/env.example: fill it in place
            text = re.sub(rf"^(\s*(?:export\s+)?{name}\s*=).*$", lambda m, v=value: m[1] + v, text, count=1, flags=re.M)
        else:
            text += ("" if not text or text.endswith("\n") else "\n") + f"{name}={value}\n"
        added.append(name)
    if added:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    return added


def default_hosts() -> list[str]:
    names = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1"]
    return list(dict.fromkeys(n for n in names if n))


def ensure_certificate(cert: Path, key: Path, hosts: list[str]) -> bool:
    """A self-signed leaf for ``hosts`` where neither file exists; True when written."""
    from libs.security.tls import write_self_signed

    if cert.exists() or key.exists():
        if not (cert.exists() and key.exists()):
            raise SystemExit(f"scimbus init: {cert if key.exists() else key} is missing while its pair exists; "
                             "put it back or remove both")
        return False
    write_self_signed(cert, key, hosts=hosts)
    return True


def init(directory: Path, env_name: str = ".env", hosts: list[str] | None = None) -> list[str]:
    """Everything ``docker compose up -d`` needs in ``directory``; returns one line per change."""
    env_path = directory / env_name
    done = [f"{env_path}: added {name}" for name in update_env(env_path)]
    values = _assignments(env_path.read_text())

    def where(name: str, default: str) -> Path:
        return directory / (values.get(name) or default)  # compose reads relative paths from the project

    config = where("SCIM_CONFIG_TOML", "scimbus.toml")
    if not config.exists():
        config.write_text(CONFIG_STUB)
        config.chmod(0o644)
        done.append(f"{config}: written (no connectors yet)")
    cert = where("SCIM_TLS_CERT_FILE", "deploy/tls/tls.crt")
    key = where("SCIM_TLS_KEY_FILE", "deploy/tls/tls.key")
    hosts = hosts or default_hosts()
    if ensure_certificate(cert, key, hosts):
        done.append(f"{cert}: self-signed for {', '.join(hosts)} (replace it with your CA's for Entra)")
    return done


@click.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              help="the folder of compose.yaml [default: the current one]")
@click.option("--env-file", default=".env", show_default=True, help="the env file compose reads")
@click.option("--host", "hosts", multiple=True, help="a name or address the certificate is for, repeatable "
              "[default: this machine's names, localhost, 127.0.0.1]")
def cmd_init(directory: str, env_file: str, hosts: tuple[str, ...]) -> None:
    """Write the secrets, config and certificate compose.yaml needs (never overwrites)."""
    done = init(Path(directory), env_file, list(hosts) or None)
    for line in done:
        print(f"scimbus init: {line}")
    if not done:
        print("scimbus init: nothing to do, every secret and file is there")
    print("next: docker compose up -d")


COMMANDS = (cmd_init,)
