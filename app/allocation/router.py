"""/v1/allocation-runs: trigger (202), read, list, snapshot, cancel, live progress (Server-Sent Events).

Logistics may trigger and cancel runs; admin may read them; every other role gets 403. The plan of
a run (`…/{id}/plan…`) is served by `app.allocation.plans_router`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.allocation import runs_service as service
from app.allocation.runs_schemas import RunCreate, RunPublic, RunStatus
from app.db import transaction
from app.deps import Allow, ListDep, SecuredRoute, SessionDep, etag_for
from app.pagination import PageOut
from app.principal import Principal

router = APIRouter(prefix="/v1/allocation-runs", tags=["allocation runs"], route_class=SecuredRoute)

Reader = Annotated[Principal, Allow("admin", "logistics")]
Writer = Annotated[Principal, Allow("logistics")]

EVENTS_POLL_S = 0.5
EVENTS_KEEPALIVE_S = 15.0


def _out(session: Session, run: Any, response: Response) -> RunPublic:
    out = service.public_run(session, run)
    response.headers["ETag"] = etag_for(out.version)
    return out


@router.post("", status_code=202, response_model=RunPublic)
def create_run(session: SessionDep, principal: Writer, body: RunCreate, response: Response) -> RunPublic:
    """Snapshot the scope's supply and demand and queue a solve; a worker picks it up."""
    run = service.create_run(session, actor=principal, data=body)
    response.headers["Location"] = f"/v1/allocation-runs/{run.id}"
    return _out(session, run, response)


@router.get("", response_model=PageOut[RunPublic])
def list_runs(
    session: SessionDep, principal: Reader, page: ListDep, status: RunStatus | None = None
) -> PageOut[RunPublic]:
    result = service.list_runs(session, principal=principal, limit=page.limit, cursor=page.cursor, status=status)
    plans = service.plan_ids(session, [r.id for r in result.items])
    return PageOut(items=[service.to_public(r, plans.get(r.id)) for r in result.items], next_cursor=result.next_cursor)


@router.get("/{run_id}", response_model=RunPublic)
def get_run(session: SessionDep, principal: Reader, run_id: int, response: Response) -> RunPublic:
    run = service.get_run_summary(session, run_id=run_id)
    if run is None:
        service.get_run(session, principal=principal, run_id=run_id)  # raises the 404
    return _out(session, run, response)


@router.get("/{run_id}/problem", responses={200: {"description": "The run's input snapshot (Problem JSON v1)"}})
def get_problem(session: SessionDep, principal: Reader, run_id: int) -> JSONResponse:
    """The stored snapshot, so the run can be reproduced with `crisis-supply solve`."""
    run = service.get_run(session, principal=principal, run_id=run_id)
    return JSONResponse(run.problem or {})


@router.post("/{run_id}/cancel", response_model=RunPublic, responses={202: {"description": "Cancel requested"}})
def cancel_run(session: SessionDep, principal: Writer, run_id: int, response: Response) -> RunPublic:
    """Queued: cancelled at once (200). Running: cancel requested (202); the worker marks it cancelled."""
    run = service.cancel_run(session, actor=principal, run_id=run_id)
    if run.status == "running":
        response.status_code = 202
    return _out(session, run, response)


def _poll(engine: Engine, run_id: int) -> RunPublic | None:
    # A short transaction per poll: the stream never holds one open between polls.
    with transaction(engine) as session:
        run = service.get_run_summary(session, run_id=run_id)
        return None if run is None else service.public_run(session, run)


def _event(kind: str, run: RunPublic) -> str:
    return f"id: {run.version}\nevent: {kind}\ndata: {json.dumps(run.model_dump(mode='json'))}\n\n"


async def _stream(request: Request, engine: Engine, run_id: int, last_seen: int | None) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    sent_version = last_seen
    quiet_since = time.monotonic()
    while True:
        run = await run_in_threadpool(_poll, engine, run_id)
        if run is None:  # cannot happen today (runs are never deleted); end cleanly anyway
            yield "event: end\ndata: {}\n\n"
            return
        if run.version != sent_version:
            yield _event("progress", run)
            sent_version, quiet_since = run.version, time.monotonic()
        if run.status in service.TERMINAL_STATUSES:
            yield _event("end", run)
            return
        if time.monotonic() - quiet_since >= EVENTS_KEEPALIVE_S:
            yield ": keepalive\n\n"
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        await anyio.sleep(EVENTS_POLL_S)


def _last_event_id(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:  # "loosely": an id we did not issue just means "send the current state"
        return None


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events until the run ends"}},
)
def run_events(
    session: SessionDep,
    principal: Reader,
    run_id: int,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-Sent Events: `event: progress` with the run's JSON whenever it changes (`id:` = the run's
    version), then `event: end` once it has finished. `Last-Event-ID` skips a state already seen."""
    if service.get_run_summary(session, run_id=run_id) is None:
        service.get_run(session, principal=principal, run_id=run_id)  # raises the 404
    return StreamingResponse(
        _stream(request, request.app.state.engine, run_id, _last_event_id(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
