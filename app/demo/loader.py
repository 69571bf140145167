"""The demo coalition: `crisis-supply demo load` and `crisis-supply serve --demo` (what `make run` starts).

`load_if_empty` builds one fictional Hudson Valley coalition in a single transaction: organisations
and keys through their services, depot stock through the inventory ledger (so balances equal the
ledger), the rest as plain rows with an audit event each. A seeded random generator makes the data
the same on every load except for timestamps, which are relative to the load time so deadlines are
always in the future. Supply (depot lots + confirmed pledges) covers roughly 60–75% of each item's
open demand, so an allocation run has real choices to make.

`ensure_demo_keys` keeps one key per demo role in `<data_dir>/demo-keys.json` (mode 0600) and
re-creates any key the database no longer accepts.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from app.audit import service as audit
from app.config import get_settings
from app.db import get_engine, transaction, utcnow
from app.demo import data
from app.demo.data import CatalogItem, Place
from app.inventory import service as inventory
from app.items.models import Item, ItemSubstitute
from app.keys import service as keys
from app.keys.models import ApiKeyCreate
from app.organizations import service as organizations
from app.organizations.models import Organization, OrganizationCreate
from app.pledges.models import Pledge
from app.principal import SYSTEM
from app.requests.models import PRIORITIES, RequestLine, SupplyRequest
from app.sites.models import Site
from app.usage import service as usage
from app.usage.models import UsageReport

SEED = 2026
KEYS_FILE = "demo-keys.json"
SUPPLY_SHARE = (0.60, 0.75)  # of each item's open demand
PLEDGE_SHARE = 0.15  # of that supply, from confirmed pledges; the rest sits in depot lots
# Fallback owners for demo keys when the named demo organisation is absent (database loaded otherwise).
KEY_FALLBACK_KINDS: dict[str, tuple[str, ...]] = {
    "requester": ("hospital", "clinic"),
    "requester-2": ("food_hub",),
    "donor": ("donor",),
    "driver": ("coalition", "depot_operator"),
}
# What each donor gives: the SKUs their pledges are drawn from.
DONOR_ITEMS: dict[str, tuple[str, ...]] = {
    "Shawangunk Distilling Company": ("HAND_SANITIZER",),
    "Tappan Zee Savings Bank Foundation": ("FOOD_BOX", "WATER_CASE", "DISINFECTANT_WIPES"),
    "Catskill Industrial Supply": ("N95", "ELASTOMERIC", "GLOVES_NITRILE", "FACE_SHIELD"),
    "Ridgeline Pharmaceuticals": ("N95", "KN95", "SURGICAL_MASK", "GOWN_ISOLATION", "GLOVES_NITRILE"),
    "Valley Grocers Cooperative": ("FOOD_BOX", "WATER_CASE"),
    "Hudson River Textile Works": ("CLOTH_MASK", "GOWN_ISOLATION"),
}


# ---------------------------------------------------------------- load


def load_if_empty(force: bool = False, *, engine: Engine | None = None, now: datetime | None = None) -> bool:
    """Create the demo coalition when the database has no organisations (or when `force`); True if loaded.

    Even with `force` the coalition is never loaded twice: organisation names are unique."""
    with transaction(engine or get_engine()) as session:
        if session.exec(select(Organization.id).limit(1)).first() is not None:
            if not force or _org_by_name(session, data.COALITION_NAME) is not None:
                return False
        _DemoBuilder(session, now or utcnow()).build()
    return True


def _org_by_name(session: Session, name: str) -> Organization | None:
    return session.exec(select(Organization).where(Organization.name == name)).first()


def _rounded(value: float, step: int = 10) -> int:
    return max(step, int(round(value / step)) * step)


class _DemoBuilder:
    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self.rng = random.Random(SEED)
        self.items: dict[str, Item] = {}
        self.sites: dict[str, Site] = {}  # by owning organisation name (one delivery/donor site each)
        self.depots: list[Site] = []
        self.orgs: dict[str, Organization] = {}
        self.demand: dict[str, int] = defaultdict(int)
        self.requested: list[tuple[Organization, str, int]] = []  # (org, sku, quantity) per open line

    def build(self) -> None:
        self._catalog()
        self._organizations_and_sites()
        self._requests()
        supply = {sku: _rounded(q * self.rng.uniform(*SUPPLY_SHARE)) for sku, q in sorted(self.demand.items())}
        self._pledges(supply)
        self._depot_lots(supply)
        self._usage_reports()

    def _add(self, row: SQLModel, action: str) -> Any:
        """A plain row plus its audit event (services for these domains are not needed to seed data)."""
        self.session.add(row)
        self.session.flush()
        audit.record(self.session, actor=SYSTEM, action=action, obj=row, before=None)
        return row

    def _catalog(self) -> None:
        for entry in data.CATALOG:
            self.items[entry.sku] = self._add(self._item(entry), "item.create")
        for sku, substitute, penalty in data.SUBSTITUTES:
            row = ItemSubstitute(
                item_id=self.items[sku].id, substitute_item_id=self.items[substitute].id, penalty=penalty
            )
            self.session.add(row)
        self.session.flush()

    @staticmethod
    def _item(entry: CatalogItem) -> Item:
        return Item(
            sku=entry.sku,
            name=entry.name,
            category=entry.category,
            unit=entry.unit,
            pack_size=entry.pack_size,
            shelf_life_days=entry.shelf_life_days,
        )

    def _org(self, name: str, kind: str, weight: float = 1.0) -> Organization:
        body = OrganizationCreate(name=name, kind=kind, region=data.REGION, equity_weight=weight)  # type: ignore[arg-type]
        org = organizations.create_organization(self.session, actor=SYSTEM, data=body)
        self.orgs[name] = org
        return org

    def _site(self, org: Organization, place: Place, kind: str, name: str | None = None) -> Site:
        site = Site(
            organization_id=org.id,  # type: ignore[arg-type]
            name=name or place.name,
            kind=kind,
            lat=place.lat,
            lon=place.lon,
            address=f"{place.town}, NY",
        )
        return self._add(site, "site.create")  # type: ignore[no-any-return]

    def _organizations_and_sites(self) -> None:
        self._org(data.COALITION_NAME, "coalition")
        for operator, depots in data.DEPOT_OPERATORS:
            org = self._org(operator, "depot_operator")
            self.depots += [self._site(org, place, "depot") for place in depots]
        groups = [
            (data.HOSPITALS, "hospital", "hospital_dock", "receiving dock"),
            (data.CLINICS, "clinic", "hospital_dock", "receiving dock"),
            (data.FOOD_HUBS, "food_hub", "food_hub", "warehouse"),
            (data.DONORS, "donor", "donor_site", "loading bay"),
        ]
        for places, org_kind, site_kind, label in groups:
            for place in places:
                org = self._org(place.name, org_kind, place.equity_weight)
                self.sites[place.name] = self._site(org, place, site_kind, f"{place.name} {label}")

    def _priority(self, org_kind: str) -> str:
        weights = (0.3, 0.4, 0.3) if org_kind in {"hospital", "clinic"} else (0.15, 0.45, 0.4)
        return self.rng.choices(PRIORITIES, weights=weights)[0]

    def _needed_by(self) -> datetime | None:
        if self.rng.random() < 0.2:
            return None
        return self.now + timedelta(hours=self.rng.choice((12, 18, 24, 36, 48, 72, 96, 120, 168)))

    def _requests(self) -> None:
        requesters = [(p, "hospital") for p in data.HOSPITALS] + [(p, "clinic") for p in data.CLINICS]
        requesters += [(p, "food_hub") for p in data.FOOD_HUBS]
        for place, kind in requesters:
            needs = data.FOOD_HUB_NEEDS if kind == "food_hub" else data.HOSPITAL_NEEDS
            scale = 0.5 if kind == "clinic" else 1.0  # clinics are smaller than hospitals
            for _ in range(self.rng.choice((1, 1, 2))):
                skus = self.rng.sample(sorted(needs), k=self.rng.randint(1, 4))
                lines = []
                for sku in skus:
                    low, high = needs[sku]
                    quantity = _rounded(self.rng.uniform(low, high) * scale)
                    lines.append((sku, quantity))
                self._request(place, kind, lines)

    def _request(self, place: Place, kind: str, lines: list[tuple[str, int]]) -> None:
        org, site = self.orgs[place.name], self.sites[place.name]
        created = self.now - timedelta(hours=self.rng.randint(1, 48))
        header = SupplyRequest(
            organization_id=org.id,  # type: ignore[arg-type]
            site_id=site.id,  # type: ignore[arg-type]
            justification=self.rng.choice(data.JUSTIFICATIONS),
            created_at=created,
            updated_at=created,
        )
        self.session.add(header)
        self.session.flush()
        rows = []
        for sku, quantity in lines:
            row = RequestLine(
                request_id=header.id,  # type: ignore[arg-type]
                item_id=self.items[sku].id,  # type: ignore[arg-type]
                quantity=quantity,
                priority=self._priority(kind),
                needed_by=self._needed_by(),
                created_at=created,
                updated_at=created,
            )
            rows.append(row)
            self.demand[sku] += quantity
            self.requested.append((org, sku, quantity))
        self.session.add_all(rows)
        self.session.flush()
        after = audit.snapshot(header) | {"lines": [audit.snapshot(r) for r in rows]}
        audit.record(self.session, actor=SYSTEM, action="request.create", obj=header, before=None, after=after)

    def _pledges(self, supply: dict[str, int]) -> None:
        """Confirmed pledges carry PLEDGE_SHARE of the supply; a few fresh `pledged` ones are extra."""
        givers: dict[str, list[str]] = defaultdict(list)
        for donor, skus in DONOR_ITEMS.items():
            for sku in skus:
                givers[sku].append(donor)
        for sku, total in supply.items():
            if not givers[sku]:
                continue
            donor = self.rng.choice(givers[sku])
            confirmed = _rounded(total * PLEDGE_SHARE)
            supply[sku] = max(0, total - confirmed)
            self._pledge(donor, sku, confirmed, "confirmed")
        for donor, skus in DONOR_ITEMS.items():  # not yet confirmed: not supply until logistics confirms
            sku = self.rng.choice(skus)
            self._pledge(donor, sku, _rounded(self.demand.get(sku, 1000) * 0.05), "pledged")

    def _pledge(self, donor: str, sku: str, quantity: int, status: str) -> None:
        item = self.items[sku]
        expires = self.now + timedelta(days=item.shelf_life_days) if item.shelf_life_days else None
        pledge = Pledge(
            organization_id=self.orgs[donor].id,  # type: ignore[arg-type]
            item_id=item.id,  # type: ignore[arg-type]
            site_id=self.sites[donor].id,  # type: ignore[arg-type]
            quantity=quantity,
            available_from=self.now + timedelta(days=self.rng.choice((0, 0, 1, 2))),
            expires_at=expires,
            status=status,
            note=f"{item.name} from {donor}",
        )
        self._add(pledge, "pledge.create")

    def _depot_lots(self, supply: dict[str, int]) -> None:
        """Each item's depot supply split over two or three depots, received through the ledger."""
        for sku, total in supply.items():
            if total <= 0:
                continue
            item = self.items[sku]
            depots = self.rng.sample(self.depots, k=min(len(self.depots), self.rng.randint(2, 3)))
            shares = [self.rng.uniform(0.5, 1.5) for _ in depots]
            remaining = total
            for n, (depot, share) in enumerate(zip(depots, shares, strict=True)):
                quantity = remaining if n == len(depots) - 1 else int(total * share / sum(shares))
                remaining -= quantity
                if quantity <= 0:
                    continue
                inventory.receive(
                    self.session,
                    actor=SYSTEM,
                    site_id=depot.id,  # type: ignore[arg-type]
                    item_id=item.id,  # type: ignore[arg-type]
                    quantity=quantity,
                    lot_code=f"{sku.replace('_', '')[:6]}-{self.now:%y%m}-{depot.id:02d}{n}",
                    expires_at=self._lot_expiry(item),
                    reason="demo: opening stock",
                    reference="demo-load",
                )

    def _lot_expiry(self, item: Item) -> datetime | None:
        if item.shelf_life_days is None:
            return None
        if self.rng.random() < 0.25:  # expiring soon: allocate these first or lose them
            return self.now + timedelta(days=self.rng.randint(2, 6))
        return self.now + timedelta(days=self.rng.randint(30, item.shelf_life_days))

    def _usage_reports(self) -> None:
        """About half of the requested (org, item) pairs report burn rates. Some give daily usage; the
        others report on-hand twice, three days apart, so usage is estimated from the drop."""
        seen: set[tuple[int, str]] = set()
        for org, sku, quantity in self.requested:
            if (org.id, sku) in seen or self.rng.random() < 0.5:  # type: ignore[operator]
                continue
            seen.add((org.id, sku))  # type: ignore[arg-type]
            # justified need over a 14-day horizon ≈ 50–130% of what was asked: some over-ask
            daily = max(1.0, round(quantity * self.rng.uniform(0.5, 1.3) / 14, 1))
            on_hand = int(daily * self.rng.uniform(0.5, 4))
            item_id, latest_at = self.items[sku].id, self.now - timedelta(hours=2)
            if self.rng.random() < 0.5:
                self._usage(org, item_id, on_hand, daily, None, latest_at)
                continue
            earlier_at, earlier = latest_at - timedelta(days=3), on_hand + int(round(daily * 3))
            estimate = usage.estimate_daily_usage(
                previous_on_hand=earlier, previous_at=earlier_at, on_hand=on_hand, at=latest_at, received=0
            )
            self._usage(org, item_id, earlier, None, None, earlier_at)
            self._usage(org, item_id, on_hand, None, estimate, latest_at)

    def _usage(
        self,
        org: Organization,
        item_id: int | None,
        on_hand: int,
        daily: float | None,
        estimate: float | None,
        at: datetime,
    ) -> None:
        """A usage report row; `estimate` is what app.usage.service stores when daily usage is omitted."""
        report = UsageReport(
            organization_id=org.id,  # type: ignore[arg-type]
            item_id=item_id,  # type: ignore[arg-type]
            on_hand=on_hand,
            daily_usage=daily,
            estimated_daily_usage=estimate,
            reported_at=at,
        )
        self._add(report, "usage_report.create")


