"""A real OpenLDAP ``slapd`` for the LDAP connector's tests, in a temporary folder.

Configured from a classic ``slapd.conf`` (mdb database, core + cosine + inetorgperson
schemas, one suffix), listening on a free loopback port, run in the foreground as the
current user (root included: no ``-u``, every file it needs is ours). ``stop()`` and
``start()`` take it down and bring it back on the same port and data, for outage tests.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import free_port, wait_for_port

SUFFIX = "dc=example,dc=org"
ADMIN = f"cn=admin,{SUFFIX}"
PASSWORD = "ldap-test-secret"
SLAPD = "/usr/sbin/slapd"
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")


@dataclass
class Slapd:
    folder: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.folder / "slapd.log", "ab")
        self.proc = subprocess.Popen([SLAPD, "-f", str(self.folder / "slapd.conf"), "-h", self.url + "/", "-d", "0"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port(self.port, timeout=20, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def connection(self):
        from ldap3 import Connection, Server

        return Connection(Server(self.url), ADMIN, PASSWORD, auto_bind=True)


def _config(folder: Path) -> str:
    schemas = "\n".join(f"include {SCHEMAS / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis"))
    module = f"modulepath {MODULES}\nmoduleload back_mdb" if (MODULES / "back_mdb.la").exists() or \
        (MODULES / "back_mdb.so").exists() else ""
    return f"""{schemas}
pidfile {folder}/slapd.pid
{module}
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw {PASSWORD}
directory {folder}/data
index objectClass eq
index member eq
index uid eq
"""


@contextlib.contextmanager
def slapd_server(folder: Path) -> Iterator[Slapd]:
    if not Path(SLAPD).exists():
        pytest.skip("slapd is not installed (deploy/setup.sh test installs it)")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "slapd.conf").write_text(_config(folder))
    server = Slapd(folder, free_port())
    server.start()
    try:
        conn = server.connection()
        conn.add(SUFFIX, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
        for ou in ("people", "groups", "disabled"):
            conn.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
        conn.unbind()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder / "data", ignore_errors=True)


def ldap_connector_toml(name: str, url: str, retry: str = "") -> str:
    return f'''
[connectors.{name}]
type = "ldap"
url = "{url}"
bind_dn = "{ADMIN}"
password = "{PASSWORD}"
timeout = 2
{retry}
[connectors.{name}.users]
dn = "uid={{uid}},ou=people,{SUFFIX}"
object_classes = ["inetOrgPerson"]
[connectors.{name}.users.attributes]
uid = {{ path = "userName", transform = "lowercase" }}
cn = {{ template = "{{name.givenName}} {{name.familyName}}" }}
sn = {{ path = "name.familyName", default = "-" }}
employeeNumber = "id"
departmentNumber = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
manager = {{ path = "manager", ref = "dn" }}
[connectors.{name}.groups]
dn = "cn={{cn}},ou=groups,{SUFFIX}"
object_classes = ["groupOfNames"]
attributes = {{ cn = "displayName" }}
'''


def is_rename(request: bytes) -> bool:
    """Whether BER-encoded bytes start an LDAP ModifyDN request: an LDAPMessage (SEQUENCE)
    whose messageID is followed by the [APPLICATION 12] operation."""
    if len(request) < 2 or request[0] != 0x30:
        return False
    at = 2 + (request[1] & 0x7F if request[1] & 0x80 else 0)  # past the SEQUENCE's length
    if len(request) < at + 2 or request[at] != 0x02:
        return False
    at += 2 + request[at + 1]  # past the messageID INTEGER
    return len(request) > at and request[at] == 0x6C


def wait_until(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
