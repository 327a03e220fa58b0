"""TLS at the gateway: the nginx directives, and a self-signed pair for the local run.

TLS 1.2 and 1.3 only. For TLS 1.2 the cipher suites are the ones Entra's provisioning
service lists as its minimum bar (ECDHE with AES-GCM or AES-CBC-SHA2); TLS 1.3 suites are
all AEAD and left to OpenSSL. With ``tls_client_ca`` set, clients (the provisioning
agent's host) must present a certificate that CA signed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from libs.config import Settings

log = logging.getLogger("scimbus.tls")

ENTRA_CIPHERS = ":".join((
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
))
"""OpenSSL names of the TLS 1.2 suites Entra lists (TLS_ECDHE_{RSA,ECDSA}_WITH_AES_*)."""


def enabled(settings: Settings) -> bool:
    return bool(settings.tls or settings.tls_cert)


def pair(settings: Settings) -> tuple[Path, Path]:
    """The certificate and key the gateway serves: configured, else a self-signed pair under var/tls."""
    if settings.tls_cert:
        if not settings.tls_key:
            raise ValueError("SCIM_TLS_KEY must name the private key of SCIM_TLS_CERT")
        return Path(settings.tls_cert).resolve(), Path(settings.tls_key).resolve()
    folder = (settings.var_dir / "tls").resolve()
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not (cert.exists() and key.exists()):
        write_self_signed(cert, key)
    elif _is_ca(cert):
        log.warning("%s is a CA certificate made by an older scimbus: delete %s to get a leaf certificate, "
                    "then trust the new one where the old one was trusted", cert, folder)
    return cert, key


def _is_ca(path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (ValueError, x509.ExtensionNotFound):
        return False


def local_hosts() -> tuple[str, ...]:
    """The names a client on this machine may use: the default SANs of the local run's certificate."""
    return ("localhost", socket.gethostname(), "127.0.0.1", "::1")


def _san(host: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_self_signed(cert_path: Path, key_path: Path, hosts: Sequence[str] | None = None, days: int = 397) -> None:
    """A self-signed server certificate for ``hosts`` (DNS names or IP addresses) and its key.

    A leaf, not a CA (issue 16): CA:FALSE, the host names as subjectAltName (what clients
    match; the CN is ignored), serverAuth only. A CA:TRUE certificate that a client was told
    to trust could sign a certificate for any other host with its key; this one can vouch
    for nothing but itself. Trusting it (the Entra agent's host, a test's ``cafile``) works
    as before: OpenSSL and Windows accept a self-signed leaf as its own anchor."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = list(dict.fromkeys(hosts or local_hosts()))
    if not hosts:
        raise ValueError("a certificate needs at least one host name")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def nginx_directives(cert: Path, key: Path, client_ca: str = "") -> str:
    lines = [
        "# Written by scimbus (libs/security/tls.py): TLS 1.2+ with Entra's cipher suites.",
        f"ssl_certificate {cert};",
        f"ssl_certificate_key {key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"ssl_ciphers {ENTRA_CIPHERS};",
        "ssl_prefer_server_ciphers on;",
        "ssl_session_cache shared:scimbus_tls:1m;",
        "ssl_session_tickets off;",
    ]
    if client_ca:
        lines += [f"ssl_client_certificate {Path(client_ca).resolve()};", "ssl_verify_client on;",
                  "ssl_verify_depth 3;"]
    return "\n".join(lines) + "\n"


def configure_gateway(env: dict[str, str], settings: Settings, nginx_dir: Path) -> str:
    """Set the template's TLS variables (and write its include); returns the URL scheme."""
    folder = nginx_dir / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "ssl.conf"
    env["SCIM_GATEWAY_TLS_INCLUDE"] = str(folder / "*.conf")
    if not enabled(settings):
        conf.unlink(missing_ok=True)
        return "http"
    cert, key = pair(settings)
    conf.write_text(nginx_directives(cert, key, settings.tls_client_ca))
    env["SCIM_GATEWAY_LISTEN"] = env["SCIM_GATEWAY_LISTEN"] + " ssl"
    return "https"
