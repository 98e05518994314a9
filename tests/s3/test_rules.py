"""The pure parts: listing pages, ranges, preconditions, names, event records, sealed secrets."""

from __future__ import annotations

import stat
from dataclasses import dataclass

import pytest

from mist.errors import MistError, PlatformError
from mist.s3 import events, rules
from mist.s3.listing import list_page, successor
from mist.sealing import SecretBox


@dataclass(frozen=True)
class Row:
    key: str


def fetcher(keys: list[str], prefix: str = ""):  # noqa: ANN201
    ordered = sorted(keys, key=lambda k: k.encode())
    calls = []

    def fetch(bound: str, inclusive: bool, limit: int) -> list[Row]:
        calls.append(bound)
        rows = [k for k in ordered if (k >= bound if inclusive else k > bound) and k.startswith(prefix)]
        return [Row(k) for k in rows[:limit]]

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


def all_pages(keys: list[str], **kw) -> list[tuple[list[str], list[str], bool]]:  # noqa: ANN003
    pages, start = [], kw.pop("start_after", "")
    while True:
        page = list_page(fetcher(keys, kw.get("prefix", "")), start_after=start, **kw)
        pages.append(([r.key for r in page.contents], page.common_prefixes, page.truncated))
        if not page.truncated:
            return pages
        start = page.marker


KEYS = ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "e/x/y"]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, [(KEYS, [], False)]),
        ({"max_keys": 3}, [(KEYS[:3], [], True), (KEYS[3:6], [], True), (KEYS[6:], [], False)]),
        ({"delimiter": "/"}, [(["b", "d"], ["a/", "c/", "e/"], False)]),
        ({"delimiter": "/", "max_keys": 2}, [(["b"], ["a/"], True), (["d"], ["c/"], True), ([], ["e/"], False)]),
        ({"prefix": "a/", "delimiter": "/"}, [(["a/1", "a/2"], ["a/b/"], False)]),
        ({"prefix": "a/b", "delimiter": "/"}, [([], ["a/b/"], False)]),
        ({"prefix": "zzz"}, [([], [], False)]),
        ({"start_after": "c/1"}, [(["c/2", "d", "e/x/y"], [], False)]),
        ({"start_after": "c/", "delimiter": "/"}, [(["d"], ["e/"], False)]),
        ({"max_keys": 0}, [([], [], False)]),
        ({"delimiter": "x/"}, [(["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d"], ["e/x/"], False)]),
    ],
)  # fmt: skip
def test_listing_pages(kw, expected):
    assert all_pages(KEYS, **kw) == expected


def test_a_page_that_ends_exactly_at_the_last_key_is_not_truncated():
    assert all_pages(["a", "b"], max_keys=2) == [(["a", "b"], [], False)]


def test_a_large_common_prefix_is_skipped_by_seeking_not_by_reading_every_key():
    keys = [f"logs/{i:05d}" for i in range(5000)] + ["z"]
    fetch = fetcher(keys)
    page = list_page(fetch, delimiter="/")
    assert (page.common_prefixes, [r.key for r in page.contents]) == (["logs/"], ["z"])
    assert len(fetch.calls) <= 3  # type: ignore[attr-defined]


def test_keys_sort_and_seek_by_utf8_bytes():
    keys = ["a/é", "a/z", "a/\U0001f600", "a\uffff", "b"]
    assert [k for page in all_pages(keys, max_keys=1) for k in page[0]] == sorted(keys, key=lambda k: k.encode())
    assert successor("a\U0010ffff") == "b" and successor("\U0010ffff") is None
    assert successor("a\ud7ff") == "a\ue000"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None), ("bytes=0-0", 10, (0, 0)), ("bytes=2-", 10, (2, 9)), ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)), ("bytes=5-99", 10, (5, 9)), ("bytes=5-2", 10, None), ("bytes=0-1,4-5", 10, None),
        ("pages=1-2", 10, None), ("bytes=-", 10, None),
    ],
)  # fmt: skip
def test_ranges(header, size, expected):
    assert rules.parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(MistError) as exc:
        rules.parse_range(header, size)
    assert exc.value.code == "InvalidRange"


T = 1_700_000_000.0
BEFORE, AFTER = rules.http_date(T - 60), rules.http_date(T + 60)


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({}, None), ({"if-match": '"e"'}, None), ({"if-match": '"x", "e"'}, None), ({"if-match": "*"}, None),
        ({"if-match": '"x"'}, 412), ({"if-none-match": '"e"'}, 304), ({"if-none-match": '"x"'}, None),
        ({"if-modified-since": AFTER}, 304), ({"if-modified-since": BEFORE}, None),
        ({"if-unmodified-since": BEFORE}, 412), ({"if-unmodified-since": AFTER}, None),
        ({"if-match": '"e"', "if-unmodified-since": BEFORE}, None),  # If-Match wins, as in S3
        ({"if-none-match": '"x"', "if-modified-since": AFTER}, None),  # If-None-Match wins
        ({"if-modified-since": "not a date"}, None),
    ],
)  # fmt: skip
def test_preconditions(headers, outcome):
    assert rules.check_preconditions(headers, "e", T) == outcome


