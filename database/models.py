"""ORM models. Table and constraint names follow one naming convention so that
Alembic migrations are stable on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UsageRecord(Base):
    """One LLM call however it ended: who, which model, tokens, cost, latency, outcome.

    Written in batches off the request path; summarised by `/api/v1/usage`.
    """

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    request_id: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(64), index=True)
    model_group: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(256))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Numeric(18, 9), default=0)
    latency_ms: Mapped[float] = mapped_column(Numeric(12, 3), default=0)
    cache_status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    # True when the tokens (and so the cost) are the gateway's estimate: the call
    # ended without the provider reporting usage (a cut stream, an abandoned call).
    estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set on the calls an agent run made (`agents.engine`): which agent, which run, which
    # turn (0-based; the finalizing call is the turn after the last).
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    turn: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKey(Base):
    """A tenant's API key. Only a SHA-256 hash and a short display prefix of the
    secret are stored; the secret itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rph_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Numeric(14, 4), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


# A job is active while queued or in progress: at most one active job per tenant
# and dedupe key (the 409 `job_conflict`), enforced by a partial unique index.
ACTIVE_JOB = text("status IN ('queued', 'in_progress')")


class Job(Base):
    """A background job's API state: what was asked, how far it got, how it ended.

    The queue engine (pgqueuer on PostgreSQL) only carries the job's id to a
    worker; everything a client reads lives here, so the engine could be swapped.
    `seq` grows with every change a client can see: it is the SSE event id.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created_at", "tenant", "created_at"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index(
            "uq_jobs_active_dedupe_key",
            "tenant",
            "dedupe_key",
            unique=True,
            postgresql_where=ACTIVE_JOB,
            sqlite_where=ACTIVE_JOB,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[dict[str, object]] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    progress: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    checkpoint: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[object | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    seq: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class WorkerBeat(Base):
    """A worker's last heartbeat, written when Redis (its usual place) is away,
    so `/health` stays truthful about workers either way."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    info: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)


# The current version of an agent is its one row that is not retired.
CURRENT_AGENT = text("retired = false")


class AgentVersion(Base):
    """One version of an agent defined through the admin API. An edit retires the
    current row and adds the next version; a delete retires it. Runs name the
    version they used (and keep the definition they ran with)."""

    __tablename__ = "agent_versions"
    __table_args__ = (
        Index(
            "uq_agent_versions_current",
            "tenant",
            "agent_id",
            unique=True,
            postgresql_where=CURRENT_AGENT,
            sqlite_where=CURRENT_AGENT,
        ),
    )

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, object]] = mapped_column(JSON)
    retired: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


ACTIVE_RUN = text("status IN ('queued', 'in_progress', 'requires_action')")


class AgentRun(Base):
    """An agent run's state: what was asked, with which definition, how it ended.
    Its events (`AgentRunEvent`) carry what happened in between."""

    __tablename__ = "agent_runs"
    __table_args__ = (
        Index("ix_agent_runs_tenant_created_at", "tenant", "created_at"),
        Index(
            "uq_agent_runs_idempotency_key",
            "tenant",
            "idempotency_key",
            unique=True,
        ),
        Index(
            "ix_agent_runs_active", "status", postgresql_where=ACTIVE_RUN, sqlite_where=ACTIVE_RUN
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[int] = mapped_column(Integer)
    agent: Mapped[dict[str, object]] = mapped_column(JSON)  # the definition it ran with
    thread_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(24))
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    mode: Mapped[str] = mapped_column(String(16))  # sync, stream, background, chat
    input: Mapped[list[object]] = mapped_column(JSON)
    limits: Mapped[dict[str, object]] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    usage: Mapped[dict[str, object]] = mapped_column(JSON)
    error: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    required_action: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    tool_outputs: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    cancel_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class AgentRunEvent(Base):
    """A run's events, numbered from 1: what `GET /runs/{id}/events?after=N` replays."""

    __tablename__ = "agent_run_events"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgentThread(Base):
    """A conversation runs continue; its messages are `AgentThreadMessage` rows."""

    __tablename__ = "agent_threads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class AgentThreadMessage(Base):
    __tablename__ = "agent_thread_messages"
    __table_args__ = (Index("ix_agent_thread_messages_thread_id_id", "thread_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    thread_id: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    message: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
