"""ChangeFeed: how each `mist up --db` process learns that another one changed shared state.

Every process keeps functions, API keys and secrets in memory (the request path reads no
database). In a cluster, PostgreSQL triggers (statement level, installed at start) bump a
revision per topic in `state_revisions`, in the same transaction as the change itself:

    functions, function_versions   -> "functions"   (FunctionService.follow)
    tenants, api_keys              -> "tenancy"     (Tenancy.refresh)
    function_secrets               -> "secrets"     (SecretService.follow)
    triggers                       -> "triggers"    (TriggerManager.follow)
    tenant_billing                 -> "billing"     (Meter.follow: plans and spend caps)

Each process reads that table (a handful of rows) every `poll_s` (1 s) and runs the listeners of
every topic whose revision moved: a change made through one process is served by every other
within about `poll_s` plus the reload. Polling rather than LISTEN/NOTIFY: a notification sent
while a listener's connection is down is lost, a revision is not; and one SELECT a second per
process costs PostgreSQL nothing. A process also sees its own changes come back: the listeners
compare with what they hold and do nothing when it is already current.

    feed = ChangeFeed(engine)
    feed.on("tenancy", tenancy.refresh)
    await feed.start()          # the revisions now (or at feed.mark()) are the baseline
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import sqlalchemy as sa

log = logging.getLogger(__name__)

metadata = sa.MetaData()
revisions = sa.Table(
    "state_revisions",
    metadata,
    sa.Column("topic", sa.String(32), primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
)

TOPICS = {  # table -> topic
    "functions": "functions",
    "function_versions": "functions",
    "tenants": "tenancy",
    "api_keys": "tenancy",
    "function_secrets": "secrets",
    "triggers": "triggers",
    "tenant_billing": "billing",
}

_BUMP = """
CREATE OR REPLACE FUNCTION mist_bump_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO state_revisions (topic, revision) VALUES (TG_ARGV[0], 1)
  ON CONFLICT (topic) DO UPDATE SET revision = state_revisions.revision + 1;
  RETURN NULL;
END $$
"""


def install(conn: sa.Connection) -> None:
    """Create `state_revisions` and the triggers that bump it (PostgreSQL; inside the schema
    transaction, mist/control/sqlstore.schema_transaction)."""
    metadata.create_all(conn)
    conn.exec_driver_sql(_BUMP)
    for table, topic in TOPICS.items():
        conn.exec_driver_sql(
            f"CREATE OR REPLACE TRIGGER mist_changes_{table} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION mist_bump_revision('{topic}')"
        )


def moved(before: Mapping[str, int], now: Mapping[str, int]) -> list[str]:
    """The topics whose revision differs between two readings (a topic appearing counts; one
    gone, which only a wiped table makes, counts too), sorted."""
    return sorted(t for t in set(before) | set(now) if before.get(t) != now.get(t))


Listener = Callable[[], Awaitable[object]]


class ChangeFeed:
    def __init__(self, engine: sa.Engine, *, poll_s: float = 1.0) -> None:
        self._engine = engine
        self.poll_s = poll_s
        self._listeners: dict[str, list[Listener]] = {}
        self._seen: dict[str, int] = {}
        self._marked = False
        self._task: asyncio.Task[None] | None = None
        self.changes = 0  # topics seen moving (statistics)

    def on(self, topic: str, listener: Listener) -> None:
        if topic not in TOPICS.values():
            raise ValueError(f"no topic {topic!r}; topics: {', '.join(sorted(set(TOPICS.values())))}")
        self._listeners.setdefault(topic, []).append(listener)

    def _read(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return {r.topic: r.revision for r in conn.execute(sa.select(revisions))}

    def mark(self) -> None:
        """Take the revisions now as the baseline: what changes after this is followed, even if
        the listeners are registered and the feed started later (a start takes seconds)."""
        self._seen = self._read()
        self._marked = True

    async def start(self) -> None:
        if not self._marked:
            self._seen = await asyncio.to_thread(self._read)
        self._task = asyncio.create_task(self._loop(), name="change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poll(self) -> list[str]:
        """Read the revisions once and run the listeners of the topics that moved."""
        now = await asyncio.to_thread(self._read)
        topics = moved(self._seen, now)
        for topic in topics:
            self.changes += 1
            followed = True
            for listener in self._listeners.get(topic, []):
                try:
                    await listener()
                except Exception:  # noqa: BLE001 - one failing listener must not stop the others
                    followed = False
                    log.exception("could not follow a change of %s made by another process", topic)
            if not followed:  # the topic still counts as moved at the next poll: tried again
                continue
            if topic in now:
                self._seen[topic] = now[topic]
            else:
                self._seen.pop(topic, None)
        return topics

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except Exception:  # noqa: BLE001 - the database is away: try again next time
                log.warning("could not read the cluster's state revisions; trying again in %.1f s", self.poll_s,
                            exc_info=True)
