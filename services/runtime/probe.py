"""``scimbus health``: the container HEALTHCHECK of every role, from one image.

An image has one HEALTHCHECK but runs any role, each on its own port. So each serving
role records the URL of its ``/readyz`` under ``var_dir/probes/<role>`` when it starts,
and ``scimbus health`` asks every URL recorded there (in a container: the one role it
runs). Exit 0 when all answer 200, 1 otherwise (Docker's healthy / unhealthy).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from libs.config import load_settings

LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Probes go to this host's own ports: never through the ``http_proxy`` of the environment."""


def _folder() -> Path:
    return load_settings().var_dir / "probes"


def probe_url(bind: str, path: str = "/readyz") -> str | None:
    """The loopback URL of a server bound to ``host:port`` (None for a unix socket)."""
    if bind.startswith("unix:") or ":" not in bind:
        return None
    port = bind.rsplit(":", 1)[1]
    return f"http://127.0.0.1:{port}{path}"


def record(role: str, url: str | None) -> None:
    if url is None:
        return
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / role).write_text(url + "\n")


def check(role: str | None = None, timeout: float = 4.0) -> int:
    folder = _folder()
    files = [folder / role] if role else sorted(folder.glob("*")) if folder.is_dir() else []
    files = [f for f in files if f.is_file()]
    if not files:
        print(f"no serving role has started here ({folder})", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        url = path.read_text().strip()
        try:
            with LOOPBACK.open(url, timeout=timeout) as answer:
                print(f"{path.name}: {answer.read().decode().strip()}")
        except urllib.error.HTTPError as exc:
            failed += 1
            print(f"{path.name}: {exc.code} {exc.read().decode().strip()}", file=sys.stderr)
        except OSError as exc:
            failed += 1
            print(f"{path.name}: {url} unreachable: {exc}", file=sys.stderr)
    return 1 if failed else 0
