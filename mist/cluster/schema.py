"""The cluster's coordination tables (SQLAlchemy Core, PostgreSQL only), on their own MetaData.

Every time in these tables is stamped by the database (`now()`), never by a client: lease
expiry and heartbeat age are measured on one clock, whatever the holders' clocks say.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)

# Every new grant of any lease takes the next number: epochs are comparable across leases.
lease_epochs = sa.Sequence("cluster_lease_epochs", metadata=metadata)

leases = sa.Table(
    "cluster_leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # e.g. "shard/0007"
    sa.Column("holder", sa.String(200), nullable=False),  # the last holder (unique per process run)
    sa.Column("epoch", sa.BigInteger, nullable=False),  # from lease_epochs on every new holding
    sa.Column("acquired_at", TS, nullable=False),  # when this epoch was granted
    sa.Column("expires_at", TS, nullable=False),  # live while expires_at > now(); release sets it to now()
)

workers = sa.Table(
    "cluster_workers",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("address", sa.String(300), nullable=False),  # where schedulers send orders (host:port)
    sa.Column("incarnation", sa.BigInteger, nullable=False),  # +1 on every registration
    sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("capacity", sa.JSON, nullable=False),  # Capacity: memory_mb, cpu_millis, slots
    sa.Column("warm", sa.JSON, nullable=False),  # Warm: code shas, layers, zygotes
    sa.Column("load", sa.JSON, nullable=False),  # Load at the last heartbeat
    sa.Column("instances", sa.JSON, nullable=False),  # [[InstanceReport fields in order]] at the last heartbeat (lists: half the size of objects)
    sa.Column("registered_at", TS, nullable=False),
    sa.Column("heartbeat_at", TS, nullable=False),
)

shard_maps = sa.Table(
    "cluster_shard_maps",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),  # one map per sharded service ("scheduler")
    sa.Column("version", sa.BigInteger, nullable=False),  # +1 on every change (compare-and-set)
    sa.Column("body", sa.JSON, nullable=False),  # the map as mist.core.sharding encodes it
    sa.Column("updated_at", TS, nullable=False),
)

schedulers = sa.Table(
    "cluster_schedulers",
    metadata,
    sa.Column("holder", sa.String(200), primary_key=True),  # the scheduler process (host:pid:random)
    sa.Column("address", sa.String(300), nullable=False),  # its cluster API (forwarded invocations)
    sa.Column("rates", sa.JSON, nullable=False),  # {shard start: requests/s} it placed since its last report
    sa.Column("hot", sa.JSON, nullable=False, server_default="{}"),  # {function: requests/s}: each shard's busiest, <= 64
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),  # the shard map version it follows
    sa.Column("reported_at", TS, nullable=False),  # live while reported_at > now() - ttl
)

# Columns added since the tables were first created: added to an existing database at connect.
UPGRADES = (
    "ALTER TABLE cluster_schedulers ADD COLUMN IF NOT EXISTS hot json NOT NULL DEFAULT '{}'",
    "ALTER TABLE cluster_schedulers ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0",
)
