"""The S3 endpoint in a real `mist up`: announced, keys from the CLI, objects kept across a restart."""

from __future__ import annotations

import json
import socket
import subprocess

import boto3
import pytest
from botocore.config import Config

from tests.e2e.conftest import MIST, start_server

pytestmark = pytest.mark.sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mist_up_serves_s3_with_keys_from_the_cli_and_keeps_objects_across_restarts(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    server = start_server(data, "--s3-port", str(port))
    try:
        assert server.s3_url == f"http://127.0.0.1:{port}"
        created = server.cli("s3", "keys", "create", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        s3 = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip
        s3.create_bucket(Bucket="kept")
        s3.put_object(Bucket="kept", Key="a/b.txt", Body=b"survives restarts")
        with server.client() as api:
            stats = api.get("/v1/statistics").json()["S3Server"]
        assert stats["requests"] == 2 and stats["server_errors"] == 0
    finally:
        assert server.stop() == 0

    server = start_server(data, "--s3-port", str(port))
    try:
        assert s3.get_object(Bucket="kept", Key="a/b.txt")["Body"].read() == b"survives restarts"
        listed = server.cli("s3", "keys", "ls")
        assert key["access_key_id"] in listed.stdout and key["secret_access_key"] not in listed.stdout
    finally:
        assert server.stop() == 0


def test_a_busy_s3_port_stops_mist_up_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [MIST, "up", "--data-dir", str(tmp_path / "data"), "--port", "0", "--s3-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--s3-port" in r.stderr
