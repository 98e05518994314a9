"""Many rows in few INSERT statements: the record and usage writers' way into SQLite and PostgreSQL.

`executemany` steps a statement once per row, and SQLite's driver lets go of the GIL for each
step and takes it back after, so a batch of N rows made the writer thread and the event loop
hand the GIL to each other up to 2N times. Here a batch is cut into statements of MAX_ROWS rows,
then the rest in powers of two (300 rows = 256 + 32 + 8 + 4): a few steps per batch, and never
more than nine statement shapes per table, so the drivers' statement caches keep them
prepared. Under `wrk -c64` on the invocation route the writer thread's CPU per invocation fell
by about a fifth (22-26 -> 18-20 us; docs/benchmarks.md, 2026-12-07).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import sqlalchemy as sa

MAX_ROWS = 256  # rows per statement; x 19 columns stays far below SQLite's 32,766 parameters


@functools.lru_cache(maxsize=64)
def insert_sql(table: str, columns: tuple[str, ...], rows: int, mark: str) -> str:
    """INSERT ... VALUES (...) x rows ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL): a
    retried batch writes nothing twice."""
    one = f"({', '.join([mark] * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)} ON CONFLICT DO NOTHING"


def sizes(n: int) -> list[int]:
    """The statement sizes a batch of n rows is cut into (pure): MAX_ROWS while it lasts,
    then the binary digits of the rest, largest first."""
    out = [MAX_ROWS] * (n // MAX_ROWS)
    rest = n % MAX_ROWS
    bit = MAX_ROWS >> 1
    while rest:
        if rest & bit:
            out.append(bit)
            rest -= bit
        bit >>= 1
    return out


def insert_rows(conn: sa.Connection, table: str, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> int:
    """Insert `rows` (tuples in `columns` order) in the statements `sizes` gives; the number of
    rows stored (those already there are skipped)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    stored = 0
    i = 0
    for size in sizes(len(rows)):
        params = tuple(v for row in rows[i : i + size] for v in row)
        stored += int(conn.exec_driver_sql(insert_sql(table, columns, size, mark), params).rowcount or 0)
        i += size
    return stored
