"""The admission webhook's TLS: a private CA and a serving certificate signed by it, made with `cryptography`.

The CA lives long (10 years) and is what the API server trusts (the webhook configuration's caBundle); the serving
certificate is short-lived (90 days) and renewed when a third of its life is left, signed by the same CA, so a
renewal never changes the caBundle and the API server never sees a certificate it does not trust.
(kopf can self-sign with `certbuilder`, but only one self-signed certificate, no CA, and through `oscrypto`, which
does not recognise the OpenSSL 3 versions of current distributions; `cryptography` is the maintained library.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=90)
RENEW_WHEN_LEFT = 1 / 3  # renew a certificate once less than this share of its life is left


@dataclass(frozen=True)
class TlsBundle:
    """PEM texts: the CA (certificate and key) and the serving certificate and key it signed."""

    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def serving_expires(self) -> datetime:
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc

    def ca_expires(self) -> datetime:
        return x509.load_pem_x509_certificate(self.ca_cert).not_valid_after_utc

    def names(self) -> set[str]:
        """The DNS names and IP addresses the serving certificate is valid for."""
        cert = x509.load_pem_x509_certificate(self.cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}

    def needs_renewal(self, hostnames: list[str], now: datetime) -> bool:
        """Whether the serving certificate is near its end, or lacks a name the webhook is reached by."""
        cert = x509.load_pem_x509_certificate(self.cert)
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        return cert.not_valid_after_utc - now < life * RENEW_WHEN_LEFT or not set(hostnames) <= self.names()

    def ca_needs_renewal(self, now: datetime) -> bool:
        return self.ca_expires() - now < 2 * SERVING_LIFETIME  # a new CA changes the caBundle: rarely


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def new_ca(common_name: str, now: datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its key (PEM)."""
    now = now or datetime.now(UTC)
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def new_serving(ca_cert: bytes, ca_key: bytes, hostnames: list[str], now: datetime | None = None) -> TlsBundle:
    """A serving certificate for `hostnames` (DNS names or IP addresses), signed by the CA."""
    now = now or datetime.now(UTC)
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = _key()
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + SERVING_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return TlsBundle(ca_cert, ca_key, cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def new_bundle(hostnames: list[str], now: datetime | None = None) -> TlsBundle:
    ca_cert, ca_key = new_ca("carbonshift-webhook-ca", now)
    return new_serving(ca_cert, ca_key, hostnames, now)


def renewed(bundle: TlsBundle | None, hostnames: list[str], now: datetime) -> TlsBundle | None:
    """The bundle to use from now on, or None when `bundle` is still good: a new serving certificate under the
    same CA when it nears its end (or lacks a name); a new CA only when there is none or it nears its own end."""
    if bundle is None or bundle.ca_needs_renewal(now):
        return new_bundle(hostnames, now)
    if bundle.needs_renewal(hostnames, now):
        return new_serving(bundle.ca_cert, bundle.ca_key, hostnames, now)
    return None
