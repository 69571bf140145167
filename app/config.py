"""Settings from the environment (prefix CRISIS_ for most; DATABASE_URL and PORT as is)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Local folder for the SQLite file and demo keys")
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "CRISIS_DATABASE_URL"))
    max_body_bytes: int = 1024 * 1024
    max_import_body_bytes: int = 20 * 1024 * 1024
    planning_horizon_days: float = 14.0
    days_of_supply_threshold: float = 7.0
    embedded_worker: str = Field(default="auto", description="auto (SQLite: child worker process) | on | off")
    log_level: str = "INFO"
    # Operations (docs/operations.md): CORS stays off unless origins are listed (comma-separated);
    # /metrics is public unless a token is set, then it needs `Authorization: Bearer <token>`.
    cors_origins: str = Field(default="", description="Comma-separated origins allowed by CORS; empty = CORS off")
    metrics_token: SecretStr | None = Field(default=None, description="Bearer token required by /metrics when set")
    # Dashboard (docs/dashboard.md): signs the session cookie. Unset: generated into <data dir>/session-secret.
    session_secret: SecretStr | None = Field(default=None, description="Signs dashboard session cookies")
    # Reliability (docs/reliability.md). Rate limits are per API key and per API process; 0 turns one off.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1, description="How long an Idempotency-Key is kept")
    idempotency_stale_seconds: float = Field(
        default=60.0, gt=0, description="A reservation without a heartbeat for this long is abandoned"
    )
    rate_limit_writes_per_minute: int = Field(default=600, ge=0, description="POST/PUT/PATCH/DELETE per key")
    rate_limit_reads_per_minute: int = Field(default=6000, ge=0, description="GET/HEAD per key (polling)")
    auth_failures_per_minute: int = Field(default=20, ge=0, description="401s per client address before 429")
    # Shipment polls answered 304 from memory (app/shipments/poll_cache.py): how often each API process reads
    # the change counters, and how old its last good read may be before it stops answering from memory.
    poll_cache_refresh_seconds: float = Field(
        default=0.05, ge=0, le=10, description="Change-counter read interval of the shipment poll cache; 0 = off"
    )
    poll_cache_max_staleness_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Polls take the full route when the last counter read is older"
    )
    poll_cache_max_entries: int = Field(default=100_000, ge=0, description="(key, shipment) pairs remembered")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crisis-supply.db').as_posix()}"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
