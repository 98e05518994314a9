"""The control database's tables (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Columns added later are added to an existing database at start (`SqlStore._add_missing_columns`):
they must be nullable or have a server default.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
FID = sa.String(127)  # a function id: `name` or `tenant/name` (mist.models.qualify)

functions = sa.Table(
    "functions",
    metadata,
    sa.Column("name", FID, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latest_version", sa.Integer, nullable=False),
)

versions = sa.Table(
    "function_versions",
    metadata,
    sa.Column("name", FID, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("handler", sa.String(255), nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("env", sa.Text, nullable=False),
    sa.Column("code_sha256", sa.String(64), nullable=False),
    sa.Column("code_size", sa.BigInteger, nullable=False),
    sa.Column("layer_sha256", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("min_instances", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_instances", sa.Integer),
    sa.Column("retries", sa.Integer, nullable=False, server_default="2"),
    sa.Column("max_event_age_s", sa.Integer, nullable=False, server_default="21600"),
    sa.Column("on_success", sa.String(80)),
    sa.Column("on_failure", sa.String(80)),
    sa.Column("http_auth", sa.String(8), nullable=False, server_default="public"),
    sa.Column("network", sa.Text),  # NULL: none; else the egress rules as a JSON list
    sa.Column("reserved_concurrency", sa.Integer),  # flow control: NULL = no limit
    sa.Column("rate_per_s", sa.Float),
    sa.Column("burst", sa.Integer),
    sa.Column("max_queued", sa.Integer),
)

invocations = sa.Table(
    "invocations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("function", FID, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(255)),
    sa.Column("error_message", sa.Text),
    sa.Column("cold_start", sa.Boolean, nullable=False),
    sa.Column("init_ms", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("billed_ms", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("max_memory_used_mb", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Index("ix_invocations_function_started", "function", "started_at"),
)

log_lines = sa.Table(
    "log_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("invocation_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),  # the line's place in its invocation
    sa.Column("function", FID, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Index("ix_log_lines_function_id", "function", "id"),
    sa.UniqueConstraint("invocation_id", "seq", name="uq_log_lines_invocation_seq"),
)


# -- asynchronous invocations (docs/events.md) ---------------------------------------------------

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("function", FID, nullable=False),
    sa.Column("version", sa.Integer),  # NULL: the newest version at each attempt
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # when the event may be claimed: a retry's time, or a running attempt's lease end; NULL once finished
    sa.Column("due_at", sa.Float),
    sa.Column("owner", sa.String(64)),  # the dispatcher holding the lease
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("function_errors", sa.Integer, nullable=False, server_default="0"),
    sa.Column("condition", sa.String(32)),
    sa.Column("destination", sa.String(80)),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("source_event_id", sa.String(255)),
    # only unfinished events: what claims and the dispatcher's polls look at stays small however
    # many finished events the table keeps
    sa.Index(
        "ix_events_pending", "function", "due_at",
        sqlite_where=sa.text("due_at IS NOT NULL"), postgresql_where=sa.text("due_at IS NOT NULL"),
    ),  # fmt: skip
)

event_attempts = sa.Table(
    "event_attempts",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("outcome", sa.String(16)),  # NULL while running
    sa.Column("error_type", sa.String(255)),
    sa.Column("error_message", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("record_id", sa.String(64)),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("function", FID, primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("invocation_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_idempotency_keys_expires", "expires_at"),
)

messages = sa.Table(
    "queue_messages",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # time-ordered
    sa.Column("queue", sa.String(140), nullable=False),  # a queue id, or "dlq:FUNCTION ID"
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("visible_at", sa.Float, nullable=False),
    sa.Column("receive_count", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_queue_messages_queue_id", "queue", "id"),
)


# -- tenancy (mist/tenancy/, docs/tenancy.md) -------------------------------------------------------

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rate_per_s", sa.Float),
    sa.Column("burst", sa.Integer),
    sa.Column("max_concurrency", sa.Integer),
    sa.Column("max_queued", sa.Integer),
    sa.Column("weight", sa.Integer, nullable=False, server_default="1"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # SHA-256 of the whole key; the key is never stored
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Index("ix_api_keys_tenant", "tenant"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("actor", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(300), nullable=False),
    sa.Column("resource", sa.String(1000), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_audit_log_tenant_ts", "tenant", "ts"),
    sa.Index("ix_audit_log_ts", "ts"),
)


# -- metering (docs/billing.md) ---------------------------------------------------------------------

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # the attempt's record id: never counted twice
    sa.Column("kind", sa.String(16), nullable=False),  # "invocation" | "provisioned"
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("function", FID, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("started_us", sa.BigInteger, nullable=False),  # wall clock, microseconds since the epoch
    sa.Column("ended_us", sa.BigInteger, nullable=False),
    sa.Column("hour", sa.Integer, nullable=False),  # UTC hours since the epoch at started_us
    sa.Column("init_us", sa.BigInteger, nullable=False),
    sa.Column("duration_us", sa.BigInteger, nullable=False),
    sa.Column("billed_ms", sa.BigInteger, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("instances", sa.Integer, nullable=False),
    sa.Column("mb_ms", sa.BigInteger, nullable=False),  # memory_mb x billed_ms x instances
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("cold_start", sa.Boolean, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(255)),
    sa.Index("ix_usage_tenant_started", "tenant", "started_us"),
    sa.Index("ix_usage_started", "started_us"),
)

tenant_billing = sa.Table(
    "tenant_billing",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("plan", sa.String(63)),  # NULL: the default plan
    sa.Column("monthly_spend_cap", sa.String(40)),  # an exact decimal amount; NULL: the plan's cap
    sa.Column("updated_at", sa.Float, nullable=False),
)


# -- secrets (mist/secrets/, docs/secrets.md) -----------------------------------------------------

function_secrets = sa.Table(
    "function_secrets",
    metadata,
    sa.Column("function", FID, primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),  # mist/sealing.py, context "FUNCTION:NAME"; never the value
    sa.Column("updated_at", sa.Float, nullable=False),
)
