import base64
import json

import pytest

from mist.core.httpevent import BadFunctionResponse, build_event, map_response


def event(**overrides):
    args = dict(
        method="POST",
        path="/items/7",
        raw_query="x=1&x=2&y=",
        headers=[("Host", "localhost:8080"), ("Content-Type", "application/json"), ("Cookie", "a=1; b=2"),
                 ("X-Multi", "one"), ("X-Multi", "two"), ("User-Agent", "curl/8")],
        body=b'{"k": 1}',
        source_ip="127.0.0.1",
        request_id="inv-1",
        function_name="hello",
        now=1_700_000_000.5,
    )
    args.update(overrides)
    return build_event(**args)


def test_request_becomes_a_payload_2_0_event_like_a_function_url_gives():
    ev = event()
    assert ev["version"] == "2.0"
    assert ev["rawPath"] == "/items/7"
    assert ev["rawQueryString"] == "x=1&x=2&y="
    assert ev["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert ev["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in ev["headers"]
    assert ev["headers"]["x-multi"] == "one,two"
    assert ev["headers"]["content-type"] == "application/json"
    assert ev["requestContext"]["http"] == {
        "method": "POST", "path": "/items/7", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "curl/8"
    }
    assert ev["requestContext"]["timeEpoch"] == 1_700_000_000_500
    assert ev["body"] == '{"k": 1}' and ev["isBase64Encoded"] is False


def test_no_query_and_no_body_leave_those_keys_out():
    ev = event(raw_query="", body=b"", headers=[])
    assert "queryStringParameters" not in ev
    assert "body" not in ev and ev["isBase64Encoded"] is False
    assert "cookies" not in ev


@pytest.mark.parametrize("content_type", ["application/octet-stream", "image/png"])
def test_binary_bodies_are_base64_encoded(content_type):
    raw = bytes(range(256))
    ev = event(headers=[("content-type", content_type)], body=raw)
    assert ev["isBase64Encoded"] is True
    assert base64.b64decode(ev["body"]) == raw


def test_text_that_is_not_utf8_is_base64_encoded_not_mangled():
    ev = event(headers=[("content-type", "text/plain")], body=b"\xff\xfe")
    assert ev["isBase64Encoded"] is True


def test_plain_return_value_is_answered_200_json():
    r = map_response({"a": 1}, b'{"a": 1}')
    assert r.status == 200 and r.body == b'{"a": 1}'
    assert ("content-type", "application/json") in r.headers


def test_response_object_maps_status_headers_cookies_and_body():
    r = map_response(
        {"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-A": 5}, "cookies": ["s=1; Path=/"],
         "body": "made"},
        b"",
    )
    assert r.status == 201 and r.body == b"made"
    assert ("content-type", "text/plain") in r.headers and ("x-a", "5") in r.headers
    assert ("set-cookie", "s=1; Path=/") in r.headers


def test_base64_response_bodies_round_trip_binary():
    raw = bytes(range(256))
    r = map_response({"statusCode": 200, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}, b"")
    assert r.body == raw


def test_response_without_content_type_defaults_to_json():
    r = map_response({"statusCode": 204}, b"")
    assert r.body == b"" and ("content-type", "application/json") in r.headers


def test_non_string_body_is_json_encoded():
    r = map_response({"statusCode": 200, "body": {"x": [1]}}, b"")
    assert json.loads(r.body) == {"x": [1]}


@pytest.mark.parametrize(
    "bad",
    [
        {"statusCode": 99},
        {"statusCode": "abc"},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": "a\r\nb"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "cookies": "a=1"},
    ],
)
def test_malformed_response_objects_are_refused_with_a_reason(bad):
    with pytest.raises(BadFunctionResponse):
        map_response(bad, b"")
