"""The database side of the ledger state machine (tests/test_ledger_state_machine.py): a fast engine,
an in-thread HTTP client, the static world (organisations, sites, items, keys), the per-example reset,
and the reads the invariants compare with the model."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from app.db import make_engine, transaction, utcnow
from app.inventory import service as inventory
from app.items.models import Item, ItemSubstitute
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site
from tests.factories import Factory
from tests.ledger_model import DYNAMIC_TABLES, WRITTEN_TABLES, Model

XY = {
    "depot1": (40.70, -74.00),
    "depot2": (40.65, -73.95),
    "dock1": (40.80, -73.95),
    "dock2": (40.60, -74.10),
    "donor": (40.75, -73.90),
}
SITE_KINDS = {"depot1": "depot", "depot2": "depot", "dock1": "hospital_dock", "dock2": "hospital_dock"}
SITE_KINDS["donor"] = "donor_site"
SITE_OWNERS = {"depot1": "operator", "depot2": "operator", "dock1": "h1", "dock2": "h2", "donor": "donor"}


def fast_engine(url: Any) -> Engine:
    """A second engine on the test database whose commits do not wait for the disk: durability is not
    what the state machine tests, and fsyncs would dominate its run time."""
    engine = make_engine(url.render_as_string(hide_password=False))

    @event.listens_for(engine, "connect")
    def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF" if engine.dialect.name == "sqlite" else "SET synchronous_commit TO off")
        cur.close()

    return engine


class Api:
    """HTTP to the ASGI app through httpx on one event loop of its own thread: the same requests,
    routers, middleware and one transaction per request as TestClient, without its portal per call.
    (Its own thread, so a loop left registered in the test's thread by another test cannot collide.)"""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ledger-api-loop", daemon=True)
        self._thread.start()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self._run(self.client.request(method, url, **kw))  # type: ignore[no-any-return]

    def close(self) -> None:
        self._run(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class World:
    orgs: dict[str, int]  # operator, h1, h2, donor
    sites: dict[str, int]  # depot1, depot2, dock1 (h1), dock2 (h2), donor
    site_names: dict[int, str]
    items: dict[str, int]  # N95, KN95 (may fill N95), GLOVES
    keys: dict[str, dict[str, str]]  # logistics, h1, h2 (requesters): request headers

    def at(self, site: str) -> dict[str, float]:
        lat, lon = XY[site]
        return {"lat": lat, "lon": lon}


def static_world(engine: Engine, factory: Factory) -> World:
    orgs = {"operator": factory.org(kind="depot_operator").id, "h1": factory.org().id}
    orgs |= {"h2": factory.org(region="south").id, "donor": factory.org(kind="donor").id}
    with transaction(engine) as s:
        sites = {
            n: Site(organization_id=orgs[SITE_OWNERS[n]], name=n, kind=SITE_KINDS[n], lat=lat, lon=lon)
            for n, (lat, lon) in XY.items()
        }
        items = {sku: Item(sku=sku, name=sku, category="ppe") for sku in ("N95", "KN95", "GLOVES")}
        s.add_all([*sites.values(), *items.values()])
        s.flush()
        s.add(ItemSubstitute(item_id=items["N95"].id, substitute_item_id=items["KN95"].id, penalty=0.3))
        site_ids = {n: x.id or 0 for n, x in sites.items()}
        item_ids = {n: x.id or 0 for n, x in items.items()}
    keys = {"logistics": factory.actor("logistics").headers}
    keys |= {org: factory.actor("requester", organization_id=orgs[org]).headers for org in ("h1", "h2")}
    return World(orgs, site_ids, {v: k for k, v in site_ids.items()}, item_ids, keys)


def fresh_example(
    engine: Engine, w: World, m: Model, *, n95: int, gloves: int, kn95: int, lot: int, pledge: int
) -> None:
    """Empty what examples write, then two requests (two lines each), a confirmed N95 pledge, a pledged
    GLOVES one and (when `lot`) an N95 lot received through the ledger — recorded in the model too."""
    with transaction(engine) as s:
        for table in DYNAMIC_TABLES:
            s.execute(text(f'DELETE FROM "{table}"'))
        s.execute(text("UPDATE change_counters SET value = 0"))
        now = utcnow()
        for org, site, lines in (
            ("h1", "dock1", (("N95", n95, "critical"), ("GLOVES", gloves, "routine"))),
            ("h2", "dock2", (("N95", n95 // 2 + 1, "high"), ("KN95", kn95, "routine"))),
        ):
            request = SupplyRequest(organization_id=w.orgs[org], site_id=w.sites[site], created_at=now)
            s.add(request)
            s.flush()
            m.requests[request.id or 0] = org
            rows = [
                RequestLine(request_id=request.id, item_id=w.items[sku], quantity=q, priority=p) for sku, q, p in lines
            ]
            s.add_all(rows)
            s.flush()
            for row, (sku, qty, _) in zip(rows, lines, strict=True):
                m.add_line(row.id or 0, request.id or 0, sku, qty, site, org)
        for sku, qty, status in (("N95", pledge, "confirmed"), ("GLOVES", 10, "pledged")):
            row = Pledge(
                organization_id=w.orgs["donor"],
                item_id=w.items[sku],
                site_id=w.sites["donor"],
                quantity=qty,
                status=status,
            )
            s.add(row)
            s.flush()
            m.add_pledge(row.id or 0, sku, qty, status)
        if lot:
            received, _ = inventory.receive(
                s, actor=SYSTEM, site_id=w.sites["depot1"], item_id=w.items["N95"], quantity=lot
            )
            m.receive(received.id or 0, "depot1", "N95", None, lot)


def everything(engine: Engine) -> list[Any]:
    """Every row an operation could write (the append-only audit trail by count and last id)."""
    with engine.connect() as conn:
        rows = [conn.execute(text(f'SELECT * FROM "{t}" ORDER BY 1')).all() for t in WRITTEN_TABLES]
        rows.append(conn.execute(text("SELECT COUNT(*), MAX(id) FROM audit_events")).one())
    return rows


READS = {
    "lots": "SELECT id, on_hand, reserved, version FROM inventory_lots",
    "ledger": "SELECT lot_id, SUM(delta_on_hand), SUM(delta_reserved), COUNT(*) "
    "FROM inventory_movements GROUP BY lot_id",
    "lines": "SELECT id, quantity_reserved, quantity_in_transit, quantity_delivered, status FROM request_lines",
    "requests": "SELECT id, status FROM requests",
    "pledges": "SELECT id, committed, status FROM pledges",
    "shipments": "SELECT id, status FROM shipments",
    "plans": "SELECT run_id, state FROM plans",
}


def balances(engine: Engine) -> dict[str, dict[int, Any]]:
    """What the invariants compare with the model: each read as {id: (the other columns)}."""
    with engine.connect() as conn:
        out = {name: {row[0]: tuple(row[1:]) for row in conn.execute(text(sql))} for name, sql in READS.items()}
    out["ledger"] = {i: tuple(int(v) for v in rest) for i, rest in out["ledger"].items()}
    return out


def plan_lines(engine: Engine, run_id: int) -> list[tuple[int, str, int, int]]:
    """(plan line, source ref, request line, quantity) of a run's stored plan."""
    sql = (
        "SELECT pl.id, pl.source_ref, pl.request_line_id, pl.quantity FROM plan_lines pl "
        "JOIN plans p ON p.id = pl.plan_id WHERE p.run_id = :r"
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), {"r": run_id})]  # type: ignore[misc]


def shipped(engine: Engine, run_id: int) -> list[tuple[int, int, int, tuple[int, int]]]:
    """(shipment, shipment line, plan line, (origin, destination)) created by approving a run's plan."""
    sql = (
        "SELECT sl.shipment_id, sl.id, sl.plan_line_id, s.origin_site_id, s.destination_site_id "
        "FROM shipment_lines sl JOIN shipments s ON s.id = sl.shipment_id "
        "WHERE s.plan_id = (SELECT id FROM plans WHERE run_id = :r)"
    )
    with engine.connect() as conn:
        return [(sid, sl, pl, (o, d)) for sid, sl, pl, o, d in conn.execute(text(sql), {"r": run_id})]
