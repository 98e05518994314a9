"""The aws CLI, unchanged, against the endpoint: the commands people type first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3.conftest import unique

_VENV_AWS = Path(sys.executable).with_name("aws")  # installed with the test extras
AWS = str(_VENV_AWS) if _VENV_AWS.exists() else shutil.which("aws")
pytestmark = pytest.mark.skipif(AWS is None, reason="the aws CLI is not installed")


@pytest.fixture
def aws(endpoint, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    env = {
        **os.environ, "AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_ACCESS_KEY_ID": endpoint.key_id, "AWS_SECRET_ACCESS_KEY": endpoint.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }  # fmt: skip

    def run(*args: str) -> str:
        done = subprocess.run(
            [AWS, "--endpoint-url", endpoint.url, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def test_mb_cp_ls_sync_rm_rb(aws, tmp_path):
    bucket = unique("cli")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the CLI's 8 MB multipart threshold
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>")

    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(big), f"s3://{bucket}/data/big.bin")
    aws("s3", "sync", str(tmp_path / "site"), f"s3://{bucket}/site/")
    listing = aws("s3", "ls", "--recursive", f"s3://{bucket}/")
    assert "data/big.bin" in listing and "site/index.html" in listing and str(9 * 1024 * 1024) in listing
    assert "PRE data/" in aws("s3", "ls", f"s3://{bucket}/")
    aws("s3", "cp", f"s3://{bucket}/data/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()

    aws("s3", "rm", "--recursive", f"s3://{bucket}/")
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws("s3", "ls")
