"""The ledger state machine's own model of stock (tests/test_ledger_state_machine.py), written from
SPEC §2 and independent of the app's code: lots (on_hand, reserved, one version per movement), request
lines (reserved, in transit, delivered, cancelled), pledges (committed, status), plans and shipments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Tables an example writes; emptied (children first) before each one. The catalogue and keys stay.
DYNAMIC_TABLES = (
    "shipment_lines", "shipment_events", "shipments", "plan_lines", "request_lines", "pledges", "plans",
    "inventory_movements", "usage_reports", "requests", "inventory_lots", "idempotency_keys", "audit_events",
    "allocation_runs",
)  # fmt: skip

# What the operations could write, compared whole before and after a refused call.
WRITTEN_TABLES = tuple(t for t in DYNAMIC_TABLES if t != "audit_events") + ("change_counters", "organizations", "sites")

# SPEC §2 shipment transitions (anything else is 409).
TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"dispatched", "cancelled"}),
    "dispatched": frozenset({"in_transit", "delivered", "failed"}),
    "in_transit": frozenset({"delivered", "failed"}),
    "failed": frozenset({"returned"}),
    "delivered": frozenset(),
    "returned": frozenset(),
    "cancelled": frozenset(),
}
SUBSTITUTES = {"N95": {"KN95"}}  # KN95 may fill an N95 demand


@dataclass(frozen=True, order=True)
class Ref:
    """A plan source: a depot lot or a confirmed pledge."""

    kind: str
    id: int

    @property
    def ident(self) -> str:
        return f"{self.kind}-{self.id}"

    @staticmethod
    def parse(ident: str) -> Ref:
        kind, _, number = ident.partition("-")
        return Ref(kind, int(number))


@dataclass
class Lot:
    site: str
    sku: str
    code: str | None
    on_hand: int = 0
    reserved: int = 0
    version: int = 0  # one per ledger movement


@dataclass
class Line:
    request_id: int
    sku: str
    quantity: int
    site: str
    org: str
    reserved: int = 0
    in_transit: int = 0
    delivered: int = 0
    cancelled: bool = False

    @property
    def remaining(self) -> int:
        return self.quantity - self.reserved - self.in_transit - self.delivered


@dataclass
class Pledge:
    sku: str
    quantity: int
    status: str
    committed: int = 0


@dataclass
class Plan:
    state: str
    lines: dict[int, tuple[Ref, int, int]]  # plan line id → (source, request line, quantity)
    source_qty: dict[str, int]  # what the run's snapshot said each source had
    demand_qty: dict[int, int]  # and each request line still wanted

    def most_for(self, line_id: int) -> int:
        """The largest quantity this line may have under the snapshot's totals."""
        src, lid, qty = self.lines[line_id]
        by_source = sum(q for s, _, q in self.lines.values() if s == src) - qty
        by_line = sum(q for _, ln, q in self.lines.values() if ln == lid) - qty
        return min(self.source_qty[src.ident] - by_source, self.demand_qty[lid] - by_line)

    def fits_snapshot(self, line_id: int, qty: int) -> bool:
        """An edit is re-validated against the snapshot: no source gives, no line gets, more than it had."""
        src, lid, _ = self.lines[line_id]
        edited = {k: (s, ln, qty if k == line_id else q) for k, (s, ln, q) in self.lines.items()}
        by_source = sum(q for s, _, q in edited.values() if s == src)
        by_line = sum(q for _, ln, q in edited.values() if ln == lid)
        return by_source <= self.source_qty[src.ident] and by_line <= self.demand_qty[lid]


@dataclass
class ShipmentLine:
    id: int
    source: Ref
    line_id: int
    qty: int


@dataclass
class Shipment:
    status: str
    lines: list[ShipmentLine] = field(default_factory=list)


def line_status(line: Line) -> str:
    """SPEC §2: open → partially_allocated | allocated → partially_fulfilled | fulfilled, or cancelled."""
    if line.cancelled:
        return "cancelled"
    if line.delivered >= line.quantity:
        return "fulfilled"
    if line.delivered > 0:
        return "partially_fulfilled"
    committed = line.reserved + line.in_transit
    if committed == 0:
        return "open"
    return "allocated" if committed >= line.quantity else "partially_allocated"


def header_status(statuses: Iterable[str]) -> str:
    """A request's status summarizes its lines (cancelled lines count only when all are)."""
    active = {s for s in statuses if s != "cancelled"}
    if not active:
        return "cancelled"
    if active == {"fulfilled"}:
        return "fulfilled"
    if active & {"fulfilled", "partially_fulfilled"}:
        return "partially_fulfilled"
    if active in ({"open"}, {"allocated"}):
        return next(iter(active))
    return "partially_allocated"


