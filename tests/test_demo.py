"""The demo coalition (`crisis-supply demo load`, `make run`): enough realistic data to try every
workflow, balances that agree with the ledger, idempotent loading, and demo keys that keep working."""

from __future__ import annotations

import json
import stat
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.db import transaction, utcnow
from app.demo import loader
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item, ItemSubstitute
from app.keys import service as keys
from app.keys.models import ApiKey
from app.organizations.models import Organization
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import RequestLine, SupplyRequest
from app.sites.models import Site
from app.usage.models import UsageReport
from tests.conftest import _empty_tables

# Hudson Valley, New York, generously: Yonkers to Hudson, Port Jervis to the Connecticut line.
LAT_RANGE, LON_RANGE = (40.85, 42.45), (-74.85, -73.45)
TABLES = (Organization, Site, Item, ItemSubstitute, InventoryLot, InventoryMovement, SupplyRequest, RequestLine)
TABLES += (Pledge, UsageReport, ApiKey)


def counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.__tablename__: s.exec(select(func.count()).select_from(t)).one() for t in TABLES}  # type: ignore[attr-defined]


@pytest.fixture
def demo(engine: Engine) -> Engine:
    assert loader.load_if_empty(engine=engine) is True
    return engine


def test_demo_has_a_whole_coalition_in_one_region(demo: Engine) -> None:
    with Session(demo) as s:
        orgs = s.exec(select(Organization)).all()
        sites = s.exec(select(Site)).all()
    kinds = Counter(o.kind for o in orgs)
    site_kinds_by_org: dict[int, set[str]] = defaultdict(set)
    for site in sites:
        site_kinds_by_org[site.organization_id].add(site.kind)
        assert LAT_RANGE[0] <= site.lat <= LAT_RANGE[1] and LON_RANGE[0] <= site.lon <= LON_RANGE[1], site.name

    assert kinds["coalition"] == 1 and kinds["depot_operator"] >= 1
    assert sum(1 for s in sites if s.kind == "depot") >= 3
    assert kinds["hospital"] + kinds["clinic"] >= 30
    assert kinds["food_hub"] >= 10
    assert kinds["donor"] >= 5
    expected_site = {
        "hospital": "hospital_dock",
        "clinic": "hospital_dock",
        "food_hub": "food_hub",
        "donor": "donor_site",
    }
    for org in orgs:
        if org.kind in expected_site:
            assert expected_site[org.kind] in site_kinds_by_org[org.id], org.name
    assert {o.region for o in orgs} == {"Hudson Valley"}
    assert len({o.name for o in orgs}) == len(orgs)
    weights = {o.equity_weight for o in orgs}
    assert min(weights) >= 0.8 and max(weights) <= 2.5 and len(weights) >= 4


def test_demo_catalog_has_ppe_sanitation_food_and_the_substitutes(demo: Engine) -> None:
    with Session(demo) as s:
        items = {i.sku: i for i in s.exec(select(Item)).all()}
        subs = {
            (items_by_id.sku, sub.sku, row.penalty)
            for row in s.exec(select(ItemSubstitute)).all()
            for items_by_id in [s.get(Item, row.item_id)]
            for sub in [s.get(Item, row.substitute_item_id)]
            if items_by_id is not None and sub is not None
        }
    skus = {"N95", "KN95", "ELASTOMERIC", "SURGICAL_MASK", "CLOTH_MASK", "GLOVES_NITRILE", "GOWN_ISOLATION"}
    skus |= {"FACE_SHIELD", "HAND_SANITIZER", "DISINFECTANT_WIPES", "FOOD_BOX", "WATER_CASE"}
    assert set(items) == skus
    assert {i.category for i in items.values()} >= {"ppe", "sanitation", "food"}
    assert any(i.shelf_life_days for i in items.values()) and any(i.pack_size > 1 for i in items.values())
    assert subs == {
        ("N95", "KN95", 0.3),
        ("N95", "ELASTOMERIC", 0.1),
        ("KN95", "N95", 0.05),
        ("SURGICAL_MASK", "KN95", 0.2),
        ("CLOTH_MASK", "SURGICAL_MASK", 0.05),
    }


def test_demo_demand_spans_priorities_deadlines_and_requesters(demo: Engine) -> None:
    now = utcnow()
    with Session(demo) as s:
        lines = s.exec(select(RequestLine).where(RequestLine.status == "open")).all()
        requester_kinds = set(
            s.exec(
                select(Organization.kind).join(SupplyRequest, SupplyRequest.organization_id == Organization.id)  # type: ignore[arg-type]
            ).all()
        )
    assert {line.priority for line in lines} == {"critical", "high", "routine"}
    deadlines = [line.needed_by for line in lines if line.needed_by is not None]
    assert 0 < len(deadlines) < len(lines)  # some lines have no deadline
    assert all(now + timedelta(hours=11) <= d <= now + timedelta(days=7) for d in deadlines)
    assert {"hospital", "food_hub"} <= requester_kinds


