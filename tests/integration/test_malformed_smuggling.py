"""Request smuggling over HTTP/1.1, sent as raw bytes: Content-Length beside chunked,
ambiguous or invalid framing, and broken chunks. The upstream (one that records what reaches
it) sees each request framed one way only, and nothing smuggled behind it (RFC 9112 §6, §7)."""

from __future__ import annotations

import pytest
from malformed_input import HOST, assert_from_proxy, still_served
# The fixtures this module's tests use, and those they depend on: pytest finds them here by name.
from malformed_input import recorded_proxy, recorder  # noqa: F401
from meshproxy import Proxy
from raw_http import raw_exchange, request_bytes
from recording_upstream import RecordingUpstream

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
# CL.TE: Content-Length covers the smuggled request; chunked framing ends before it.
CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED
# TE.CL: chunked framing carries the smuggled request as data; Content-Length ends before it.
TE_CL_BODY = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("te_first", [False, True], ids=["CL-before-TE", "TE-before-CL"])
@pytest.mark.parametrize(("body", "content_length", "upstream_body"), [
    (CL_TE_BODY, len(CL_TE_BODY), b""),
    (TE_CL_BODY, len(b"%x\r\n" % len(SMUGGLED)), SMUGGLED),
], ids=["CL.TE", "TE.CL"])
def test_content_length_with_chunked_is_framed_by_chunked_then_closed_so_nothing_is_smuggled(
        recorded_proxy: Proxy, recorder: RecordingUpstream, te_first: bool, body: bytes, content_length: int,
        upstream_body: bytes) -> None:
    # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a server MAY reject the
    # request or process it by the chunked framing alone, and MUST close the connection after
    # responding. hyper does the latter, and drops Content-Length before the proxy sees it.
    framing = [b"Content-Length: %d" % content_length, b"Transfer-Encoding: chunked"]
    if te_first:
        framing.reverse()
    payload = request_bytes(b"POST /cl-te HTTP/1.1", HOST, *framing, body=body)
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        assert reply.only_response().status == 200, "bytes after the chunked body must not be read as a request"
        assert reply.closed
    assert recorder.targets() == ["/before", "/cl-te", "/after", "/fresh"]
    forwarded = recorder.requests[1]
    assert "content-length" not in forwarded.headers
    assert forwarded.body == upstream_body


AMBIGUOUS_LENGTH = {
    "two different Content-Length lines": [b"Content-Length: 5", b"Content-Length: 6"],
    "Content-Length list of different values": [b"Content-Length: 5, 6"],
    "Content-Length with a plus sign": [b"Content-Length: +5"],
    "non-numeric Content-Length": [b"Content-Length: five"],
    # RFC 9112 §6.3: chunked not final means the length cannot be known: 400 and close.
    "Transfer-Encoding gzip only": [b"Transfer-Encoding: gzip"],
    "Transfer-Encoding chunked then gzip": [b"Transfer-Encoding: chunked, gzip"],
}


@pytest.mark.parametrize("framing", AMBIGUOUS_LENGTH.values(), ids=AMBIGUOUS_LENGTH.keys())
def test_ambiguous_message_length_gets_400_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                     framing: list[bytes]) -> None:
    # RFC 9112 §6.3 and RFC 9110 §8.6: an invalid Content-Length, or a Transfer-Encoding whose
    # final coding is not chunked, makes the framing unrecoverable: 400, then close.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"POST /ambiguous HTTP/1.1", HOST, *framing, body=b"hello!" + SMUGGLED))
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_transfer_encoding_in_http10_gets_400_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream) -> None:
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"POST /te10 HTTP/1.0", HOST, b"Transfer-Encoding: chunked",
                                                    body=b"0\r\n\r\n" + SMUGGLED))
        assert reply.only_response().status == 400
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_doubled_chunked_coding_is_decoded_once_and_reframed_for_the_upstream(recorded_proxy: Proxy,
                                                                              recorder: RecordingUpstream) -> None:
    # RFC 9112 §6.1 forbids a sender to chunk twice; hyper reads `chunked, chunked` as one
    # chunked coding. The proxy then frames the body itself, so the upstream never sees the
    # client's Transfer-Encoding and cannot frame it differently.
    payload = request_bytes(b"POST /double-chunked HTTP/1.1", HOST, b"Transfer-Encoding: chunked, chunked", b"Connection: close",
                            body=b"5\r\nhello\r\n0\r\n\r\n")
    reply = raw_exchange(recorded_proxy.address("outbound"), payload)
    assert reply.only_response().status == 200
    assert recorder.targets() == ["/double-chunked"]
    assert recorder.requests[0].headers.get("transfer-encoding", "chunked") == "chunked"
    assert recorder.requests[0].body == b"hello"


@pytest.mark.parametrize("chunk_size_line", [b"zz", b"-5", b"1ffffffffffffffffff"], ids=["not hex", "negative", "overflow"])
def test_bad_chunk_size_line_gets_400_from_the_proxy_and_close(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                                 chunk_size_line: bytes) -> None:
    # RFC 9112 §7.1: the body cannot be framed. The request head has already been streamed to
    # the upstream, which is not to blame: the proxy answers 400, not 502.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        payload = request_bytes(b"POST /bad-chunk HTTP/1.1", HOST, b"Transfer-Encoding: chunked",
                                body=chunk_size_line + b"\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert response.headers["x-meshproxy-error"] == "bad_request"
        assert reply.closed
    assert "/smuggled" not in recorder.targets()
    assert not any(request.complete for request in recorder.requests if request.target == "/bad-chunk")
    assert recorded_proxy.stats()["clusters"]["app"]["upstream_failures_total"] == 0


@pytest.mark.parametrize("codings", [b"gzip, chunked", b"cow, chunked"], ids=["gzip", "unknown"])
def test_transfer_coding_other_than_chunked_gets_501_and_the_connection_goes_on(recorded_proxy: Proxy,
                                                                                recorder: RecordingUpstream,
                                                                                codings: bytes) -> None:
    # RFC 9112 §6.1: a server that receives a transfer coding it does not understand SHOULD
    # answer 501. Forwarded as plain `chunked`, the other coding would be silently dropped. The
    # framing itself (chunked, last) is sound: the next request on the connection is served.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        unsupported = request_bytes(b"POST /coded HTTP/1.1", HOST, b"Transfer-Encoding: " + codings,
                                    body=b"5\r\nhello\r\n0\r\n\r\n")
        reply = raw_exchange(address, unsupported + request_bytes(b"GET /next HTTP/1.1", HOST, b"Connection: close"))
        first, second = reply.responses()
        assert first.status == 501
        assert first.headers["x-meshproxy-error"] == "unsupported_transfer_coding"
        assert second.status == 200
    assert recorder.targets() == ["/before", "/next", "/after", "/fresh"]
    assert recorded_proxy.stats()["errors"]["unsupported_transfer_coding"] == 1
