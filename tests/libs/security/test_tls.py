"""The local run's self-signed certificate: a leaf for its host names, never a CA (issue 16)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.security.tls import write_self_signed

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_certificate_is_a_leaf_for_the_host_names_it_is_given(tmp_path):
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["scim.example.com", "10.0.0.5", "::1"])
    cert = _load(tmp_path / "cert.pem")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["scim.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("::1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is False
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600


def test_by_default_the_certificate_names_this_machine(tmp_path):
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    sans = _load(tmp_path / "cert.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", socket.gethostname()} <= set(sans.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def _forge(issuer_cert: Path, issuer_key: Path, host: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for ``host`` signed with the self-signed certificate's key, as its issuer."""
    signer = serialization.load_pem_private_key(issuer_key.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(_load(issuer_cert).subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(signer, hashes.SHA256()))
    chain, key_path = folder / "forged.pem", folder / "forged.key"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + issuer_cert.read_bytes())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path


def _handshake(chain: Path, key: Path, trusted: Path, host: str) -> None:
    """A TLS handshake with a server presenting ``chain``, by a client that trusts ``trusted``."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = ssl.create_default_context(cafile=str(trusted))
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname=host):
            pass
    finally:
        listener.close()
        thread.join(5)


def test_a_client_that_trusts_the_certificate_accepts_it_and_nothing_signed_with_its_key(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key)
    _handshake(cert, key, cert, "localhost")  # what the agent's host is told to trust works
    forged, forged_key = _forge(cert, key, "bank.example", tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):  # the key of a leaf vouches for no other host
        _handshake(forged, forged_key, cert, "bank.example")


def test_a_ca_certificate_an_older_version_left_under_var_is_kept_and_named_in_a_warning(tmp_path, caplog):
    from libs.config import load_settings
    from libs.security.tls import pair
    from tests.support.certs import make_ca

    old = make_ca(tmp_path / "tls", "cert")
    old.key.rename(tmp_path / "tls" / "key.pem")
    settings = load_settings({}, var_dir=tmp_path)
    assert pair(settings) == ((tmp_path / "tls" / "cert.pem").resolve(), (tmp_path / "tls" / "key.pem").resolve())
    assert "is a CA certificate" in caplog.text  # replacing it would break the agent host's trust
    assert _load(old.cert).extensions.get_extension_for_class(x509.BasicConstraints).value.ca
