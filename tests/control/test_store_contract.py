"""Every FunctionStore/RecordStore passes these: SQLite, PostgreSQL and the in-memory fake
(the `store` fixture, tests/control/conftest.py). The event queue's: test_event_store_contract.py."""

import threading
from datetime import datetime, timezone

from mist.control.sqlstore import SqlStore
from mist.control.store import NewVersion
from mist.models import InvocationRecord, LogRecord

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=timezone.utc)


def new(name="hello", sha="a" * 64, **kw):
    base = dict(name=name, handler="main.handler", memory_mb=128, timeout_s=30.0, concurrency=1, env={},
                code_sha256=sha, code_size=10, layer_sha256=None)
    base.update(kw)
    return NewVersion(**base)


def record(i, function="hello", started=1000.0):
    return InvocationRecord(
        id=f"inv-{i}", function=function, version=1, trigger="api", status="succeeded", error_type=None,
        error_message=None, cold_start=i == 0, init_ms=1.0, duration_ms=2.5, billed_ms=3, memory_mb=128,
        max_memory_used_mb=20, started_at=started + i, ended_at=started + i + 0.01,
    )


def test_instance_limits_are_kept_with_the_version(store):
    store.create_version(new(min_instances=2, max_instances=8), NOW)
    got = store.get_versions("hello", 1)[0]
    assert (got.min_instances, got.max_instances) == (2, 8)
    assert store.get_function("hello").latest.max_instances == 8


def test_async_invocation_config_is_kept_with_the_version(store):
    store.create_version(new(), NOW)
    store.create_version(new(retries=0, max_event_age_s=60, on_success="queue:done", on_failure="function:x"), NOW)
    v1, v2 = store.get_versions("hello", 1)[0], store.get_function("hello").latest
    assert (v1.retries, v1.max_event_age_s, v1.on_success, v1.on_failure) == (2, 21600, None, None)
    assert (v2.retries, v2.max_event_age_s, v2.on_success, v2.on_failure) == (0, 60, "queue:done", "function:x")


def test_the_network_policy_is_kept_with_the_version(store):
    store.create_version(new(), NOW)
    store.create_version(new(network=("203.0.113.0/24:443", "pypi.org")), NOW)
    assert store.get_versions("hello", 1)[0].network == ()
    assert store.get_function("hello").latest.network == ("203.0.113.0/24:443", "pypi.org")
    assert store.get_function("hello").latest.to_json()["network"] == {"egress": ["203.0.113.0/24:443", "pypi.org"]}


def test_versions_are_numbered_from_one_and_name_resolves_to_newest(store):
    v1 = store.create_version(new(env={"A": "1"}), NOW)
    v2 = store.create_version(new(memory_mb=256), NOW)
    assert (v1.version, v2.version) == (1, 2)
    summary = store.get_function("hello")
    assert summary.latest.version == 2 and summary.latest.memory_mb == 256
    assert [v.version for v in store.get_versions("hello")] == [2, 1]
    assert store.get_versions("hello", 1)[0].env == {"A": "1"}
    assert store.get_versions("hello", 9) == []
    assert store.get_function("nope") is None


def test_concurrent_deploys_of_one_name_each_get_their_own_version(store):
    made = []
    def deploy():
        made.append(store.create_version(new(), NOW).version)
    threads = [threading.Thread(target=deploy) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == list(range(1, 9))
    assert store.get_function("hello").latest.version == 8


def test_delete_forgets_versions_but_records_stay(store):
    store.create_version(new(sha="b" * 64), NOW)
    store.create_version(new(name="other"), NOW)
    store.add_invocations([(record(0), [])])
    assert store.delete_function("hello") is True
    assert store.delete_function("hello") is False
    assert store.get_function("hello") is None and store.get_versions("hello") == []
    assert [f.name for f in store.list_functions()] == ["other"]
    assert store.code_in_use() == {"a" * 64}
    assert store.get_invocation("inv-0") is not None


def test_records_are_idempotent_by_id_and_keep_their_logs(store):
    logs = [LogRecord("inv-0", "hello", 1, 1000.1, "stdout", "hi"), LogRecord("inv-0", "hello", 1, 1000.2, "stderr", "oops")]
    store.add_invocations([(record(0), logs)])
    store.add_invocations([(record(0), logs)])  # a retry of the same batch
    rec, got = store.get_invocation("inv-0")
    assert rec == record(0)
    assert [(l.stream, l.text) for l in got] == [("stdout", "hi"), ("stderr", "oops")]
    assert len(store.list_logs("hello")) == 2


def test_a_large_batch_with_a_retried_part_is_stored_whole_and_once_with_logs_in_order(store):
    def entry(i):
        return record(i), [LogRecord(f"inv-{i}", "hello", 1, 1000 + i, "stdout", f"line {i}.{n}") for n in range(3)]

    store.add_invocations([entry(i) for i in range(300)])  # several statements of different sizes
    store.add_invocations([entry(i) for i in range(250, 601)])  # 50 already stored, 301 new
    assert len(store.list_invocations("hello", 1000)) == 601
    assert store.get_invocation("inv-600")[0] == record(600)
    lines = store.list_logs("hello", limit=10_000)
    assert [l.text for l in lines] == [f"line {i}.{n}" for i in range(601) for n in range(3)]


def test_lists_are_newest_first_and_logs_oldest_first_with_limit(store):
    batch = []
    for i in range(5):
        batch.append((record(i), [LogRecord(f"inv-{i}", "hello", 1, 1000 + i, "stdout", f"line {i}")]))
    store.add_invocations(batch)
    assert [r.id for r in store.list_invocations("hello", 3)] == ["inv-4", "inv-3", "inv-2"]
    assert [l.text for l in store.list_logs("hello", limit=2)] == ["line 3", "line 4"]
    assert [l.text for l in store.list_logs("hello", invocation_id="inv-1")] == ["line 1"]
    assert store.list_invocations("other", 10) == []


def test_a_data_dir_from_before_new_columns_is_upgraded_and_keeps_its_functions(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    SqlStore(f"sqlite:///{db}").close()
    SqlStore(f"sqlite:///{db}").create_version(new(), NOW)
    con = sqlite3.connect(db)  # what a data dir made before min/max instances looked like
    con.execute("ALTER TABLE function_versions DROP COLUMN min_instances")
    con.execute("ALTER TABLE function_versions DROP COLUMN max_instances")
    con.commit()
    con.close()
    upgraded = SqlStore(f"sqlite:///{db}")
    got = upgraded.get_function("hello").latest
    assert (got.version, got.min_instances, got.max_instances) == (1, 0, None)
    assert upgraded.create_version(new(min_instances=1), NOW).version == 2
    upgraded.close()
