import sys

from mist.control.invocations import new_invocation_id


def test_invocation_ids_are_32_hex_and_sort_by_creation_time():
    ids = [new_invocation_id(ns) for ns in (1_700_000_000_000_000_000, 1_700_000_000_000_001_000, 1_800_000_000_000_000_000)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids)
    assert len({new_invocation_id(5_000) for _ in range(100)}) == 100  # same microsecond, still unique


def test_ids_made_in_one_process_keep_their_order_even_within_a_microsecond():
    ids = [new_invocation_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000


def test_ids_made_at_once_in_threads_are_unique_and_each_threads_are_in_order():
    import threading

    made: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        for _ in range(3000):  # several batches of random bytes, shared by the threads
            out.append(new_invocation_id())

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every) == 24_000
    assert len({i[14:] for i in every}) == 24_000  # the random parts too: no batch handed out twice
    assert all(out == sorted(out) for out in made)
