"""Jodo: X-Jodo-Signature, the hex HMAC-SHA256 of the raw body; optional IP allow-list."""

from __future__ import annotations

from ipaddress import ip_network

import aio_pika

from hookpipe.ingress.jodo import JodoSettings, peer_allowed
from tests import signers
from tests.conftest import JODO_SECRET, get_message
from tests.ingress_support import Ingress, MakeSettings, StartIngress, refusal, signed

pytest_plugins = ("tests.ingress_fixtures",)


async def test_missing_signature_header(refusing_ingress: Ingress) -> None:
    body, _ = signed("jodo")
    response = await refusing_ingress.post("jodo", body)
    assert await refusal(response) == (401, "missing signature")


async def test_wrong_secret(refusing_ingress: Ingress) -> None:
    body, headers = signed("jodo", secret="someone-elses-secret")
    response = await refusing_ingress.post("jodo", body, headers)
    assert await refusal(response) == (401, "signature mismatch")


async def test_tampered_body(refusing_ingress: Ingress) -> None:
    body, headers = signed("jodo")
    tampered = body.replace(b"10000.0", b"1.0")
    assert tampered != body
    response = await refusing_ingress.post("jodo", tampered, headers)
    assert await refusal(response) == (401, "signature mismatch")


async def test_signature_that_is_not_hex(refusing_ingress: Ingress) -> None:
    body, _ = signed("jodo")
    response = await refusing_ingress.post("jodo", body, {"X-Jodo-Signature": "z" * 64})
    assert await refusal(response) == (401, "malformed signature")


async def test_signature_of_the_wrong_length(refusing_ingress: Ingress) -> None:
    body, headers = signed("jodo")
    truncated = {"X-Jodo-Signature": headers["X-Jodo-Signature"][:40]}
    response = await refusing_ingress.post("jodo", body, truncated)
    assert await refusal(response) == (401, "malformed signature")


async def test_signature_that_is_not_ascii(refusing_ingress: Ingress) -> None:
    body, _ = signed("jodo")
    header = ("é" * 64).encode().decode("latin-1")  # sent as raw UTF-8 bytes
    response = await refusing_ingress.post("jodo", body, {"X-Jodo-Signature": header})
    assert await refusal(response) == (401, "malformed signature")


async def test_peer_not_in_the_allow_list(
    start_ingress: StartIngress, make_settings: MakeSettings
) -> None:
    settings = make_settings(declare_topology=False).with_section(
        JodoSettings, allowed_ips=(ip_network("10.0.0.0/8"),)
    )
    ingress = await start_ingress(settings)
    body, headers = signed("jodo")

    response = await ingress.post("jodo", body, headers)

    assert await refusal(response) == (401, "ip not allowed")


async def test_peer_in_the_allow_list_is_accepted(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    broker: aio_pika.abc.AbstractChannel,
) -> None:
    allowed = (ip_network("10.0.0.0/8"), ip_network("127.0.0.0/8"))
    ingress = await start_ingress(make_settings().with_section(JodoSettings, allowed_ips=allowed))
    body, headers = signed("jodo")

    response = await ingress.post("jodo", body, headers)

    assert response.status == 200
    assert (await get_message(broker, "jodo.order.payment.debited")).body == body


def test_allow_list_reads_ipv4_mapped_ipv6_peers_as_ipv4() -> None:
    networks = (ip_network("192.0.2.0/24"),)
    assert peer_allowed("::ffff:192.0.2.7", networks)
    assert not peer_allowed("::ffff:198.51.100.7", networks)
    assert not peer_allowed(None, networks)
    assert not peer_allowed("not an address", networks)


async def test_uppercase_hex_signature_is_accepted(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    body = signed("jodo")[0]
    header = signers.jodo(body, JODO_SECRET)["X-Jodo-Signature"].upper()

    response = await ingress.post("jodo", body, {"X-Jodo-Signature": header})

    assert response.status == 200
    assert (await get_message(broker, "jodo.order.payment.debited")).body == body