class Model:
    def __init__(self) -> None:
        self.lots: dict[int, Lot] = {}
        self.lot_keys: dict[tuple[str, str, str | None], int] = {}
        self.lines: dict[int, Line] = {}
        self.requests: dict[int, str] = {}
        self.pledges: dict[int, Pledge] = {}
        self.plans: dict[int, Plan] = {}  # by run id
        self.shipments: dict[int, Shipment] = {}

    def add_line(self, lid: int, rid: int, sku: str, qty: int, site: str, org: str) -> None:
        self.lines[lid] = Line(rid, sku, qty, site, org)

    def add_pledge(self, pid: int, sku: str, qty: int, status: str) -> None:
        self.pledges[pid] = Pledge(sku, qty, status)

    def receive(self, lot_id: int, site: str, sku: str, code: str | None, qty: int) -> None:
        """Stock joins the lot with the same site, item and code, or opens a new one."""
        key = (site, sku, code)
        if key in self.lot_keys:
            assert lot_id == self.lot_keys[key], f"receipt {key} went to lot {lot_id}, not {self.lot_keys[key]}"
        else:
            assert lot_id not in self.lots, f"receipt {key} joined lot {lot_id} of {self.lots.get(lot_id)}"
            self.lot_keys[key] = lot_id
            self.lots[lot_id] = Lot(site, sku, code)
        lot = self.lots[lot_id]
        lot.on_hand += qty
        lot.version += 1

    # ------------------------------------------------------------ supply for plans

    def free(self, ref: Ref) -> int:
        if ref.kind == "lot":
            return self.lots[ref.id].on_hand - self.lots[ref.id].reserved
        p = self.pledges[ref.id]
        return p.quantity - p.committed if p.status == "confirmed" else 0

    def sources(self) -> list[Ref]:
        refs = [Ref("lot", i) for i in sorted(self.lots)] + [Ref("pledge", i) for i in sorted(self.pledges)]
        return [r for r in refs if self.free(r) > 0]

    def sku_of(self, ref: Ref) -> str:
        return self.lots[ref.id].sku if ref.kind == "lot" else self.pledges[ref.id].sku

    def site_of(self, ref: Ref) -> str:
        return self.lots[ref.id].site if ref.kind == "lot" else "donor"

    def candidate_pairs(self) -> list[tuple[Ref, int]]:
        """(source, request line) pairs a plan may use now: compatible item, something free, something wanted."""
        return [
            (ref, lid)
            for ref in self.sources()
            for lid, line in sorted(self.lines.items())
            if not line.cancelled
            and line.remaining > 0
            and self.sku_of(ref) in {line.sku} | SUBSTITUTES.get(line.sku, set())
        ]

    def add_plan(self, run_id: int, lines: dict[int, tuple[Ref, int, int]], snap: dict[str, Any]) -> None:
        sources = {s["id"]: s["quantity"] for s in snap["sources"]}
        demands = {int(d["id"].split("-")[1]): d["quantity"] for d in snap["demands"]}
        self.plans[run_id] = Plan("proposed", lines, sources, demands)

    def plan_fits(self, plan: Plan) -> bool:
        """Approval re-checks the world as it is now: free stock, confirmed pledges, open remaining."""
        need: dict[Any, int] = defaultdict(int)
        for src, lid, qty in plan.lines.values():
            need[src] += qty
            need[lid] += qty
        for key, qty in need.items():
            if isinstance(key, Ref):
                if key.kind == "pledge" and self.pledges[key.id].status != "confirmed":
                    return False
                if self.free(key) < qty:
                    return False
            elif self.lines[key].cancelled or self.lines[key].remaining < qty:
                return False
        return True

    # ------------------------------------------------------------ approval and shipment events

    def approve(
        self, run_id: int, rows: list[tuple[int, int, int, tuple[int, int]]], site_names: dict[int, str]
    ) -> None:
        """`rows`: the shipments the app created — (shipment, shipment line, plan line, (origin, destination))."""
        plan = self.plans[run_id]
        assert sorted(pl for _, _, pl, _ in rows) == sorted(plan.lines), "every plan line ships exactly once"
        routes: dict[int, tuple[int, int]] = {}
        for sid, sl, pl, (origin, destination) in rows:
            src, lid, qty = plan.lines[pl]
            assert site_names[origin] == self.site_of(src) and site_names[destination] == self.lines[lid].site
            assert routes.setdefault(sid, (origin, destination)) == (origin, destination)
            self.shipments.setdefault(sid, Shipment("planned")).lines.append(ShipmentLine(sl, src, lid, qty))
        assert len(set(routes.values())) == len(routes), "one shipment per origin → destination"
        for src, lid, qty in plan.lines.values():
            if src.kind == "lot":
                self.lots[src.id].reserved += qty
                self.lots[src.id].version += 1
            else:
                self.pledges[src.id].committed += qty
            self.lines[lid].reserved += qty
        plan.state = "approved"
        for other_run, other in self.plans.items():
            if other_run < run_id and other.state == "proposed":  # older runs, overlapping scope (all)
                other.state = "superseded"

    def shipment_event(self, sid: int, status: str, received: dict[int, int]) -> None:
        ship = self.shipments[sid]
        for sl in ship.lines:
            line = self.lines[sl.line_id]
            lot = self.lots[sl.source.id] if sl.source.kind == "lot" else None
            pledge = self.pledges[sl.source.id] if sl.source.kind == "pledge" else None
            if status == "dispatched":  # reserved stock leaves the depot; the line's units are moving
                if lot:
                    lot.on_hand, lot.reserved, lot.version = (
                        lot.on_hand - sl.qty,
                        lot.reserved - sl.qty,
                        lot.version + 1,
                    )
                line.reserved, line.in_transit = line.reserved - sl.qty, line.in_transit + sl.qty
            elif status == "cancelled":  # reservations and commitments given back
                if lot:
                    lot.reserved, lot.version = lot.reserved - sl.qty, lot.version + 1
                if pledge:
                    pledge.committed -= sl.qty
                line.reserved -= sl.qty
            elif status == "delivered":  # what arrived is delivered; a shortfall returns to remaining
                line.in_transit -= sl.qty
                line.delivered += received.get(sl.id, sl.qty)
            elif status == "failed":
                line.in_transit -= sl.qty
            elif status == "returned":  # back on hand at the origin lot, or back with the donor
                if lot:
                    lot.on_hand, lot.version = lot.on_hand + sl.qty, lot.version + 1
                if pledge:
                    pledge.committed -= sl.qty
        ship.status = status
