import pytest

from mist.worker import protocol
from mist.worker.protocol import ASSIGN, INVOKE, LOG, Frame, FrameDecoder, ProtocolError, encode


def test_docstring_example_is_exact():
    data = encode(INVOKE, {"id": "r1", "t": 3000}, b'{"x": 1}')
    assert data == b"\x02\x00\x00\x00\x14\x00\x00\x00\x08" + b'{"id":"r1","t":3000}' + b'{"x": 1}'


def test_payload_bytes_pass_through_untouched():
    payload = b'{"a": [1, 2, 3], "s": "\\u00e9"}\xff'
    (frame,) = FrameDecoder().feed(encode(INVOKE, {"id": "x"}, payload))
    assert frame == Frame(INVOKE, {"id": "x"}, payload)


def test_frames_split_at_every_byte_boundary_reassemble():
    data = encode(ASSIGN, {"handler": "main.handler"}) + encode(LOG, {"id": "r"}, "héllo".encode())
    decoder = FrameDecoder()
    frames = [f for i in range(len(data)) for f in decoder.feed(data[i : i + 1])]
    assert [f.kind for f in frames] == [ASSIGN, LOG]
    assert frames[1].payload.decode() == "héllo"
    assert decoder.pending == 0


def test_many_frames_in_one_read():
    data = b"".join(encode(LOG, {"n": i}, b"x" * i) for i in range(50))
    frames = FrameDecoder().feed(data)
    assert [f.header["n"] for f in frames] == list(range(50))


def test_oversized_frame_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="over the 100 limit"):
        FrameDecoder(max_frame=100).feed(encode(LOG, {}, b"x" * 200))


def test_garbage_header_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not JSON"):
        FrameDecoder().feed(protocol.PREFIX.pack(LOG, 3, 0) + b"{{{")


def test_header_must_be_an_object():
    with pytest.raises(ProtocolError, match="not a JSON object: list"):
        FrameDecoder().feed(protocol.PREFIX.pack(LOG, 2, 0) + b"[]")


@pytest.mark.parametrize("rid", ["r1", 'quote" back\\slash', "é ünï", "\n\t"])
def test_the_invoke_fast_path_encodes_exactly_like_encode(rid):
    assert protocol.encode_invoke("17", rid, 3000, b'{"x": 1}') == encode(
        INVOKE, {"id": "17", "rid": rid, "t": 3000}, b'{"x": 1}')


def test_headers_with_whitespace_still_decode():
    (frame,) = FrameDecoder().feed(protocol.PREFIX.pack(LOG, 12, 0) + b' {"a": 1}   ')
    assert frame.header == {"a": 1}


def test_a_frame_split_after_a_whole_one_keeps_the_rest():
    data = encode(LOG, {"n": 1}, b"a") + encode(LOG, {"n": 2}, b"bb")
    decoder = FrameDecoder()
    first = decoder.feed(data[:-3])
    assert [f.header["n"] for f in first] == [1] and decoder.pending > 0
    assert decoder.feed(data[-3:]) == [Frame(LOG, {"n": 2}, b"bb")]
    assert decoder.pending == 0