def test_demo_supply_covers_about_two_thirds_of_demand(demo: Engine) -> None:
    """Supply = unexpired depot lots + confirmed pledges; short enough that allocation must choose."""
    demand: Counter[int] = Counter()
    supply: Counter[int] = Counter()
    with Session(demo) as s:
        for line in s.exec(select(RequestLine)).all():
            demand[line.item_id] += line.quantity
        for lot in s.exec(select(InventoryLot)).all():
            supply[lot.item_id] += lot.on_hand
        for pledge in s.exec(select(Pledge).where(Pledge.status == "confirmed")).all():
            supply[pledge.item_id] += pledge.quantity
    ratio = sum(supply.values()) / sum(demand.values())
    assert 0.6 <= ratio <= 0.75, ratio
    for item_id, wanted in demand.items():
        assert 0.55 <= supply[item_id] / wanted <= 0.8, (item_id, supply[item_id], wanted)


def test_demo_lots_pledges_and_usage_reports(demo: Engine) -> None:
    now = utcnow()
    with Session(demo) as s:
        lots = s.exec(select(InventoryLot)).all()
        depot_ids = set(s.exec(select(Site.id).where(Site.kind == "depot")).all())
        pledges = s.exec(select(Pledge)).all()
        reports = s.exec(select(UsageReport)).all()
    assert lots and all(lot.site_id in depot_ids and lot.lot_code for lot in lots)
    expiring = [lot.expires_at for lot in lots if lot.expires_at is not None]
    assert expiring and all(e > now for e in expiring)  # nothing already expired: all of it is supply
    assert any(e <= now + timedelta(days=7) for e in expiring)  # some expiring soon
    assert {p.status for p in pledges} == {"pledged", "confirmed"}
    assert all(now - timedelta(minutes=5) <= p.available_from <= now + timedelta(days=2, minutes=5) for p in pledges)
    assert any(r.daily_usage is not None for r in reports)
    per_pair = Counter((r.organization_id, r.item_id) for r in reports)
    twice = [pair for pair, n in per_pair.items() if n == 2]
    assert twice
    for org_id, item_id in twice:
        first, second = sorted(
            (r for r in reports if (r.organization_id, r.item_id) == (org_id, item_id)), key=lambda r: r.reported_at
        )
        days = (second.reported_at - first.reported_at).total_seconds() / 86400
        assert second.daily_usage is None
        assert second.estimated_daily_usage == pytest.approx((first.on_hand - second.on_hand) / days)


def test_demo_lot_balances_equal_their_ledger(demo: Engine) -> None:
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    kinds: dict[int, set[str]] = defaultdict(set)
    with Session(demo) as s:
        for m in s.exec(select(InventoryMovement)).all():
            sums[m.lot_id][0] += m.delta_on_hand
            sums[m.lot_id][1] += m.delta_reserved
            kinds[m.lot_id].add(m.kind)
        lots = s.exec(select(InventoryLot)).all()
    assert lots
    for lot in lots:
        assert (lot.on_hand, lot.reserved) == tuple(sums[lot.id]), lot.id  # type: ignore[index]
        assert kinds[lot.id] == {"receive"}  # type: ignore[index]


def test_demo_loads_once(demo: Engine) -> None:
    before = counts(demo)
    assert loader.load_if_empty(engine=demo) is False
    assert loader.load_if_empty(force=True, engine=demo) is False  # names are unique: never twice
    assert counts(demo) == before


def test_demo_is_not_loaded_into_a_database_in_use(engine: Engine, factory: Any) -> None:
    factory.org(kind="hospital", name="Someone Else's Hospital")
    before = counts(engine)
    assert loader.load_if_empty(engine=engine) is False
    assert counts(engine) == before
    assert loader.load_if_empty(force=True, engine=engine) is True
    assert counts(engine)["organizations"] > before["organizations"] + 40


def test_demo_load_is_deterministic_apart_from_time(engine: Engine) -> None:
    def demand() -> list[tuple[Any, ...]]:
        with Session(engine) as s:
            sku = {i.id: i.sku for i in s.exec(select(Item)).all()}
            lines = s.exec(select(RequestLine).order_by(RequestLine.id)).all()  # type: ignore[arg-type]
            return [(sku[line.item_id], line.quantity, line.priority) for line in lines]

    loader.load_if_empty(engine=engine)
    first = demand()
    _empty_tables(engine)
    loader.load_if_empty(engine=engine)
    assert demand() == first


