"""A Redis primary, its replica and three sentinels, started from redis-server's binary.

The layout of a production Sentinel setup (docs/deployment.md) on loopback ports: data
nodes with a password (``requirepass``, ``masterauth`` on both so either can follow the
other), sentinels that log in with ``auth-pass``, a quorum of two. ``down_after_ms`` is the
time a silent primary takes to be judged down: the failover takes about that plus a
second or two of election.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port, wait_for_port

SERVICE = "mymaster"


@dataclass
class SentinelCluster:
    folder: Path
    password: str
    down_after_ms: int = 1000
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{self.password}@{hosts}/{SERVICE}/0"

    def _start(self, port: int, args: list[str]) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.procs[port] = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, proc=self.procs[port])

    def start(self) -> None:
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        primary = self.data_ports[0]
        for port in self.data_ports:
            folder = self.folder / f"redis-{port}"
            folder.mkdir(parents=True)
            conf = folder / "redis.conf"
            conf.write_text(f"requirepass {self.password}\nmasterauth {self.password}\n"
                            + (f"replicaof 127.0.0.1 {primary}\n" if port != primary else ""))
            self._start(port, [str(conf), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                               "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                               "--logfile", str(folder / "redis.log")])
        self.wait_replicated()
        for port in self.sentinel_ports:
            folder = self.folder / f"sentinel-{port}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"  # sentinels rewrite their file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel auth-pass {SERVICE} {self.password}\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self._start(port, [str(conf), "--sentinel"])
        self.wait_sentinels_agree(primary)

    def client(self, port: int):
        from redis import Redis

        return Redis(port=port, password=self.password, socket_timeout=2, socket_connect_timeout=2)

    def sentinel(self, port: int):
        from redis import Redis

        return Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def wait_replicated(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.client(self.data_ports[1]).info("replication").get("master_link_status") == "up":
                    return
            time.sleep(0.1)
        raise TimeoutError("the replica never synchronised with the primary")

    def primary_port(self) -> int | None:
        """The port the sentinels name as primary (None while they disagree or cannot say)."""
        answers = set()
        for port in self.sentinel_ports:
            try:
                answers.add(int(self.sentinel(port).sentinel_get_master_addr_by_name(SERVICE)[1]))
            except Exception:
                return None
        return answers.pop() if len(answers) == 1 else None

    def wait_sentinels_agree(self, primary: int, timeout: float = 30) -> None:
        """Until every sentinel names ``primary`` and knows the replica and its two peers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.primary_port() == primary and all(
                        int(self.sentinel(p).sentinel_master(SERVICE)["num-other-sentinels"]) >= 2
                        and int(self.sentinel(p).sentinel_master(SERVICE)["num-slaves"]) >= 1
                        for p in self.sentinel_ports):
                    return
            time.sleep(0.1)
        raise TimeoutError("the sentinels never agreed on the primary")

    def kill_primary(self) -> int:
        """``kill -9`` the current primary; returns its port."""
        port = self.primary_port()
        assert port is not None
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(10)
        return port

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def sentinel_cluster(down_after_ms: int = 1000) -> Iterator[SentinelCluster]:
    folder = Path(tempfile.mkdtemp(prefix="scimbus-sentinel-"))
    cluster = SentinelCluster(folder, secrets.token_urlsafe(16), down_after_ms)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
