"""The Mesh gRPC service (Bundle, Certify, Leave) against a real ``meshctl serve``: a sidecar
gets the bundle unauthenticated, a certificate for the identity its token or its certificate
proves (never another), and may only take its own instances out of the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from control_plane import (CLUSTER, AdsClient, ControlPlane, certify, channel_credentials, key_and_csr, node,
                           start_control_plane)
from upstreams import wait_until
from cryptography import x509
from meshproxy.mesh import mesh_pb2
from meshproxy.mesh.join_token import JoinToken

ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path_factory.mktemp("mesh") / "data")
    plane.apply("kind: Service\nname: orders\nnamespace: shop\n---\nkind: Service\nname: payments\nnamespace: shop\n")
    yield plane
    plane.stop()


def certify_with(control: ControlPlane, csr: bytes, token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> mesh_pb2.CertifyResponse:
    async def run() -> mesh_pb2.CertifyResponse:
        async with grpc.aio.secure_channel(control.grpc, credentials or channel_credentials(control.bundle())) as ch:
            return await certify(ch, csr, token)
    return asyncio.run(run())


def refusal(control: ControlPlane, csr: bytes, token: str | None = None,
            credentials: grpc.ChannelCredentials | None = None) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        certify_with(control, csr, token, credentials)
    return refused.value.code(), refused.value.details() or ""


def test_bundle_needs_no_credentials_and_matches_the_token_pin(control: ControlPlane) -> None:
    async def run() -> mesh_pb2.BundleResponse:
        async with grpc.aio.secure_channel(control.grpc, channel_credentials(control.bundle())) as channel:
            bundle = channel.unary_unary("/meshproxy.mesh.v1.Mesh/Bundle",
                                         request_serializer=mesh_pb2.BundleRequest.SerializeToString,
                                         response_deserializer=mesh_pb2.BundleResponse.FromString)
            return await bundle(mesh_pb2.BundleRequest(), timeout=10)

    answer = asyncio.run(run())
    assert answer.trust_domain == "mesh.local"
    from cryptography.hazmat.primitives import serialization
    from meshproxy.mesh.join_token import ca_pin

    spki = x509.load_pem_x509_certificate(answer.bundle_pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ca_pin(spki) == JoinToken.decode(control.token("orders", "shop")).ca_pin


def test_a_token_gets_a_certificate_for_its_service_and_that_certificate_renews(control: ControlPlane) -> None:
    key, csr = key_and_csr(ORDERS)
    first = certify_with(control, csr, control.token("orders", "shop"))
    assert first.spiffe_id == ORDERS
    certificate = x509.load_pem_x509_certificate(first.certificate_pem.encode())
    uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [ORDERS]
    assert abs(first.not_after - (time.time() + 24 * 3600)) < 120  # the default lifetime
    # Renewal: no token, the current certificate proves who it is.
    new_key, new_csr = key_and_csr(ORDERS)
    renewed = certify_with(control, new_csr,
                           credentials=channel_credentials(control.bundle(), first.certificate_pem.encode(), key))
    assert renewed.spiffe_id == ORDERS and renewed.certificate_pem != first.certificate_pem
    metrics = control.call("GET", "/metrics").decode()
    assert 'meshcontrol_certificates_issued_total{how="csr"}' in metrics


def test_a_csr_for_another_service_is_refused(control: ControlPlane) -> None:
    _, csr = key_and_csr("spiffe://mesh.local/ns/shop/sa/payments")
    code, message = refusal(control, csr, control.token("orders", "shop"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == ("the CSR asks for spiffe://mesh.local/ns/shop/sa/payments, but the caller may only get a "
                       "certificate for spiffe://mesh.local/ns/shop/sa/orders (service 'orders' in namespace 'shop', "
                       "from its token)")
    _, csr = key_and_csr(ORDERS, common_name="payments")
    code, message = refusal(control, csr, control.token("orders", "shop"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "the CSR's subject names service 'payments'" in message


def test_wrong_expired_and_revoked_tokens_are_refused_with_the_reason(control: ControlPlane) -> None:
    _, csr = key_and_csr(ORDERS)
    good = JoinToken.decode(control.token("orders", "shop"))
    code, message = refusal(control, csr, good._replace(secret="guessed").encode())
    assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, f"join token {good.id}: wrong secret")

    code, message = refusal(control, csr, "not-a-token")
    assert code == grpc.StatusCode.UNAUTHENTICATED and message.startswith("not a join token")

    control.call("DELETE", f"/v1/tokens/{good.id}")
    code, message = refusal(control, csr, good.encode())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert message == f"join token {good.id} was revoked; make a new one with 'meshctl token create'"

    short = control.token("orders", "shop", ttl="1s")
    wait_until(lambda: _refused(control, csr, short), 5, "the token to expire")
    code, message = refusal(control, csr, short)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert " expired at " in message and "make a new one with 'meshctl token create'" in message

    code, message = refusal(control, csr)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert message.startswith("no client certificate and no join token")


def _refused(control: ControlPlane, csr: bytes, token: str) -> bool:
    try:
        certify_with(control, csr, token)
    except grpc.aio.AioRpcError:
        return True
    return False


def test_a_bad_csr_is_refused_as_invalid(control: ControlPlane) -> None:
    code, message = refusal(control, b"hello", control.token("orders", "shop"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("the CSR is not a readable PEM certificate request")


def test_leave_takes_only_the_callers_own_instances(control: ControlPlane) -> None:
    key, csr = key_and_csr(ORDERS)
    orders = certify_with(control, csr, control.token("orders", "shop"))
    credentials = channel_credentials(control.bundle(), orders.certificate_pem.encode(), key)

    async def leave(node_id: str) -> mesh_pb2.LeaveResponse:
        async with grpc.aio.secure_channel(control.grpc, credentials) as channel:
            method = channel.unary_unary("/meshproxy.mesh.v1.Mesh/Leave",
                                         request_serializer=mesh_pb2.LeaveRequest.SerializeToString,
                                         response_deserializer=mesh_pb2.LeaveResponse.FromString)
            return await method(mesh_pb2.LeaveRequest(node_id=node_id, wait_ms=1000), timeout=10)

    # Registered by a payments Envoy's stream (a token of payments), then refused to orders.
    async def register_payments_and_leave() -> None:
        token = control.token("payments", "shop")
        async with grpc.aio.secure_channel(control.grpc, channel_credentials(control.bundle())) as channel:
            payments = AdsClient(channel, node("payments", "shop", inbound="127.0.0.1:20009", agent="envoy"),
                                 (("authorization", f"Bearer {token}"),))
            await payments.send(CLUSTER)
            await payments.receive()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await leave("sidecar~127.0.0.1:20009~payments.shop")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may only remove its own instances" in (refused.value.details() or "")
            payments.call.cancel()

    asyncio.run(register_payments_and_leave())
    instances = control.call("GET", "/v1/instances")
    assert "sidecar~127.0.0.1:20009~payments.shop" in [i["node_id"] for i in instances]
    # An unknown (or already gone) node: nothing to wait for.
    assert asyncio.run(leave("sidecar~127.0.0.1:1~orders.shop")) == mesh_pb2.LeaveResponse()


def test_the_grpc_certificate_names_every_address_sidecars_dial(tmp_path: Path) -> None:
    import ssl

    plane = start_control_plane(tmp_path / "mesh", "--grpc-name", "control.mesh.example", "--grpc-name", "10.9.8.7")
    try:
        host, port = plane.grpc.rsplit(":", 1)
        pem = ssl.get_server_certificate((host, int(port)))
    finally:
        plane.stop()
    names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"control.mesh.example", "localhost"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.9.8.7"}