# ---------------------------------------------------------------- demo keys

ROLES = {
    "admin": "admin",
    "logistics": "logistics",
    "requester": "requester",
    "requester-2": "requester",
    "donor": "donor",
    "driver": "driver",
}


def test_demo_keys_are_stored_privately_and_reused(demo: Engine, tmp_path: Path) -> None:
    first = loader.ensure_demo_keys(tmp_path, engine=demo)
    path = tmp_path / "demo-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first
    second = loader.ensure_demo_keys(tmp_path, engine=demo)
    assert second == first
    assert set(first) == set(ROLES)
    with Session(demo) as s:
        assert s.exec(select(func.count()).select_from(ApiKey)).one() == len(ROLES)  # nothing created twice
        for label, info in first.items():
            key = keys.authenticate(s, info["key"])
            assert key is not None and key.role == ROLES[label] and key.organization_id == info["organization_id"]
            org = s.get(Organization, key.organization_id) if key.organization_id else None
            expected_kind = {
                "requester": "hospital",
                "requester-2": "food_hub",
                "donor": "donor",
                "driver": "coalition",
            }
            assert (org.kind if org else None) == expected_kind.get(label)


def test_demo_keys_work_with_their_roles(demo: Engine, client: TestClient, tmp_path: Path) -> None:
    demo_keys = loader.ensure_demo_keys(tmp_path, engine=demo)

    def call(label: str, method: str, url: str, **kw: Any) -> int:
        return client.request(
            method, url, headers={"Authorization": f"Bearer {demo_keys[label]['key']}"}, **kw
        ).status_code

    hospital = demo_keys["requester"]["organization_id"]
    food_hub = demo_keys["requester-2"]["organization_id"]
    assert call("admin", "POST", "/v1/organizations", json={}) == 422  # admin may write; the body is bad
    assert call("logistics", "POST", "/v1/organizations", json={}) == 403
    assert call("logistics", "GET", f"/v1/organizations/{hospital}") == 200
    assert call("requester", "GET", f"/v1/organizations/{hospital}") == 200
    assert call("requester", "GET", f"/v1/organizations/{food_hub}") == 404  # bound to its own organisation
    assert call("requester-2", "GET", f"/v1/organizations/{food_hub}") == 200
    assert call("requester-2", "GET", f"/v1/organizations/{hospital}") == 404
    assert call("donor", "GET", f"/v1/organizations/{demo_keys['donor']['organization_id']}") == 200
    assert call("driver", "GET", f"/v1/organizations/{demo_keys['driver']['organization_id']}") == 403
    assert client.get("/v1/organizations", headers={"Authorization": "Bearer cs_not-a-demo-key"}).status_code == 401


def test_demo_keys_replace_revoked_and_unknown_keys(demo: Engine, tmp_path: Path) -> None:
    first = loader.ensure_demo_keys(tmp_path, engine=demo)
    with transaction(demo) as s:
        revoked = keys.authenticate(s, first["requester"]["key"])
        assert revoked is not None
        keys.revoke_key(s, actor=SYSTEM, key_id=revoked.id)  # type: ignore[arg-type]
        s.delete(keys.authenticate(s, first["donor"]["key"]))  # e.g. a database restored from elsewhere
    second = loader.ensure_demo_keys(tmp_path, engine=demo)
    assert second["requester"]["key"] != first["requester"]["key"]
    assert second["donor"]["key"] != first["donor"]["key"]
    assert {k: v for k, v in second.items() if k not in {"requester", "donor"}} == {
        k: v for k, v in first.items() if k not in {"requester", "donor"}
    }
    assert json.loads((tmp_path / "demo-keys.json").read_text()) == second
    with Session(demo) as s:
        assert keys.authenticate(s, first["requester"]["key"]) is None
        for info in second.values():
            assert keys.authenticate(s, info["key"]) is not None


def test_demo_keys_without_the_demo_coalition_bind_to_fitting_organisations(
    engine: Engine, factory: Any, tmp_path: Path
) -> None:
    hospital = factory.org(kind="clinic")
    result = loader.ensure_demo_keys(tmp_path, engine=engine)
    assert set(result) == {"admin", "logistics", "requester"}  # no food hub, donor or coalition to bind to
    assert result["requester"]["organization_id"] == hospital.id
