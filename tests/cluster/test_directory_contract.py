"""The SchedulerDirectory contract (which scheduler processes are alive, where they listen, the
load they report), against PostgreSQL and the in-memory fake."""

from mist.cluster.directory import SchedulerRecord


def test_a_scheduler_is_live_with_its_address_and_rates_until_it_stops_reporting(cluster):
    d = cluster.directory
    d.report("s1", "http://10.0.0.1:7070", {0: 12.5, 1 << 63: 3.0}, hot={"acme/resize": 9.25}, version=7)
    d.report("s2", "http://10.0.0.2:7070", {})
    assert d.live(0.5) == [SchedulerRecord("s1", "http://10.0.0.1:7070", {0: 12.5, 1 << 63: 3.0},
                                           {"acme/resize": 9.25}, 7),
                           SchedulerRecord("s2", "http://10.0.0.2:7070", {})]
    cluster.elapse(0.3)
    d.report("s2", "http://10.0.0.2:7071", {5: 1.0})  # a report replaces the last one
    cluster.elapse(0.3)
    assert d.live(0.5) == [SchedulerRecord("s2", "http://10.0.0.2:7071", {5: 1.0})]


def test_a_scheduler_that_leaves_is_gone_at_once(cluster):
    d = cluster.directory
    d.report("s1", "http://a", {})
    d.report("s2", "http://b", {})
    d.leave("s1")
    assert [r.holder for r in d.live(10)] == ["s2"]


def test_a_database_created_before_hot_rates_were_reported_gets_their_columns_at_connect(pg_url, pg_engine):
    from mist.cluster.directory import PgSchedulerDirectory
    from mist.cluster.pg import connect

    with pg_engine.connect() as conn:
        conn.exec_driver_sql("TRUNCATE cluster_schedulers")
        conn.exec_driver_sql("ALTER TABLE cluster_schedulers DROP COLUMN hot, DROP COLUMN version")
    engine = connect(pg_url)  # as a new mist version starting on that database
    try:
        d = PgSchedulerDirectory(engine=engine)
        d.report("s1", "http://a", {0: 1.0}, hot={"f": 1.0}, version=3)
        assert d.live(10) == [SchedulerRecord("s1", "http://a", {0: 1.0}, {"f": 1.0}, 3)]
    finally:
        engine.dispose()
