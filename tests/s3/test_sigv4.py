"""SigV4 and aws-chunked against the AWS documentation's published examples, with a fixed clock."""

from __future__ import annotations

import base64
import zlib

import pytest

from mist.errors import MistError
from mist.s3 import sigv4
from mist.s3.chunked import ChunkDecoder, ChunkSigner

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = sigv4.amz_time("20130524T000000Z")


def header_auth(signed: str, signature: str) -> str:
    return (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


def get_example(signature: str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41") -> list:
    """GET /test.txt with Range: bytes=0-9 (the documentation's first header-auth example)."""
    return [
        ("host", "examplebucket.s3.amazonaws.com"), ("range", "bytes=0-9"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256), ("x-amz-date", "20130524T000000Z"),
        ("authorization", header_auth("host;range;x-amz-content-sha256;x-amz-date", signature)),
    ]  # fmt: skip


def test_the_documented_get_example_verifies():
    headers = get_example()
    claim = sigv4.parse_header_auth(headers)
    key = sigv4.verify(claim, SECRET, "GET", "/test.txt", [], headers, NOW)
    assert key == sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda h: h.__setitem__(1, ("range", "bytes=0-10")), "SignatureDoesNotMatch"),
        (lambda h: h.append(("x-amz-meta-extra", "1")), "AccessDenied"),
        (lambda h: h.__setitem__(4, ("authorization", header_auth("range;x-amz-content-sha256;x-amz-date", "0" * 64))),
         "AuthorizationHeaderMalformed"),
    ],
)  # fmt: skip
def test_a_changed_request_does_not_verify(change, code):
    headers = get_example()
    change(headers)
    with pytest.raises(MistError) as exc:
        sigv4.verify(sigv4.parse_header_auth(headers), SECRET, "GET", "/test.txt", [], headers, NOW)
    assert exc.value.code == code


def test_the_wrong_secret_or_path_does_not_verify():
    headers = get_example()
    claim = sigv4.parse_header_auth(headers)
    for secret, path in ((SECRET + "x", "/test.txt"), (SECRET, "/test.txt2")):
        with pytest.raises(MistError) as exc:
            sigv4.verify(claim, secret, "GET", path, [], headers, NOW)
        assert exc.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(("offset", "ok"), [(-14 * 60, True), (14 * 60, True), (-16 * 60, False), (16 * 60, False)])
def test_header_signatures_allow_fifteen_minutes_of_clock_skew(offset, ok):
    headers = get_example()
    claim = sigv4.parse_header_auth(headers)
    if ok:
        sigv4.verify(claim, SECRET, "GET", "/test.txt", [], headers, NOW + offset)
    else:
        with pytest.raises(MistError) as exc:
            sigv4.verify(claim, SECRET, "GET", "/test.txt", [], headers, NOW + offset)
        assert exc.value.code == "RequestTimeTooSkewed"


PRESIGNED_QUERY = [
    ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
    ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
    ("X-Amz-Date", "20130524T000000Z"), ("X-Amz-Expires", "86400"), ("X-Amz-SignedHeaders", "host"),
    ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
]  # fmt: skip


@pytest.mark.parametrize(("after", "ok"), [(0, True), (86400, True), (86401, False)])
def test_the_documented_presigned_url_verifies_until_it_expires(after, ok):
    headers = [("host", "examplebucket.s3.amazonaws.com")]
    claim = sigv4.parse_query_auth(PRESIGNED_QUERY)
    assert claim is not None and claim.payload == sigv4.UNSIGNED_PAYLOAD
    if ok:
        sigv4.verify(claim, SECRET, "GET", "/test.txt", PRESIGNED_QUERY, headers, NOW + after)
    else:
        with pytest.raises(MistError) as exc:
            sigv4.verify(claim, SECRET, "GET", "/test.txt", PRESIGNED_QUERY, headers, NOW + after)
        assert exc.value.code == "AccessDenied" and "expired" in exc.value.message


def test_presigned_urls_live_at_most_seven_days():
    query = [(k, "604801" if k == "X-Amz-Expires" else v) for k, v in PRESIGNED_QUERY]
    with pytest.raises(MistError) as exc:
        sigv4.parse_query_auth(query)
    assert exc.value.code == "AuthorizationQueryParametersError"


