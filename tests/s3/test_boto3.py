"""What a boto3 user sees: every operation against a real server, with real signatures."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
from botocore.exceptions import ClientError

from tests.s3.conftest import pending, unique


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    err = exc.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


# -- buckets ---------------------------------------------------------------------------------------


def test_buckets_are_created_listed_and_deleted(s3):
    name = unique("b")
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None

    s3.delete_bucket(Bucket=name)

    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert code_of(exc)[0] == 404


def test_bucket_errors_carry_s3_codes(s3, bucket):
    cases = [
        (lambda: s3.create_bucket(Bucket=bucket), (409, "BucketAlreadyOwnedByYou")),
        (lambda: s3.create_bucket(Bucket="Not_Valid"), (400, "InvalidBucketName")),
        (lambda: s3.delete_bucket(Bucket=unique("gone")), (404, "NoSuchBucket")),
        (lambda: s3.list_objects_v2(Bucket=unique("gone")), (404, "NoSuchBucket")),
        (lambda: s3.put_object(Bucket=unique("gone"), Key="k", Body=b"x"), (404, "NoSuchBucket")),
    ]
    for call, expected in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc) == expected


def test_a_large_put_to_a_missing_bucket_is_refused_before_its_body_and_the_client_carries_on(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=unique("gone"), Key="k", Body=b"x" * (3 * 1024 * 1024))
    assert code_of(exc) == (404, "NoSuchBucket")
    s3.put_object(Bucket=bucket, Key="k", Body=b"next request, same client")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"next request, same client"


def test_a_bucket_with_objects_is_not_deleted(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")

    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)

    assert code_of(exc) == (409, "BucketNotEmpty")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_buckets_of_another_owner_are_neither_listed_nor_usable(endpoint, s3, bucket):
    other = endpoint.store.keys.create(owner=unique("tenant"))
    theirs = endpoint.client(other.access_key_id, other.secret_access_key)

    assert bucket not in [b["Name"] for b in theirs.list_buckets()["Buckets"]]
    for attempt in (lambda: theirs.put_object(Bucket=bucket, Key="k", Body=b"x"),
                    lambda: theirs.get_object(Bucket=bucket, Key="k"),
                    lambda: theirs.list_objects_v2(Bucket=bucket)):
        with pytest.raises(ClientError) as exc:
            attempt()
        assert code_of(exc) == (404, "NoSuchBucket")  # invisible: the same answer as for no bucket at all
    with pytest.raises(ClientError) as exc:
        theirs.create_bucket(Bucket=bucket)
    assert code_of(exc) == (409, "BucketAlreadyExists")  # bucket names are one namespace, as in S3


# -- objects ---------------------------------------------------------------------------------------


def test_put_get_head_keep_data_metadata_content_type_and_md5_etag(s3, bucket):
    body = b"hello, objects"
    put = s3.put_object(
        Bucket=bucket, Key="dir/hello.txt", Body=body, ContentType="text/plain; charset=utf-8",
        Metadata={"Author": "ada", "n": "1"}, CacheControl="max-age=60", ContentDisposition="inline",
    )  # fmt: skip
    md5 = hashlib.md5(body).hexdigest()
    assert put["ETag"] == f'"{md5}"'

    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["Metadata"] == {"author": "ada", "n": "1"}
    assert (got["ETag"], got["ContentLength"]) == (f'"{md5}"', len(body))
    assert (got["CacheControl"], got["ContentDisposition"]) == ("max-age=60", "inline")

    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert (head["ContentLength"], head["ETag"], head["Metadata"]) == (len(body), f'"{md5}"', {"author": "ada", "n": "1"})
    assert abs(head["LastModified"].timestamp() - time.time()) < 60


def test_an_object_without_content_type_is_binary_octet_stream(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentType"] == "binary/octet-stream"


def test_overwrite_replaces_the_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second version")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second version"


def test_empty_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b"" and got["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'


def test_missing_keys_are_no_such_key(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert code_of(exc) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="nope")
    assert code_of(exc)[0] == 404


@pytest.mark.parametrize(
    ("header", "content", "status", "content_range"),
    [
        ("bytes=0-3", b"0123", 206, "bytes 0-3/10"),
        ("bytes=7-", b"789", 206, "bytes 7-9/10"),
        ("bytes=-4", b"6789", 206, "bytes 6-9/10"),
        ("bytes=5-100", b"56789", 206, "bytes 5-9/10"),
        ("lines=1-2", b"0123456789", 200, None),
    ],
)
def test_range_reads(s3, bucket, header, content, status, content_range):
    s3.put_object(Bucket=bucket, Key="digits", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="digits", Range=header)
    assert got["Body"].read() == content
    assert got["ResponseMetadata"]["HTTPStatusCode"] == status
    assert got.get("ContentRange") == content_range


def test_a_range_past_the_end_is_invalid_range(s3, bucket):
    s3.put_object(Bucket=bucket, Key="digits", Body=b"0123456789")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="digits", Range="bytes=10-")
    assert code_of(exc) == (416, "InvalidRange")


def test_a_range_over_a_multipart_object_spans_its_parts(s3, bucket):
    part = 5 * 1024 * 1024
    data = bytes(range(256)) * (2 * part // 256) + b"tail"
    s3.upload_fileobj(io.BytesIO(data), bucket, "mp", Config=_multipart_config(part))
    start, end = part - 10, part + 9
    got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={start}-{end}")["Body"].read()
    assert got == data[start : end + 1]


def test_conditional_gets(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag)
    assert code_of(exc)[0] == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k", IfMatch='"0000"')
    assert code_of(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k", IfMatch=etag)["Body"].read() == b"x"


def test_conditional_writes_create_only_or_replace_only_the_version_read(endpoint, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfNoneMatch="*")
    assert code_of(exc) == (412, "PreconditionFailed")
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch='"00000000000000000000000000000000"')
    assert code_of(exc) == (412, "PreconditionFailed")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"
    assert [e.key for e in pending(endpoint.store) if e.bucket == bucket] == ["k", "k"]  # refused writes: no event


def test_delete_object_removes_it_and_deleting_a_missing_key_succeeds(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


def test_delete_objects_deletes_many_and_reports_each(s3, bucket):
    for k in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "never"}, {"Key": "k" * 1100}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "never"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("k" * 1100, "KeyTooLongError")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]


def test_delete_objects_quiet_reports_only_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}], "Quiet": True})
    assert "Deleted" not in result and "Errors" not in result


def test_copy_object_copies_data_and_metadata_or_replaces_metadata(s3, bucket):
    other = unique("b")
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"a": "1"}, ContentType="text/x-src")

    copied = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.get_object(Bucket=other, Key="dst")
    assert got["Body"].read() == b"payload"
    assert (got["Metadata"], got["ContentType"]) == ({"a": "1"}, "text/x-src")
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'

    s3.copy_object(
        Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}, MetadataDirective="REPLACE",
        Metadata={"b": "2"}, ContentType="text/x-new",
    )  # fmt: skip
    head = s3.head_object(Bucket=bucket, Key="src")
    assert (head["Metadata"], head["ContentType"]) == ({"b": "2"}, "text/x-new")


def test_copy_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code_of(exc) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})
    assert code_of(exc) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch='"0"')
    assert code_of(exc) == (412, "PreconditionFailed")


def test_an_unsupported_subresource_is_not_implemented(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_versioning(Bucket=bucket)
    assert code_of(exc) == (501, "NotImplemented")


# -- listing ---------------------------------------------------------------------------------------


def test_list_objects_v2_with_prefix_delimiter_and_pagination(s3, bucket):
    keys = ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "e/x/y"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())

    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == keys
    assert everything["KeyCount"] == len(keys) and not everything["IsTruncated"]
    assert everything["Contents"][0]["Size"] == 3

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["b", "d"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "c/", "e/"]

    under_a = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/b/"]

    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}))
    seen = [(o["Key"]) for pg in pages for o in pg.get("Contents", [])] + [
        p["Prefix"] for pg in pages for p in pg.get("CommonPrefixes", [])
    ]
    assert sorted(seen) == ["a/", "b", "c/", "d", "e/"]
    assert len(pages) == 3 and all(pg["KeyCount"] <= 2 for pg in pages)

    first = s3.list_objects_v2(Bucket=bucket, MaxKeys=3)
    assert first["IsTruncated"] and len(first["Contents"]) == 3
    rest = s3.list_objects_v2(Bucket=bucket, ContinuationToken=first["NextContinuationToken"])
    assert [o["Key"] for o in first["Contents"] + rest["Contents"]] == keys

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="c/1")
    assert [o["Key"] for o in after["Contents"]] == ["c/2", "d", "e/x/y"]
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=0)["KeyCount"] == 0


def test_list_objects_v1_pages_with_markers(s3, bucket):
    for k in ("x1", "x2", "x3"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert [o["Key"] for pg in pages for o in pg["Contents"]] == ["x1", "x2", "x3"]


def test_listing_returns_awkward_keys_intact(s3, bucket):
    keys = ["a b", "a+b", "a%20b", "ümlaut/ß", "tab\there", "x&y<z>", "q?x=1#f"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(keys)
    for k in keys:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == b"1"


# -- multipart -------------------------------------------------------------------------------------


def _multipart_config(part: int):  # noqa: ANN202
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4)


def test_multipart_upload_assembles_parts_with_s3s_etag(s3, bucket):
    part = 5 * 1024 * 1024
    chunks = [b"a" * part, b"b" * part, b"c" * 1000]
    created = s3.create_multipart_upload(Bucket=bucket, Key="big", ContentType="video/x-test", Metadata={"m": "v"})
    upload_id = created["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=i + 1, Body=c)["ETag"]
        for i, c in enumerate(chunks)
    ]
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, part), (2, part), (3, 1000)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload_id]

    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip

    expected = hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == b"".join(chunks)
    assert (got["ETag"], got["ContentType"], got["Metadata"]) == (f'"{expected}"', "video/x-test", {"m": "v"})
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_list_parts_pages(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for n in (1, 2, 3):
        s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n, Body=b"x")
    first = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2] and first["IsTruncated"]
    rest = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id, PartNumberMarker=first["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [3] and not rest["IsTruncated"]


def test_multipart_errors(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"last")["ETag"]

    def complete(parts):  # noqa: ANN001, ANN202
        return s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})

    cases = [
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], (400, "EntityTooSmall")),
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], (400, "InvalidPartOrder")),
        ([{"PartNumber": 1, "ETag": e2}], (400, "InvalidPart")),
        ([{"PartNumber": 3, "ETag": e1}], (400, "InvalidPart")),
    ]
    for parts, expected in cases:
        with pytest.raises(ClientError) as exc:
            complete(parts)
        assert code_of(exc) == expected
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="k", UploadId="nope", PartNumber=1, Body=b"x")
    assert code_of(exc) == (404, "NoSuchUpload")

    assert complete([{"PartNumber": 2, "ETag": e2}])["ETag"].endswith('-1"')  # one part, the last: fine
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"last"


def test_abort_forgets_the_upload_and_its_parts(endpoint, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)
    blobs_before = _blob_count(endpoint.store)

    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)

    assert _blob_count(endpoint.store) == blobs_before - 1
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code_of(exc) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert code_of(exc)[0] == 404


def _blob_count(store) -> int:  # noqa: ANN001
    return sum(1 for p in (store.root / "blobs").rglob("*") if p.is_file())


def test_upload_file_and_download_file_round_trip_large_objects(s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(hashlib.sha256(b"seed").digest() * (13 * 1024 * 1024 // 32))
    s3.upload_file(str(src), bucket, "big.bin", Config=_multipart_config(5 * 1024 * 1024))
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big.bin", str(dst), Config=_multipart_config(5 * 1024 * 1024))
    assert dst.read_bytes() == src.read_bytes()
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"].endswith('-3"')


def test_upload_part_copy_builds_an_object_from_ranges_of_another(s3, bucket):
    part = 5 * 1024 * 1024
    src = bytes(range(256)) * (part // 256) + b"0123456789"
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=1, CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{part - 1}",
    )  # fmt: skip
    r2 = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=2, CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes={part}-{part + 9}",
    )  # fmt: skip
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload_id, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]},
    ]})  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == src


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["..", "../x", "a/../../etc/passwd", "./.", "/leading/slash", "a//b", "ümlaut/日本語/😀", "k" * 1024,
     "é" * 512, "spaces and\ttabs", "%2e%2e/%2f"],
)  # fmt: skip
def test_awkward_keys_are_plain_keys(endpoint, s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"data"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    root = endpoint.store.root.resolve()
    data_files = [p for p in root.parent.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(root.parent) for p in data_files)
    assert not any("passwd" in str(p) or ".." in p.parts for p in data_files)
    s3.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_keys_over_1024_bytes_and_keys_with_nul_are_refused(s3, bucket):
    for key, expected in [("k" * 1025, "KeyTooLongError"), ("é" * 513, "KeyTooLongError"), ("a\x00b", "InvalidArgument")]:
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert code_of(exc) == (400, expected)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


# -- events ----------------------------------------------------------------------------------------


def test_every_create_and_delete_writes_one_event_and_failures_none(endpoint, s3, bucket):
    s3.put_object(Bucket=bucket, Key="put me", Body=b"abc")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "put me"})
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"p")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    s3.delete_object(Bucket=bucket, Key="copy")
    s3.delete_object(Bucket=bucket, Key="never existed")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "mp"}, {"Key": "also never"}]})
    for failing in (
        lambda: s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"}),
        lambda: s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x"),
        lambda: s3.put_object(Bucket=bucket, Key="md5", Body=b"x", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA=="),
    ):
        with pytest.raises(ClientError):
            failing()

    events = [e for e in pending(endpoint.store) if e.bucket == bucket]

    assert [(e.event_name, e.key) for e in events] == [
        ("ObjectCreated:Put", "put me"),
        ("ObjectCreated:Copy", "copy"),
        ("ObjectCreated:CompleteMultipartUpload", "mp"),
        ("ObjectRemoved:Delete", "copy"),
        ("ObjectRemoved:Delete", "mp"),
    ]
    put = events[0].record
    assert put["s3"]["object"] == {
        "key": "put+me", "size": 3, "eTag": hashlib.md5(b"abc").hexdigest(), "sequencer": put["s3"]["object"]["sequencer"]
    }
    assert put["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    assert put["userIdentity"]["principalId"] == endpoint.key_id
    sequencers = [e.record["s3"]["object"]["sequencer"] for e in events]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == len(sequencers)


def test_statistics_count_answers_and_errors(endpoint, s3, bucket):
    before = endpoint.server.statistics()
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="missing")
    after = endpoint.server.statistics()
    assert after.requests - before.requests == 2
    assert after.client_errors - before.client_errors == 1 and after.server_errors == before.server_errors
    assert after.in_flight == 0
