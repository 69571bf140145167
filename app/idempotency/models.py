"""Stored answers for Idempotency-Key retries (docs/reliability.md)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models_common import in_list, ts_field

STATES: tuple[str, ...] = ("processing", "completed")


class IdempotencyKey(SQLModel, table=True):
    """One client key per API key: a reservation while the first request runs, then its answer.

    The unique (api_key_id, key) pair is what makes exactly one of several concurrent requests win,
    across processes: the reservation is inserted and committed before the request runs.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("api_key_id", "key"),
        CheckConstraint(in_list("state", STATES), name="state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Cascade: deleting an API key (never done by the API, but by hand) takes its stored answers along.
    # No index of its own: the unique (api_key_id, key) constraint leads with it.
    api_key_id: int = Field(sa_column=Column(Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False))
    key: str = Field(max_length=255)
    fingerprint: str = Field(max_length=64, description="SHA-256 of method, path, query and body")
    state: str = Field(default="processing", max_length=16)
    created_at: datetime = ts_field(index=True)
    # Heartbeat of the request holding the reservation; a row without one for a while is abandoned.
    locked_at: datetime = ts_field()
    status_code: int | None = None
    response_headers: list[list[str]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    response_body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