def test_signature_v2_header_auth_is_refused_with_a_pointer_to_v4():
    with pytest.raises(MistError) as exc:
        sigv4.parse_header_auth([("authorization", "AWS AKIA:c2lnbmF0dXJl")])
    assert exc.value.code == "InvalidRequest" and "AWS4-HMAC-SHA256" in exc.value.message


# -- aws-chunked ---------------------------------------------------------------------------------

# PUT /examplebucket/chunkObject.txt, 66560 bytes of "a" in chunks of 64 KiB, 1 KiB and 0
STREAMING_HEADERS = [
    ("host", "s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ("x-amz-content-sha256", sigv4.STREAMING_SIGNED), ("content-encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"), ("content-length", "66824"),
    ("authorization", header_auth(
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class", "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")),
]  # fmt: skip
CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]


def streaming_body(signatures: list[str], data: bytes = b"a" * 66560, trailer: bytes = b"") -> bytes:
    out = b""
    for size, signature in zip((65536, 1024, 0), signatures):
        chunk, data = data[:size], data[size:]
        out += f"{size:x};chunk-signature={signature}\r\n".encode() + chunk + (b"\r\n" if size else b"")
    return out + (trailer or b"\r\n")


def decoder(trailer: bool = False, seed: str | None = None) -> tuple[ChunkDecoder, list[bytes]]:
    claim = sigv4.parse_header_auth(STREAMING_HEADERS)
    key = sigv4.verify(claim, SECRET, "PUT", "/examplebucket/chunkObject.txt", [], STREAMING_HEADERS, NOW)
    if seed is not None:
        claim = sigv4.Claim(claim.credential, claim.signed_headers, seed, claim.amz_date, claim.payload)
    out: list[bytes] = []
    return ChunkDecoder(out.append, ChunkSigner(key, claim), trailer=trailer), out


def test_the_documented_chunk_signed_upload_verifies_its_seed_and_every_chunk():
    dec, out = decoder()
    body = streaming_body(CHUNK_SIGNATURES)
    assert len(body) == 66824
    dec.feed(body)
    dec.finish()
    assert b"".join(out) == b"a" * 66560


@pytest.mark.parametrize("step", [1, 7, 100, 4096, 70000])
def test_chunks_decode_the_same_however_the_body_is_split(step):
    dec, out = decoder()
    body = streaming_body(CHUNK_SIGNATURES)
    for i in range(0, len(body), step):
        dec.feed(body[i : i + step])
    dec.finish()
    assert b"".join(out) == b"a" * 66560


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_a_wrong_chunk_signature_fails_the_body(bad):
    signatures = list(CHUNK_SIGNATURES)
    signatures[bad] = "0" * 64
    dec, _ = decoder()
    with pytest.raises(MistError) as exc:
        dec.feed(streaming_body(signatures))
        dec.finish()
    assert exc.value.code == "SignatureDoesNotMatch"


def test_altered_chunk_data_fails_the_body():
    dec, _ = decoder()
    with pytest.raises(MistError) as exc:
        dec.feed(streaming_body(CHUNK_SIGNATURES, data=b"a" * 66559 + b"b"))
    assert exc.value.code == "SignatureDoesNotMatch"


def test_a_body_cut_before_its_final_chunk_fails():
    dec, _ = decoder()
    dec.feed(streaming_body(CHUNK_SIGNATURES)[:-100])
    with pytest.raises(MistError) as exc:
        dec.finish()
    assert exc.value.code == "IncompleteBody"


def test_the_documented_signed_trailer_upload_verifies():
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: the documentation's chunk and trailer signatures."""
    seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    signatures = [
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    ]
    trailer = (
        b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n"
    )
    dec, out = decoder(trailer=True, seed=seed)
    dec.feed(streaming_body(signatures, trailer=trailer))
    dec.finish()
    assert b"".join(out) == b"a" * 66560 and dec.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}

    dec, _ = decoder(trailer=True, seed=seed)
    with pytest.raises(MistError) as exc:
        dec.feed(streaming_body(signatures, trailer=trailer.replace(b"sOO8", b"AAAA")))
    assert exc.value.code == "SignatureDoesNotMatch"


def test_an_unsigned_trailer_body_decodes_and_keeps_its_checksum():
    data = b"hello trailer" * 1000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = f"{len(data):x}\r\n".encode() + data + f"\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    out: list[bytes] = []
    dec = ChunkDecoder(out.append, None, trailer=True)
    dec.feed(body)
    dec.finish()
    assert b"".join(out) == data and dec.trailers == {"x-amz-checksum-crc32": crc}
