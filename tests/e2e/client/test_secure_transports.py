"""`grpcs://` and `unix:` URLs reach the real control plane.

A TLS terminator (a certificate from a private CA made here, ALPN h2) and a Unix-socket
forwarder sit in front of the appliance's plaintext gRPC port. The client trusts the
private CA only when given it as `root_certificates`; without it the handshake fails
and the call is an RlmConnectionError that never reached the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rlm_rs.client import Client, RetryPolicy, RlmConnectionError, SessionNotFoundError
from tests.e2e.client._proxy import Forwarder
from tests.e2e.client.conftest import Appliance

UNKNOWN_SESSION = "sess_000000000000000000000000"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(directory: Path) -> tuple[bytes, Path, Path]:
    """(the CA's PEM, the server certificate file, its key file) for localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("rlm-rs test CA")).issuer_name(_name("rlm-rs test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file


@pytest.fixture
def tls_port(appliance: Appliance, tmp_path: Path) -> Iterator[tuple[int, bytes, Forwarder]]:
    ca_pem, cert_file, key_file = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    forwarder = Forwarder(appliance.up.grpc_port, ssl_context=context)
    yield forwarder.port, ca_pem, forwarder
    forwarder.close()


def test_grpcs_with_the_private_ca_reaches_the_control_plane(
    appliance: Appliance, tls_port: tuple[int, bytes, Forwarder]
) -> None:
    port, ca_pem, forwarder = tls_port
    with Client(f"grpcs://localhost:{port}", appliance.api_key, root_certificates=ca_pem) as client:
        session = client.sessions.create(docs=appliance.uris[:1], wait=False)
        assert client.sessions.get(session.session_id).session_id == session.session_id
        with pytest.raises(SessionNotFoundError):
            client.sessions.get(UNKNOWN_SESSION)
    assert forwarder.connections >= 1


def test_grpcs_refuses_a_server_it_cannot_verify(
    appliance: Appliance, tls_port: tuple[int, bytes, Forwarder]
) -> None:
    port, _ca_pem, forwarder = tls_port
    policy = RetryPolicy(max_attempts=1)
    with (
        Client(f"grpcs://localhost:{port}", appliance.api_key, retry=policy) as client,
        pytest.raises(RlmConnectionError) as failed,
    ):
        client.sessions.get(UNKNOWN_SESSION)
    assert failed.value.sent is False
    assert forwarder.connections == 0  # the handshake failed: nothing was forwarded to the server


def test_unix_socket_url_reaches_the_control_plane(appliance: Appliance, tmp_path: Path) -> None:
    path = tmp_path / "rlm.sock"
    forwarder = Forwarder(appliance.up.grpc_port, unix_path=str(path))
    try:
        with Client(f"unix:{path}", appliance.api_key) as client:
            assert client.transport == "grpc"
            with pytest.raises(SessionNotFoundError) as refused:
                client.sessions.get(UNKNOWN_SESSION)
        assert refused.value.grpc_status == "NOT_FOUND"
        assert forwarder.connections == 1
    finally:
        forwarder.close()
