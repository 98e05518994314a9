"""open_state: SQLite by default; with --db a PostgreSQL database shared by processes starting at
once; blobs (code and layers) and the change feed that cluster mode adds, on real PostgreSQL."""

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa

from mist.control.blobs import MemoryBlobStore, SqlBlobStore, metadata as blob_metadata
from mist.control.changes import ChangeFeed, moved
from mist.control.state import StateError, check_db_url, open_state, redact
from mist.errors import PlatformError


def test_without_db_the_state_is_sqlite_in_the_data_dir_and_not_shared(tmp_path):
    state = open_state(tmp_path, None)
    try:
        assert (tmp_path / "mist.db").exists()
        assert not state.shared and state.blobs is None and state.changes is None
    finally:
        state.close()


@pytest.mark.parametrize("url, why", [
    ("sqlite:///x.db", "must be a PostgreSQL URL"),
    ("mysql://u@h/db", "must be a PostgreSQL URL"),
    ("127.0.0.1:5432/test", "must be a PostgreSQL URL"),
])  # fmt: skip
def test_a_url_that_is_not_postgresql_is_refused_saying_what_to_give(url, why):
    with pytest.raises(StateError, match=why) as info:
        check_db_url(url)
    assert "postgresql+psycopg://" in info.value.message


def test_plain_postgresql_urls_get_the_driver_mist_ships_with():
    assert check_db_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert check_db_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_an_unreachable_postgresql_is_a_clear_error_that_hides_the_password(tmp_path):
    started = time.monotonic()
    with pytest.raises(StateError) as info:
        open_state(tmp_path, "postgresql://mist:hunter2@127.0.0.1:1/test")
    assert time.monotonic() - started < 10
    assert "could not be reached" in info.value.message and "start mist again" in info.value.message
    assert "hunter2" not in info.value.message and "mist:***@127.0.0.1:1" in info.value.message
    assert redact("postgresql://a:b@h/d") == "postgresql://a:***@h/d"


def test_processes_starting_at_once_on_an_empty_database_all_start(tmp_path, fresh_pg_url):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start():
        try:
            barrier.wait()
            open_state(tmp_path, fresh_pg_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = open_state(tmp_path, fresh_pg_url)
    try:
        tables = set(sa.inspect(state.store.engine).get_table_names())
        assert {"functions", "events", "api_keys", "triggers", "code_blobs", "state_revisions"} <= tables
    finally:
        state.close()


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def blobs(request, tmp_path):
    if request.param == "memory":
        yield MemoryBlobStore()
        return
    url = request.getfixturevalue("fresh_pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'b.db'}"
    engine = sa.create_engine(url)
    blob_metadata.create_all(engine)
    yield SqlBlobStore(engine)
    engine.dispose()


def test_a_blob_put_is_got_back_byte_for_byte(blobs):
    data = bytes(range(256)) * 1000
    assert not blobs.has_blob("code", "k") and blobs.get_blob("code", "k") is None
    blobs.put_blob("code", "k", data)
    assert blobs.has_blob("code", "k") and blobs.get_blob("code", "k") == data
    assert blobs.get_blob("layer", "k") is None  # kinds are apart


def test_putting_a_blob_twice_keeps_the_first(blobs):
    blobs.put_blob("code", "k", b"first")
    blobs.put_blob("code", "k", b"second")
    assert blobs.get_blob("code", "k") == b"first"


def test_a_damaged_blob_is_refused_not_served(tmp_path, fresh_pg_url):
    engine = sa.create_engine(fresh_pg_url)
    blob_metadata.create_all(engine)
    store = SqlBlobStore(engine)
    store.put_blob("code", "k", b"good bytes")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE code_blobs SET data = 'bad bytes'::bytea")
    with pytest.raises(PlatformError, match="damaged"):
        store.get_blob("code", "k")
    engine.dispose()


@pytest.mark.parametrize("before, now, topics", [
    ({}, {}, []),
    ({"functions": 3}, {"functions": 3}, []),
    ({"functions": 3}, {"functions": 4}, ["functions"]),
    ({}, {"tenancy": 1}, ["tenancy"]),
    ({"secrets": 2, "tenancy": 1}, {"tenancy": 2}, ["secrets", "tenancy"]),
])  # fmt: skip
def test_the_topics_that_moved_are_those_whose_revision_differs(before, now, topics):
    assert moved(before, now) == topics


def test_a_change_written_by_another_process_reaches_the_listeners_of_its_topic(tmp_path, fresh_pg_url):
    state = open_state(tmp_path, fresh_pg_url)
    other = sa.create_engine(fresh_pg_url)  # "another process": its own connection, plain SQL

    async def scenario():
        feed: ChangeFeed = state.changes
        heard: list[str] = []

        async def on(topic):
            heard.append(topic)

        feed.on("tenancy", lambda: on("tenancy"))
        feed.on("functions", lambda: on("functions"))
        await feed.start()
        try:
            assert await feed.poll() == []
            with other.begin() as conn:
                conn.exec_driver_sql("INSERT INTO tenants (name, created_at, weight) VALUES ('acme', 1, 1)")
            assert await feed.poll() == ["tenancy"] and heard == ["tenancy"]
            assert await feed.poll() == []  # nothing new: nothing heard again
            with other.begin() as conn:
                conn.exec_driver_sql("UPDATE tenants SET weight = 2")
                conn.exec_driver_sql("INSERT INTO functions (name, created_at, updated_at, latest_version) "
                                     "VALUES ('f', now(), now(), 1)")
            assert await feed.poll() == ["functions", "tenancy"]
        finally:
            await feed.stop()

    try:
        asyncio.run(scenario())
    finally:
        other.dispose()
        state.close()


def add_tenant(state, name="acme"):
    """A change as another process would make it."""
    with state.store.engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO tenants (name, created_at, weight) VALUES ('{name}', 1, 1)")


def run_feed(state, listener, *, polls, change_after_start=False):
    """Start the state's feed with `listener` on "tenancy", poll `polls` times, stop; close the state."""

    async def scenario():
        state.changes.on("tenancy", listener)
        await state.changes.start()
        if change_after_start:
            add_tenant(state)
        for _ in range(polls):
            await state.changes.poll()
        await state.changes.stop()

    try:
        asyncio.run(scenario())
    finally:
        state.close()


def test_a_listener_that_fails_is_tried_again_at_the_next_poll(tmp_path, fresh_pg_url):
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")

    run_feed(open_state(tmp_path, fresh_pg_url), flaky, polls=3, change_after_start=True)
    assert len(calls) == 2


def test_a_change_made_while_a_process_starts_is_followed_once_its_feed_runs(tmp_path, fresh_pg_url):
    state = open_state(tmp_path, fresh_pg_url)  # the baseline is taken here...
    add_tenant(state)  # ...another process changes something meanwhile, and the feed starts later
    heard = []

    async def on():
        heard.append("tenancy")

    run_feed(state, on, polls=1)
    assert heard == ["tenancy"]
