"""The fast path's `?version=` reader agrees with `urllib.parse.parse_qs` on every query."""

from __future__ import annotations

import random
from urllib.parse import parse_qs

import pytest

from mist.gateway.fastpath import version_param

QUERIES = [
    "version=3", "version=12&x=1", "x=1&version=7", "version=", "version", "version=&version=4",
    "version=4&version=5", "Version=3", "versions=3", "xversion=3", "version=latest", "version=$LATEST",
    "version=3=4", "=3", "&&version=9&&", "version=%33", "version=+3", "ver%73ion=5", "version=3%26x",
    "a=b;version=3", "version=3;a=b", "version=é", "", "&", "=", "version=-1", "version=0x10",
]


def reference(query: str) -> str | None:
    return parse_qs(query).get("version", [None])[0]


@pytest.mark.parametrize("query", QUERIES)
def test_the_version_is_read_as_parse_qs_reads_it(query: str) -> None:
    assert version_param(query.encode("latin-1", "replace")) == reference(query.encode("latin-1", "replace").decode("latin-1"))


def test_random_queries_agree_with_parse_qs() -> None:
    rng = random.Random(7)
    alphabet = ["version", "v", "=", "&", ";", "%", "3", "%33", "+", "x", "latest", ""]
    for _ in range(3000):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert version_param(query.encode()) == reference(query), query
