"""How a batch of rows is cut into INSERT statements (mist/control/sqlbatch.py): few statements
per batch and few distinct shapes, so the record writers step the database a handful of times
per batch instead of once per row."""

import pytest

from mist.control.sqlbatch import MAX_ROWS, insert_sql, sizes


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (0, []),
        (1, [1]),
        (2, [2]),
        (3, [2, 1]),
        (255, [128, 64, 32, 16, 8, 4, 2, 1]),
        (256, [256]),
        (300, [256, 32, 8, 4]),
        (513, [256, 256, 1]),
        (2000, [256] * 7 + [128, 64, 16]),
    ],
)
def test_a_batch_is_cut_into_full_statements_then_powers_of_two(rows, expected):
    assert sizes(rows) == expected
    assert sum(sizes(rows)) == rows


def test_any_batch_uses_at_most_nine_statement_shapes():
    shapes = {s for n in range(5 * MAX_ROWS) for s in sizes(n)}
    assert shapes == {MAX_ROWS >> k for k in range(9)}


def test_the_statement_skips_rows_already_stored():
    assert insert_sql("t", ("a", "b"), 2, "?") == "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
