"""Storing a solved plan (called by the worker, in the transaction that marks the run succeeded).

This is on the trigger-to-plan-ready path: a state-size plan has ~17,000 lines. So the lookups are
a few column selects (on PostgreSQL one `= ANY(array)` parameter instead of thousands of `IN` bind
parameters) and the lines go in with one `COPY` on PostgreSQL (psycopg 3), which measured ~6×
faster than the pipelined executemany of an ORM bulk insert. Other backends (SQLite) keep a Core
executemany. Either way the lines are written in the caller's transaction: nobody sees a plan
without its lines.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import Integer, any_, bindparam, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from app.allocation.models import AllocationRun, Plan, PlanLine
from app.audit import service as audit
from app.inventory.models import InventoryLot
from app.pledges.models import Pledge
from app.principal import SYSTEM, Principal
from app.requests.models import RequestLine, SupplyRequest

PLAN_AUDIT_EXCLUDE = {"demands"}  # per-demand results can be thousands of rows; GET …/plan serves them
# SQLite allows 32,766 bind parameters per statement: id lists are looked up in chunks below that.
SQLITE_IN_CHUNK = 10_000
LINE_COLUMNS = (
    "plan_id",
    "source_ref",
    "lot_id",
    "pledge_id",
    "request_line_id",
    "item_id",
    "origin_site_id",
    "destination_site_id",
    "quantity",
    "distance_km",
    "cost",
    "manual",
)


def parse_ref(ref: str, prefix: str) -> int | None:
    """`lot-17` with prefix `lot` → 17; anything else → None."""
    head, _, tail = ref.partition("-")
    return int(tail) if head == prefix and tail.isdigit() else None


def _id_filters(conn: Connection, column: Any, ids: Collection[int]) -> Iterator[Any]:
    """WHERE clauses that together select `column IN ids`: one array parameter on PostgreSQL."""
    if conn.dialect.name == "postgresql":
        yield column == any_(bindparam("ids", sorted(ids), type_=ARRAY(Integer)))
        return
    ordered = sorted(ids)
    for start in range(0, len(ordered), SQLITE_IN_CHUNK):
        yield column.in_(ordered[start : start + SQLITE_IN_CHUNK])


def _rows_by_id(session: Session, stmt: Any, column: Any, ids: Collection[int]) -> dict[int, tuple[Any, ...]]:
    """id → the other selected columns, for the rows whose `column` is in `ids`."""
    if not ids:
        return {}
    conn = session.connection()
    return {
        row[0]: tuple(row[1:]) for where in _id_filters(conn, column, ids) for row in session.exec(stmt.where(where))
    }


def _insert_lines(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Rows in LINE_COLUMNS order."""
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        raw = conn.connection.driver_connection  # psycopg 3, inside the session's transaction
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(f"COPY plan_lines ({', '.join(LINE_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    # render_nulls: the ORM otherwise leaves out None columns (lot_id or pledge_id), so rows of lots and
    # pledges have different column sets and every switch between them starts a new batch.
    values = [dict(zip(LINE_COLUMNS, row, strict=True)) for row in rows]
    session.execute(insert(PlanLine).execution_options(render_nulls=True), values)


def create_plan(
    session: Session,
    *,
    run: AllocationRun,
    plan: dict[str, Any],
    baseline_kpis: dict[str, Any] | None,
    actor: Principal = SYSTEM,
) -> Plan:
    """Store a Plan JSON v1 dict as a proposed plan with one line per allocation (in the caller's
    transaction; never commits)."""
    allocations = [a for a in plan.get("allocations", []) if int(a["quantity"]) > 0]
    # A few hundred sources serve thousands of allocations: parse each source id once.
    sources = {ref: (parse_ref(ref, "lot"), parse_ref(ref, "pledge")) for ref in {a["source"] for a in allocations}}
    line_of = [parse_ref(a["demand"], "line") for a in allocations]
    lots = _rows_by_id(
        session,
        select(InventoryLot.id, InventoryLot.site_id, InventoryLot.item_id),
        col(InventoryLot.id),
        {lot for lot, _ in sources.values() if lot is not None},
    )
    offers = _rows_by_id(
        session,
        select(Pledge.id, Pledge.site_id, Pledge.item_id),
        col(Pledge.id),
        {pledge for _, pledge in sources.values() if pledge is not None},
    )
    destinations = _rows_by_id(
        session,
        select(RequestLine.id, SupplyRequest.site_id).join(
            SupplyRequest, col(SupplyRequest.id) == col(RequestLine.request_id)
        ),
        col(RequestLine.id),
        {line for line in line_of if line is not None},
    )

    row = Plan(
        run_id=run.id,  # type: ignore[arg-type]
        solver_status=plan["status"],
        demands=list(plan.get("demands", [])),
        kpis=dict(plan.get("kpis", {})),
        baseline_kpis=baseline_kpis,
    )
    session.add(row)
    session.flush()
    rows: list[tuple[Any, ...]] = []
    for a, line_id in zip(allocations, line_of, strict=True):
        lot_id, pledge_id = sources[a["source"]]
        origin = lots.get(lot_id) if lot_id is not None else offers.get(pledge_id) if pledge_id is not None else None
        destination = destinations.get(line_id) if line_id is not None else None
        if origin is None or destination is None:
            raise ValueError(f"plan allocation {a['source']} → {a['demand']} names no known lot, pledge or line")
        rows.append(
            (
                row.id,
                a["source"],
                lot_id,
                pledge_id,
                line_id,
                origin[1],  # item (a substitute may ship instead of the requested one)
                origin[0],
                destination[0],
                int(a["quantity"]),
                float(a.get("distance_km") or 0.0),
                float(a.get("cost") or 0.0),
                False,
            )
        )
    if rows:
        _insert_lines(session, rows)
    after = audit.snapshot(row, exclude=PLAN_AUDIT_EXCLUDE) | {"line_count": len(rows)}
    audit.record(session, actor=actor, action="plan.create", obj=row, before=None, after=after)
    return row