def test_copy_source_preconditions_fail_with_412_only():
    assert rules.check_preconditions({"x-amz-copy-source-if-none-match": '"e"'}, "e", T, prefix="x-amz-copy-source-if-") == 412


@pytest.mark.parametrize("name", ["abc", "my.bucket-1", "a" * 63, "0ab"])
def test_valid_bucket_names(name):
    rules.validate_bucket_name(name)


@pytest.mark.parametrize("name", ["ab", "a" * 64, "ABC", "a_b", "-ab", "ab-", "a..b", "a.-b", "192.168.1.1", "a b"])
def test_invalid_bucket_names(name):
    with pytest.raises(MistError) as exc:
        rules.validate_bucket_name(name)
    assert exc.value.code == "InvalidBucketName"


def test_metadata_is_limited_to_two_kilobytes():
    assert rules.user_metadata([("x-amz-meta-a", "1"), ("x-amz-meta-a", "2"), ("other", "x")]) == {"a": "1,2"}
    with pytest.raises(MistError) as exc:
        rules.user_metadata([("x-amz-meta-big", "x" * 2048)])
    assert exc.value.code == "MetadataTooLarge"


# -- events ----------------------------------------------------------------------------------------


def test_created_record_has_s3s_shape():
    record = events.event_record(
        event_name=events.CREATED_PUT, bucket="photos", key="2026/a b+c.jpg", size=3, etag="abc",
        sequencer=events.sequencer(255), event_time=1.5, region="eu-west-1", principal="MISTKEY",
    )  # fmt: skip
    assert record["eventVersion"] == "2.1" and record["eventSource"] == "aws:s3"
    assert (record["awsRegion"], record["eventTime"], record["eventName"]) == (
        "eu-west-1", "1970-01-01T00:00:01.500Z", "ObjectCreated:Put",
    )
    assert record["s3"]["s3SchemaVersion"] == "1.0"
    assert record["s3"]["bucket"]["name"] == "photos" and record["s3"]["bucket"]["arn"] == "arn:aws:s3:::photos"
    assert record["s3"]["object"] == {"key": "2026/a+b%2Bc.jpg", "size": 3, "eTag": "abc", "sequencer": "00000000000000FF"}
    assert record["userIdentity"] == {"principalId": "MISTKEY"}


def test_removed_record_has_no_size_or_etag():
    record = events.event_record(
        event_name=events.REMOVED_DELETE, bucket="b", key="k", size=None, etag=None,
        sequencer=events.sequencer(1), event_time=0,
    )  # fmt: skip
    assert record["s3"]["object"] == {"key": "k", "sequencer": "0000000000000001"}


def test_sequencers_order_as_strings():
    seqs = [events.sequencer(n) for n in (1, 9, 10, 255, 256, 2**40)]
    assert seqs == sorted(seqs)


# -- sealed secrets --------------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_with_its_key_file_and_for_its_key(tmp_path):
    box = SecretBox.from_file(tmp_path / "secret.key")
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    sealed = box.seal(secret, "MISTKEY1")
    assert "wJalr" not in sealed and sealed != box.seal(secret, "MISTKEY1")
    assert SecretBox.from_file(tmp_path / "secret.key").open(sealed, "MISTKEY1") == secret
    for other_box, key_id in ((SecretBox.from_file(tmp_path / "other.key"), "MISTKEY1"), (box, "MISTKEY2")):
        with pytest.raises(PlatformError):
            other_box.open(sealed, key_id)


def test_a_tampered_sealed_secret_does_not_open(tmp_path):
    box = SecretBox.from_file(tmp_path / "secret.key")
    sealed = box.seal("secret", "K")
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    with pytest.raises(PlatformError):
        box.open(flipped, "K")


def test_a_damaged_key_file_is_reported(tmp_path):
    (tmp_path / "secret.key").write_bytes(b"short")
    with pytest.raises(PlatformError) as exc:
        SecretBox.from_file(tmp_path / "secret.key")
    assert "damaged" in exc.value.message


@pytest.mark.parametrize(
    ("headers", "current", "code"),
    [
        ({"if-none-match": "*"}, None, None), ({"if-none-match": "*"}, "e", "PreconditionFailed"),
        ({"if-match": '"e"'}, "e", None), ({"if-match": '"x"'}, "e", "PreconditionFailed"),
        ({"if-match": '"e"'}, None, "NoSuchKey"),
    ],
)  # fmt: skip
def test_conditional_writes(headers, current, code):
    check = rules.write_precondition(headers)
    if code is None:
        check(current)
    else:
        with pytest.raises(MistError) as exc:
            check(current)
        assert exc.value.code == code


def test_unconditional_writes_have_no_check_and_only_star_is_a_create_condition():
    assert rules.write_precondition({}) is None
    with pytest.raises(MistError) as exc:
        rules.write_precondition({"if-none-match": '"e"'})
    assert exc.value.code == "NotImplemented"
