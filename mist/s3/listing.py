"""One page of a bucket listing (ListObjectsV2 / ListObjects), as a pure function over a fetcher.

Keys are visited in UTF-8 byte order from `start_after` (exclusive) within `prefix`. With a
delimiter, a key whose rest (after the prefix) contains it is rolled up into a common prefix
(everything up to and including the delimiter), reported once, and the keys under it are
skipped by seeking past them. Keys and common prefixes count together against `max_keys`; the
page's marker is the last thing on it, and resuming after that marker never repeats a prefix.

Worked example: keys a/1 a/2 b c/1, delimiter "/", max_keys 2 ->
    page 1: prefixes [a/], keys [b], truncated, marker "b"
    page 2 (start_after "b"): prefixes [c/], not truncated
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class HasKey(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=HasKey)

# fetch(bound, inclusive, limit): up to `limit` rows with key > bound (>= if inclusive), within
# the prefix, in key order.
Fetch = Callable[[str, bool, int], list[R]]


@dataclass(frozen=True)
class Page(Generic[R]):
    contents: list[R] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    marker: str | None = None  # the last key or common prefix on the page, to resume after


def successor(text: str) -> str | None:
    """The smallest string greater than every string that starts with `text` (None: none)."""
    chars = list(text)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not characters; keys never hold them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def prefix_upper(prefix: str) -> str | None:
    """Keys within `prefix` are below this bound (None: no bound)."""
    return successor(prefix) if prefix else None


def list_page(
    fetch: Fetch[R], *, prefix: str = "", delimiter: str = "", start_after: str = "", max_keys: int = 1000
) -> Page[R]:
    if max_keys <= 0:
        return Page()
    contents: list[R] = []
    prefixes: list[str] = []
    marker: str | None = None
    bound, inclusive = (start_after, False) if start_after >= prefix else (prefix, True)
    batch = min(max(max_keys + 1, 100), 1001)
    while True:
        rows = fetch(bound, inclusive, batch)
        skipping: str | None = None  # a common prefix whose keys are being passed over
        for row in rows:
            key = row.key
            if skipping is not None and key.startswith(skipping):
                continue
            skipping = None
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                if len(contents) + len(prefixes) == max_keys:
                    return Page(contents, prefixes, True, marker)
                contents.append(row)
                marker = key
                bound, inclusive = key, False
                continue
            common = key[: cut + len(delimiter)]
            skipping = common
            if start_after and common <= start_after:
                pass  # reported on an earlier page (or before where the caller asked to start)
            elif len(contents) + len(prefixes) == max_keys:
                return Page(contents, prefixes, True, marker)
            else:
                prefixes.append(common)
                marker = common
            after = successor(common)
            if after is None:
                return Page(contents, prefixes, False, marker)
            bound, inclusive = after, True
        if len(rows) < batch:  # nothing further: this was the end of the prefix
            return Page(contents, prefixes, False, marker)
