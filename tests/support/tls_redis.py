"""A Redis that speaks only TLS, with a private certificate authority: :func:`make_ca` and
:func:`issue` build certificates with the ``cryptography`` package, :class:`TlsRedis` runs
``redis-server --port 0 --tls-port …`` (Debian's redis-server 7 has TLS built in).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.redis_server import PrivateRedis


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its key and self-signed certificate, and the PEM file of it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca(directory: Path, common_name: str) -> Authority:
    """A new CA valid for a day; its certificate is written to ``directory/<cn>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    pem = directory / f"{common_name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(key, cert, pem)


def issue(ca: Authority, directory: Path, name: str) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by ``ca``: ``(cert.pem, key.pem)`` paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


class TlsRedis(PrivateRedis):
    """A private ``redis-server`` listening only on TLS (on :attr:`port`), with a server
    certificate from ``ca``; clients need no certificate of their own.
    """

    def __init__(self, ca: Authority, directory: Path) -> None:
        cert, key = issue(ca, directory, "redis-server")
        super().__init__("--tls-cert-file", str(cert), "--tls-key-file", str(key),
                         "--tls-ca-cert-file", str(ca.pem), "--tls-auth-clients", "no")
        self.ca = ca
        # The plain port becomes the TLS port; no plain listener.
        self.args[self.args.index("--port")] = "--tls-port"
        self.args += ["--port", "0"]

    def url(self, db: int = 0) -> str:
        """``rediss://127.0.0.1:<port>/<db>`` without TLS options."""
        return f"rediss://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.port, ssl=True, ssl_ca_certs=str(self.ca.pem))
