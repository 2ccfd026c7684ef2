"""Test certificates, made by the tests themselves with `cryptography`: a CA, a server
certificate for 127.0.0.1 and localhost, client certificates (trusted, expired, and one
from a CA the broker does not trust)."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn, org="Gregor tests"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class Authority:
    def __init__(self, cn="Gregor test CA"):
        self.key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = _name(cn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, cn, server=False, expired=False):
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            start, end = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        # Brokers are also clients of each other (replication over TLS): both usages.
        b = b.add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            if server else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return key, b.sign(self.key, hashes.SHA256())

    def write_ca(self, path):
        Path(path).write_bytes(_pem_cert(self.cert))
        return str(path)


def write_identity(directory, name, key, cert):
    """Writes NAME.key, NAME.crt and NAME.pem (key then certificate: a PEM keystore);
    returns their paths."""
    d = Path(directory)
    k, c, both = d / f"{name}.key", d / f"{name}.crt", d / f"{name}.pem"
    k.write_bytes(_pem_key(key))
    c.write_bytes(_pem_cert(cert))
    both.write_bytes(_pem_key(key) + _pem_cert(cert))
    return str(k), str(c), str(both)
