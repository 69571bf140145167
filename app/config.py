"""Settings from the environment (prefix CRISIS_ for most; DATABASE_URL and PORT as is)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Local folder for the SQLite file and demo keys")
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "CRISIS_DATABASE_URL"))
    max_body_bytes: int = 1024 * 1024
    max_import_body_bytes: int = 20 * 1024 * 1024
    max_page_size: int = 500
    default_page_size: int = 50
    max_request_lines: int = 1000
    planning_horizon_days: float = 14.0
    embedded_worker: str = Field(default="auto", description="auto (SQLite: child worker process) | on | off")
    log_level: str = "INFO"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crisis-supply.db').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
