"""A running cluster (two API processes, two workers on one PostgreSQL database) and the helpers the
concurrency tests share: scenario rows under fresh names, concurrent HTTP calls released together,
waiting for runs, ledger and audit reads."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from app.allocation.models import AllocationRun
from app.audit.models import AuditEvent
from app.db import transaction
from app.inventory import service as inventory
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item
from app.organizations.models import Organization
from app.principal import SYSTEM
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site
from tests.conftest import Actor
from tests.procs import Proc, Processes

TERMINAL = ("succeeded", "failed", "cancelled")
# Short heartbeats so a stale threshold of a few seconds never catches a healthy worker.
WORKER_ENV = {"CRISIS_WORKER_HEARTBEAT_S": "0.5", "CRISIS_WORKER_STALE_AFTER_S": "10"}
# The tests measure correctness under load, not the per-key rate limits.
API_ENV = {"CRISIS_RATE_LIMIT_WRITES_PER_MINUTE": "0", "CRISIS_RATE_LIMIT_READS_PER_MINUTE": "0"}


# ---------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    engine: Engine
    procs: Processes
    apis: list[Proc]
    workers: list[Proc]
    logistics: Actor
    admin: Actor
    driver: Actor
    _turn: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, i: int | None = None) -> str:
        """An API base URL: the i-th, or the next one round-robin."""
        if i is None:
            with self._lock:
                self._turn += 1
                i = self._turn
        return self.apis[i % len(self.apis)].base_url

    def start_workers(self, n: int = 2) -> None:
        self.workers = [self.procs.start_worker(env=WORKER_ENV) for _ in range(n)]

    def stop_workers(self) -> None:
        for w in self.workers:
            self.procs.stop(w)
        self.workers = []


# ---------------------------------------------------------------- scenario rows


class Seed:
    """Rows for one test, named with a fresh tag (stock enters through the ledger)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tag = uuid.uuid4().hex[:8]
        self.n = 0

    def _name(self, what: str) -> str:
        self.n += 1
        return f"{what}-{self.tag}-{self.n}"

    def _add(self, row: Any) -> Any:
        with transaction(self.engine) as s:
            s.add(row)
            s.flush()
            return row

    def region(self, i: int) -> str:
        return f"region-{self.tag}-{i}"

    def item(self) -> Item:
        return self._add(Item(sku=self._name("SKU"), name="test item", category="ppe"))

    def depot(self, region: str = "depots") -> Site:
        org = self._add(Organization(name=self._name("operator"), kind="depot_operator", region=region))
        return self._add(Site(organization_id=org.id, name=self._name("depot"), kind="depot", lat=41.0, lon=-74.0))

    def lot(self, depot: Site, item: Item, quantity: int) -> int:
        with transaction(self.engine) as s:
            lot, _ = inventory.receive(s, actor=SYSTEM, site_id=depot.id or 0, item_id=item.id or 0, quantity=quantity)
            return lot.id or 0

    def hospital_line(self, region: str, item: Item, quantity: int, priority: str = "high") -> tuple[int, int]:
        """A hospital in `region` asking for `quantity`; returns (its dock site id, the request line id)."""
        org = self._add(Organization(name=self._name("hospital"), kind="hospital", region=region))
        n = self.n
        site = self._add(
            Site(organization_id=org.id, name=self._name("dock"), kind="hospital_dock", lat=41.0 + n / 1000, lon=-74.1)
        )
        request = self._add(SupplyRequest(organization_id=org.id, site_id=site.id))
        line = self._add(RequestLine(request_id=request.id, item_id=item.id, quantity=quantity, priority=priority))
        return site.id, line.id


# ---------------------------------------------------------------- HTTP and database helpers


def at_once(calls: list[Callable[[httpx.Client], httpx.Response]]) -> list[httpx.Response]:
    """Each call in its own thread with its own connection, released together by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        with httpx.Client(timeout=60.0) as client:
            barrier.wait()
            try:
                results[i] = calls[i](client)
            except BaseException as exc:  # noqa: BLE001  (reported below)
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results:
        if not isinstance(r, httpx.Response):
            raise AssertionError(f"a concurrent request did not answer: {r!r}")
    return results  # type: ignore[return-value]


def trigger(c: Cluster, client: httpx.Client, scope: dict[str, Any], port: int | None = None) -> httpx.Response:
    body = {"scope": scope, "settings": {"time_limit_s": 10}}
    return client.post(f"{c.url(port)}/v1/allocation-runs", json=body, headers=c.logistics.headers)


def wait_for_runs(engine: Engine, run_ids: list[int], timeout_s: float = 60.0) -> dict[int, AllocationRun]:
    deadline = time.monotonic() + timeout_s
    while True:
        with transaction(engine) as s:
            runs = {r.id: r for r in s.exec(select(AllocationRun).where(col(AllocationRun.id).in_(run_ids))).all()}
        if all(r.status in TERMINAL for r in runs.values()) and len(runs) == len(run_ids):
            return runs  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not finished in {timeout_s} s: {[(i, r.status) for i, r in runs.items()]}")
        time.sleep(0.1)


def run_and_wait(c: Cluster, scope: dict[str, Any]) -> int:
    with httpx.Client(timeout=30.0) as client:
        r = trigger(c, client, scope)
    assert r.status_code == 202, r.text
    run_id = int(r.json()["id"])
    assert wait_for_runs(c.engine, [run_id])[run_id].status == "succeeded"
    return run_id


def get_plan(c: Cluster, run_id: int) -> tuple[dict[str, Any], str]:
    r = httpx.get(f"{c.url()}/v1/allocation-runs/{run_id}/plan", headers=c.logistics.headers, timeout=30.0)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["ETag"]


def approve_call(c: Cluster, run_id: int, etag: str, port: int) -> Callable[[httpx.Client], httpx.Response]:
    headers = c.logistics.headers | {"If-Match": etag}
    return lambda client: client.post(f"{c.url(port)}/v1/allocation-runs/{run_id}/plan/approve", headers=headers)


def ledger(engine: Engine, lot_id: int) -> tuple[tuple[int, int], tuple[int, int], list[tuple[str, int]]]:
    """(on_hand, reserved) of the lot, the sums of its movements, and its movements (kind, quantity)."""
    with transaction(engine) as s:
        lot = s.get(InventoryLot, lot_id)
        assert lot is not None
        moves = s.exec(select(InventoryMovement).where(InventoryMovement.lot_id == lot_id)).all()
    sums = (sum(m.delta_on_hand for m in moves), sum(m.delta_reserved for m in moves))
    return (lot.on_hand, lot.reserved), sums, [(m.kind, m.quantity) for m in moves]


def audit_count(engine: Engine, action: str, object_id: int) -> int:
    with transaction(engine) as s:
        stmt = select(func.count()).where(AuditEvent.action == action, AuditEvent.object_id == str(object_id))
        return int(s.exec(stmt).one())


def worker_identity(proc: Proc) -> str:
    return f"{socket.gethostname()}:{proc.pid}"
