from mist.control.invocations import new_invocation_id


def test_invocation_ids_are_32_hex_and_sort_by_creation_time():
    ids = [new_invocation_id(ns) for ns in (1_700_000_000_000_000_000, 1_700_000_000_000_001_000, 1_800_000_000_000_000_000)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids)
    assert len({new_invocation_id(5_000) for _ in range(100)}) == 100  # same microsecond, still unique


def test_ids_made_in_one_process_keep_their_order_even_within_a_microsecond():
    ids = [new_invocation_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