# ---------------------------------------------------------------- demo keys


def ensure_demo_keys(data_dir: Path | None = None, *, engine: Engine | None = None) -> dict[str, dict[str, Any]]:
    """One working key per demo role: reuse the stored secrets the database still accepts, create the
    others. Returns role label -> {"key", "name", "role", "organization_id"}. A role whose organisation
    does not exist (the demo was not loaded and no fallback organisation fits) is left out."""
    path = (data_dir or get_settings().data_dir) / KEYS_FILE
    stored = _read_keys(path)
    result: dict[str, dict[str, Any]] = {}
    with transaction(engine or get_engine()) as session:
        for label, (role, org_name) in data.DEMO_KEY_ROLES.items():
            info = stored.get(label)
            if isinstance(info, dict) and _still_works(session, info, role):
                result[label] = info
                continue
            org_id = None if org_name is None else _key_owner(session, org_name, KEY_FALLBACK_KINDS[label])
            if org_name is not None and org_id is None:
                continue
            owner = "" if org_id is None else f" ({session.get(Organization, org_id).name})"  # type: ignore[union-attr]
            body = ApiKeyCreate(name=f"demo {label}{owner}", role=role, organization_id=org_id)  # type: ignore[arg-type]
            key, secret = keys.create_key(session, actor=SYSTEM, data=body)
            result[label] = {"key": secret, "name": key.name, "role": role, "organization_id": org_id}
    # Written after the commit, so the file never names a key the database does not have.
    if result != stored or not path.exists():
        _write_keys(path, result)
    return result


def _still_works(session: Session, info: dict[str, Any], role: str) -> bool:
    secret = info.get("key")
    if not isinstance(secret, str):
        return False
    key = keys.authenticate(session, secret)
    return key is not None and key.role == role and key.organization_id == info.get("organization_id")


def _key_owner(session: Session, name: str, fallback_kinds: tuple[str, ...]) -> int | None:
    org = _org_by_name(session, name)
    if org is not None and org.active:
        return org.id
    stmt = select(Organization.id).where(col(Organization.kind).in_(fallback_kinds), col(Organization.active).is_(True))
    return session.exec(stmt.order_by(Organization.id)).first()


def _read_keys(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _write_keys(path: Path, content: dict[str, dict[str, Any]]) -> None:
    """Atomic replace of a file only its owner can read (it holds live secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode is ignored when the file already existed
    os.replace(tmp, path)
