"""A real OpenLDAP ``slapd`` for the LDAP connector's tests, in a temporary folder.

Configured from a classic ``slapd.conf`` (mdb database, core + cosine + inetorgperson
schemas, one suffix), listening on free loopback ports, run in the foreground as the
current user (root included: no ``-u``, every file it needs is ours). ``stop()`` and
``start()`` take it down and bring it back on the same ports and data, for outage tests.

Like a production directory it serves TLS (``ldaps://`` on ``ldaps_url``, StartTLS on
``url``) with a certificate of a CA of its own (``ca_file``; ``untrusted_ca_file`` is
another CA's), and limits what a search returns: the connector binds as a service account
(``SERVICE``), to which ``sizelimit`` applies, 100 entries a search and a page, as Active
Directory's MaxPageSize limits its 1,000; paged searches may return any total. Only the
tests' own checks bind as the root DN, which no limit applies to.
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
SERVICE = f"cn=scimbus,{SUFFIX}"
"""The connector's account: writes anything, under the size limit."""
SERVICE_PASSWORD = "scimbus-service-secret"
SIZE_LIMIT = 100
SLAPD = "/usr/sbin/slapd"
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")


@dataclass
class Slapd:
    folder: Path
    port: int
    tls_port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def untrusted_ca_file(self) -> Path:
        return self.folder / "other-ca.pem"

    def start(self) -> None:
        log = open(self.folder / "slapd.log", "ab")
        self.proc = subprocess.Popen([SLAPD, "-f", str(self.folder / "slapd.conf"), "-h",
                                      f"{self.url}/ {self.ldaps_url}/", "-d", "0"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port(self.port, timeout=20, proc=self.proc)
        wait_for_port(self.tls_port, timeout=20, proc=self.proc)

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


def _certificates(folder: Path) -> None:
    """A CA, a server certificate it signs for 127.0.0.1 and localhost, and another CA."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    (folder / "ca.pem").write_bytes(pem(build("scimbus test LDAP CA", ca_key, "scimbus test LDAP CA", ca_key, True)))
    (folder / "other-ca.pem").write_bytes(pem(build("another CA", other_key, "another CA", other_key, True)))
    (folder / "server.pem").write_bytes(pem(build("127.0.0.1", server_key, "scimbus test LDAP CA", ca_key, False)))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _config(folder: Path) -> str:
    schemas = "\n".join(f"include {SCHEMAS / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis"))
    module = f"modulepath {MODULES}\nmoduleload back_mdb" if (MODULES / "back_mdb.la").exists() or \
        (MODULES / "back_mdb.so").exists() else ""
    return f"""{schemas}
pidfile {folder}/slapd.pid
{module}
TLSCACertificateFile {folder}/ca.pem
TLSCertificateFile {folder}/server.pem
TLSCertificateKeyFile {folder}/server.key
sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.pr={SIZE_LIMIT} size.prtotal=unlimited
database mdb
maxsize 104857600
dbnosync
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw {PASSWORD}
directory {folder}/data
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{SERVICE}" write by * read
index objectClass eq
index member eq
index uid eq
index employeeNumber eq
index businessCategory eq
"""


@contextlib.contextmanager
def slapd_server(folder: Path) -> Iterator[Slapd]:
    if not Path(SLAPD).exists():
        pytest.skip("slapd is not installed (deploy/setup.sh test installs it)")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    _certificates(folder)
    (folder / "slapd.conf").write_text(_config(folder))
    server = Slapd(folder, free_port(), free_port())
    server.start()
    try:
        conn = server.connection()
        conn.add(SUFFIX, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
        conn.add(SERVICE, ["organizationalRole", "simpleSecurityObject"], {"cn": "scimbus",
                                                                             "userPassword": SERVICE_PASSWORD})
        for ou in ("people", "groups", "disabled"):
            conn.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
        conn.unbind()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder / "data", ignore_errors=True)


def ldap_connector_toml(name: str, url: str, retry: str = "", *, tls: str = "allow_insecure = true",
                        people: str = "people", groups: str = "groups") -> str:
    """A connector binding as the service account; over plain LDAP unless ``tls`` says how
    (``start_tls = true``, ``ca_file = "…"``), in the OUs named."""
    return f'''
[connectors.{name}]
type = "ldap"
url = "{url}"
bind_dn = "{SERVICE}"
password = "{SERVICE_PASSWORD}"
timeout = 2
{tls}
{retry}
[connectors.{name}.users]
dn = "uid={{uid}},ou={people},{SUFFIX}"
object_classes = ["inetOrgPerson"]
[connectors.{name}.users.attributes]
uid = {{ path = "userName", transform = "lowercase" }}
cn = {{ template = "{{name.givenName}} {{name.familyName}}" }}
sn = {{ path = "name.familyName", default = "-" }}
employeeNumber = "id"
departmentNumber = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
manager = {{ path = "manager", ref = "dn" }}
[connectors.{name}.groups]
dn = "cn={{cn}},ou={groups},{SUFFIX}"
object_classes = ["groupOfNames"]
attributes = {{ cn = "displayName", businessCategory = "id" }}
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
