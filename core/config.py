"""Every Skygate setting, in one validated class.

Settings come from the environment (and an optional `.env` file). Development
runs with no environment at all: an SQLite file under `./data`, no Redis, auth
optional. Production refuses to start on unsafe values, with a message naming
the variable to fix. Nothing else in Skygate reads `os.environ` for its own
settings.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.llm.providers import BASE_SETTINGS, KEY_SETTINGS, PROVIDERS
from database.engine import DEFAULT_DATABASE_URL, normalize_database_url

VERSION = "0.1.0"
MIN_SECRET_BYTES = 32

Environment = Literal["development", "staging", "production"]
# Logged once at start (gunicorn's master, or the embedded server) when auth is off.
OPEN_ACCESS_WARNING = (
    "ADMIN_API_KEY is not set: authentication is OFF. The LLM routes are open to anyone "
    "who can reach this server (as the tenant 'anonymous'), and the admin endpoints are "
    "disabled. Set ADMIN_API_KEY before serving beyond 127.0.0.1."
)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Skygate's configuration. Field names map to upper-case env vars."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    environment: Environment = "development"
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON logs; default: on in staging/production or without a TTY"
    )
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=2, ge=1, le=64)
    shutdown_drain_seconds: float = Field(default=5.0, ge=0, le=120)
    graceful_timeout: int = Field(default=30, ge=1, le=600)
    max_requests: int = Field(default=50000, ge=0)
    max_requests_jitter: int = Field(default=5000, ge=0)
    host: str = "0.0.0.0"  # gunicorn's bind address (make serve, Render); tests use loopback
    forwarded_allow_ips: str = "127.0.0.1"
    forwarded_trusted_hops: int = Field(default=1, ge=0, le=16)

    # -- HTTP parser limits (uvicorn's httptools protocol sets none of its own) ----
    http_max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    http_max_headers: int = Field(default=100, ge=8, le=10_000)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # -- WebSocket limits (core/serving/ws_protocol.py) ----------------------------
    ws_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    ws_ping_interval_seconds: float = Field(default=20.0, ge=0, le=3600)  # 0: no pings
    ws_ping_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)

    database_url: str = DEFAULT_DATABASE_URL
    database_pgbouncer: bool = False
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout: float = Field(default=30, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)

    redis_url: str | None = None
    redis_max_connections: int = Field(default=50, ge=1)
    redis_socket_timeout: float = Field(default=0.5, gt=0, le=30)
    redis_failure_threshold: int = Field(default=3, ge=1)
    redis_retry_seconds: float = Field(default=5.0, gt=0)

    jwt_secret_key: SecretStr | None = None
    encryption_master_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origin_regex: str | None = None

    enable_cache: bool = True
    enable_metrics: bool = True
    rate_limit_per_minute: int = Field(default=60, ge=1)
    rate_limit_per_hour: int = Field(default=1000, ge=1)
    rate_limit_tokens_per_minute: int | None = Field(default=None, ge=1)
    instance_count: int = Field(default=1, ge=1, le=1000)
    auth_cache_seconds: float = Field(default=2.0, gt=0, le=5)
    jwt_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    auth_failures_per_minute: int = Field(default=20, ge=1, le=100_000)

    # -- LLM providers and routing ---------------------------------------------
    # Each provider's key and base URL, named by its entry in `core.llm.providers`
    # (which the validators and `provider_credentials` below read).
    router_config: str | None = None
    openai_api_key: SecretStr | None = None
    openai_api_base: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_api_base: str | None = None
    google_ai_api_key: SecretStr | None = None
    google_ai_api_base: str | None = None
    groq_api_key: SecretStr | None = None
    groq_api_base: str | None = None
    mistral_api_key: SecretStr | None = None
    mistral_api_base: str | None = None
    cohere_api_key: SecretStr | None = None
    cohere_api_base: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_model_fallback: str | None = "gpt-4o"
    openai_temperature: float | None = Field(default=None, ge=0, le=2)
    openai_max_tokens: int | None = Field(default=None, ge=1)
    openai_timeout_seconds: float = Field(default=60, gt=0, le=600)
    llm_cache_ttl: int = Field(default=3600, ge=1)
    stream_heartbeat_seconds: float = Field(default=10, gt=0)
    usage_flush_seconds: float = Field(default=1.0, gt=0)
    # -- background jobs (core.jobs, `python -m worker`) ---------------------------
    # Unset: jobs run in the web process on SQLite (the embedded default, not
    # durable) and in `python -m worker` on PostgreSQL.
    jobs_in_process: bool | None = None
    job_retention_days: int = Field(default=30, ge=1)
    usage_retention_days: int = Field(default=400, ge=1)
    worker_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    # SIGTERM: no new job; running ones get this long to finish (or checkpoint) and
    # are otherwise re-picked after JOB_HEARTBEAT_TIMEOUT_SECONDS by another worker.
    worker_drain_seconds: float = Field(default=25.0, ge=0, le=600)
    # How often a worker beats (Redis key TTL: 3x), and how often /health re-reads.
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0, le=300)
    # pgqueuer's timings: a delivery whose worker stopped beating this long is
    # re-picked, noticed on the next poll (the dequeue timeout bounds the wait).
    job_heartbeat_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    job_dequeue_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Jobs one worker process runs at once (of any type; each type also has its own
    # limit across all workers). Bounds a worker's memory on small plans.
    worker_concurrency: int = Field(default=8, ge=2, le=256)
    # A module whose `register(types, schedules)` adds job types and schedules of
    # its own (web and worker load it alike, so both know the same types).
    job_types_module: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    # The worker serves its Prometheus metrics (job outcomes, durations) here; unset: off.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # -- agents (agents/) -----------------------------------------------------------
    # A YAML file of agents every tenant may run. Unset: none, or, while the offline
    # demo model serves, the bundled examples (agents/examples.yaml).
    agents_config: str | None = None
    # Networks (CIDRs) the HTTP tools may reach although they are private; nothing
    # private, loopback or link-local is reachable otherwise.
    agent_tools_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long a run stays `requires_action` waiting for a client's tool outputs.
    agent_tool_output_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    # -- agent WebSocket clients (/ws/agents, docs/websocket.md) ------------------------
    # A JSON heartbeat frame this often (under load balancers' 60-100 s idle timeouts).
    ws_heartbeat_seconds: float = Field(default=25.0, gt=0, le=300)
    # Open agent sockets per tenant (across workers and instances while Redis is up).
    ws_max_connections_per_tenant: int = Field(default=100, ge=1, le=100_000)
    # Runs one socket may have going at once, and a tenant's runs going at once when a
    # socket starts one (any transport's runs count).
    ws_max_runs_per_connection: int = Field(default=8, ge=1, le=1000)
    ws_max_runs_per_tenant: int = Field(default=50, ge=1, le=100_000)
    # A run started over a socket is cancelled after this long with no subscriber.
    ws_run_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    # A send blocked this long means the client stopped reading: close 1013, it resumes.
    ws_send_stall_seconds: float = Field(default=10.0, gt=0, le=600)

    sentry_dsn: SecretStr | None = None
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    # -- OpenTelemetry traces (core/observability/tracing.py) -----------------------
    # On when either endpoint is set (OTLP/HTTP, protobuf): the base URL (spans go to
    # `<base>/v1/traces`) or the traces URL itself. The SDK's other OTEL_* variables
    # (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
    # OTEL_EXPORTER_OTLP_HEADERS/TIMEOUT/COMPRESSION) are read by the SDK itself.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    # Tenants whose prompts and answers go into their spans (`gen_ai.input.messages`,
    # `gen_ai.output.messages`); `*`: every tenant. Empty (the default): nobody's.
    otel_capture_content_tenants: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # -- normalisation -------------------------------------------------------
    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_DATABASE_URL
        return normalize_database_url(value) if isinstance(value, str) else value

    @field_validator(
        "redis_url",
        "cors_origin_regex",
        "router_config",
        *BASE_SETTINGS,
        "openai_model_fallback",
        "openai_temperature",
        "openai_max_tokens",
        "rate_limit_tokens_per_minute",
        "job_types_module",
        "worker_metrics_port",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "jwt_secret_key",
        "admin_api_key",
        "encryption_master_key",
        "sentry_dsn",
        *KEY_SETTINGS,
        "metrics_token",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_peers(cls, value: str) -> str:
        from core.http.forwarding import ForwardedPolicy

        ForwardedPolicy(value, hops=1)  # raises ValueError naming the bad entry
        return value

    @field_validator(
        "cors_origins",
        "agent_tools_allowed_networks",
        "otel_capture_content_tenants",
        mode="before",
    )
    @classmethod
    def _cors_list(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value.strip()):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value.strip() if value is not None else None

    @field_validator("agent_tools_allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        import ipaddress

        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network (CIDR)") from None
        return networks

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins_shape(cls, origins: list[str]) -> list[str]:
        cleaned = []
        for origin in origins:
            origin = origin.rstrip("/")
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"CORS_ORIGINS entry {origin!r} must be a scheme and host, "
                    "like https://app.example.com"
                )
            cleaned.append(origin)
        return cleaned

    @field_validator("cors_origin_regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"CORS_ORIGIN_REGEX is not a valid regex: {exc}") from exc
        return value

    # -- production refusals -------------------------------------------------
    @field_validator("jwt_secret_key")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"JWT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if self.is_sqlite:
            problems.append(
                "DATABASE_URL must point at PostgreSQL in production (SQLite or unset refused)"
            )
        secret = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else ""
        if len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"JWT_SECRET_KEY must be set to at least {MIN_SECRET_BYTES} bytes in production"
            )
        if self.admin_api_key is None:
            problems.append("ADMIN_API_KEY must be set in production")
        if "*" in self.cors_origins:
            problems.append("CORS_ORIGINS must not contain '*' in production")
        if self.debug:
            problems.append("DEBUG must be false in production")
        if self.enable_metrics and self.metrics_token is None and not self.metrics_public:
            problems.append(
                "METRICS_TOKEN must be set in production (scrapers send it as a bearer "
                "token), or METRICS_PUBLIC=true to serve /metrics without one"
            )
        if not self.router_config and not self.provider_credentials():
            problems.append(
                "a provider key (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or ROUTER_CONFIG "
                "must be set in production (the offline demo model is never served there)"
            )
        if problems:
            raise ValueError("refusing to start in production:\n    - " + "\n    - ".join(problems))
        return self

    # -- derived -------------------------------------------------------------
    @property
    def runs_jobs_in_process(self) -> bool:
        """Whether the web process runs jobs itself (always on SQLite, where no
        worker can share the queue)."""
        return self.is_sqlite or bool(self.jobs_in_process)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def auth_enabled(self) -> bool:
        """Auth is off only in development without ADMIN_API_KEY (warned about at start;
        the admin endpoints then refuse). Outside development it is always on."""
        return self.environment != "development" or self.admin_api_key is not None

    @cached_property
    def json_logs(self) -> bool:
        if self.log_json is not None:
            return self.log_json
        import sys

        return self.environment != "development" or not sys.stderr.isatty()

    @property
    def version(self) -> str:
        return VERSION

    def provider_credentials(self) -> dict[str, tuple[str, str | None]]:
        """Provider kind -> (api key, api base override) for each provider with a key,
        in the provider table's order."""
        found: dict[str, tuple[str, str | None]] = {}
        for spec in PROVIDERS.values():
            key: SecretStr | None = getattr(self, spec.key_setting) if spec.key_setting else None
            if key is not None:
                base: str | None = getattr(self, spec.base_setting) if spec.base_setting else None
                found[spec.kind] = (key.get_secret_value(), base)
        return found

    def secret_values(self) -> list[str]:
        """Every configured secret, for log and error redaction."""
        secrets = [
            self.jwt_secret_key,
            self.admin_api_key,
            self.encryption_master_key,
            self.sentry_dsn,
            *(getattr(self, name) for name in KEY_SETTINGS),
            self.metrics_token,
        ]
        values = [s.get_secret_value() for s in secrets if s is not None]
        for url in (self.database_url, self.redis_url or ""):
            password = urlsplit(url).password
            if password:
                values.append(password)
        return [v for v in values if len(v) >= 6]


class ConfigurationError(SystemExit):
    """Raised instead of starting when the environment is invalid or unsafe."""


def load_settings() -> Settings:
    """Settings from the environment, or a `ConfigurationError` whose message names
    each offending variable (no traceback: it is an operator's mistake, not a bug)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(p) for p in error.get("loc", ())).upper()
            message = str(error.get("msg", "")).removeprefix("Value error, ")
            lines.append(f"  {name}: {message}" if name else f"  {message}")
        raise ConfigurationError("Skygate configuration is invalid:\n" + "\n".join(lines)) from None
