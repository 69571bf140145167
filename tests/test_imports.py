"""Spreadsheet import and export: every kind from CSV and XLSX, all-or-nothing with a row-level error
report, references by name and to other rows of the same file, the ledger behind inventory imports,
export → import round trips, who may do what, and the command line on a throwaway SQLite database."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.reports.tabular import XLSX_MEDIA_TYPE
from tests.conftest import Actor, _empty_tables, row_counts
from tests.factories import Factory

FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
ORGS = [
    ["name", "kind", "region", "equity_weight"],
    ["North General", "hospital", "north", 1.5],
    ["South Food Hub", "food_hub", "south", None],
    ["Depot Co", "depot_operator", "north", None],
    ["Kind Donor", "donor", "south", None],
]
SITES = [
    ["Organization", "Name", "Kind", "Lat", "Lon", "Address"],  # header case and spacing are forgiven
    ["North General", "North dock", "hospital_dock", 40.8, -73.9, "1 Main St"],
    ["South Food Hub", "South hub", "food_hub", 40.6, -74.1, None],
    ["Depot Co", "Central depot", "depot", 40.7, -74.0, None],
    ["Kind Donor", "Donor warehouse", "donor_site", 40.75, -73.95, None],
]
ITEMS = [
    ["sku", "name", "category", "unit", "pack_size", "shelf_life_days", "substitutes"],
    ["N95", "N95 respirator", "ppe", "each", 20, 1825, "KN95:0.3"],  # KN95 comes later in the file
    ["KN95", "KN95 respirator", "ppe", None, None, None, "N95:0.1"],
    ["GLOVES", "Nitrile gloves", "ppe", "box", 100, None, None],
]


def spreadsheet(fmt: str, rows: list[list[Any]]) -> tuple[bytes, str]:
    if fmt == "xlsx":
        workbook = openpyxl.Workbook()
        for row in rows:
            workbook.active.append(row)
        out = io.BytesIO()
        workbook.save(out)
        return out.getvalue(), XLSX_MEDIA_TYPE
    text = io.StringIO()
    writer = csv.writer(text)
    for row in rows:
        writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row])
    return text.getvalue().encode(), "text/csv"


def upload(
    client: TestClient, actor: Actor, kind: str, rows: list[list[Any]], fmt: str = "csv", raw: bool = False
) -> Any:
    data, media_type = spreadsheet(fmt, rows)
    if raw:
        headers = actor.headers | {"Content-Type": media_type}
        return client.post(f"/v1/imports/{kind}", content=data, headers=headers)
    return client.post(
        f"/v1/imports/{kind}", files={"file": (f"{kind}.{fmt}", data, media_type)}, headers=actor.headers
    )


def imported(client: TestClient, actor: Actor, kind: str, rows: list[list[Any]], fmt: str = "csv", **kw: Any) -> Any:
    r = upload(client, actor, kind, rows, fmt, **kw)
    assert r.status_code == 201, r.text
    return r.json()


def errors_of(r: Any) -> list[tuple[int | None, str | None]]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return [(e["row"], e["column"]) for e in r.json()["errors"]]


def listing(client: TestClient, actor: Actor, path: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(path, params={"limit": 500} | params, headers=actor.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.fixture
def admin(factory: Factory) -> Actor:
    return factory.actor("admin")


@pytest.fixture
def logistics(factory: Factory) -> Actor:
    return factory.actor("logistics")


def load_catalog(client: TestClient, admin: Actor, logistics: Actor, fmt: str = "csv") -> None:
    assert imported(client, admin, "organizations", ORGS, fmt) == {"kind": "organizations", "rows": 4, "created": 4}
    assert imported(client, logistics, "sites", SITES, fmt)["created"] == 4
    assert imported(client, logistics, "items", ITEMS, fmt)["created"] == 3


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_import_every_kind(client: TestClient, engine: Engine, admin: Actor, logistics: Actor, fmt: str) -> None:
    load_catalog(client, admin, logistics, fmt)
    orgs = {o["name"]: o for o in listing(client, admin, "/v1/organizations")}
    assert (orgs["North General"]["equity_weight"], orgs["South Food Hub"]["equity_weight"]) == (1.5, 1.0)
    sites = {s["name"]: s for s in listing(client, admin, "/v1/sites")}
    dock = sites["North dock"]
    assert (dock["organization_id"], dock["kind"], dock["lat"], dock["address"]) == (
        orgs["North General"]["id"],
        "hospital_dock",
        40.8,
        "1 Main St",
    )
    items = {i["sku"]: i for i in listing(client, admin, "/v1/items")}
    assert [(s["sku"], s["penalty"]) for s in items["N95"]["substitutes"]] == [("KN95", 0.3)]
    assert [(s["sku"], s["penalty"]) for s in items["KN95"]["substitutes"]] == [("N95", 0.1)]
    assert (items["N95"]["pack_size"], items["N95"]["shelf_life_days"], items["KN95"]["unit"]) == (20, 1825, "each")

    expiry = datetime(2030, 1, 1) if fmt == "xlsx" else "2030-01-01T00:00:00Z"  # XLSX times are read as UTC
    stock = [
        ["site", "sku", "quantity", "lot_code", "expires_at", "reason"],
        ["Central depot", "N95", 1000, "L1", expiry, "opening count"],
        ["Central depot", "N95", 500, "L1", expiry, None],  # same lot: a second receipt into it
        [str(sites["Central depot"]["id"]), "GLOVES", 300, 1001, None, None],  # a site id; a numeric lot code
    ]
    assert imported(client, logistics, "inventory", stock, fmt)["created"] == 3
    lots = listing(client, logistics, "/v1/inventory/lots")
    assert sorted((lt["item_id"], lt["on_hand"], lt["lot_code"], lt["expires_at"]) for lt in lots) == sorted(
        [(items["N95"]["id"], 1500, "L1", "2030-01-01T00:00:00Z"), (items["GLOVES"]["id"], 300, "1001", None)]
    )
    moves = listing(client, logistics, "/v1/inventory/movements")
    assert [(m["kind"], m["quantity"], m["reference"], m["actor_key_id"]) for m in moves] == [
        ("receive", 1000, "import row 2", logistics.key_id),
        ("receive", 500, "import row 3", logistics.key_id),
        ("receive", 300, "import row 4", logistics.key_id),
    ]

    needed_by = FUTURE.replace(tzinfo=None) if fmt == "xlsx" else FUTURE.isoformat()
    lines = [
        ["request_key", "organization", "site", "sku", "quantity", "priority", "needed_by", "justification"],
        ["A", "North General", "North dock", "N95", 100, "critical", needed_by, "ICU surge"],
        ["B", "South Food Hub", "South hub", "GLOVES", 50, None, None, None],
        ["A", "North General", "North dock", "GLOVES", 20, "High", None, None],  # joins request A
    ]
    assert imported(client, logistics, "requests", lines, fmt) == {"kind": "requests", "rows": 3, "created": 2}
    found = {r["organization_id"]: r for r in listing(client, admin, "/v1/requests")}
    a = found[orgs["North General"]["id"]]
    assert (a["site_id"], a["justification"]) == (dock["id"], "ICU surge")
    assert [(ln["item_id"], ln["quantity"], ln["priority"]) for ln in a["lines"]] == [
        (items["N95"]["id"], 100, "critical"),
        (items["GLOVES"]["id"], 20, "high"),
    ]
    assert datetime.fromisoformat(a["lines"][0]["needed_by"]) == FUTURE
    assert [(ln["quantity"], ln["priority"]) for ln in found[orgs["South Food Hub"]["id"]]["lines"]] == [
        (50, "routine")
    ]

    offers = [
        ["organization", "site", "sku", "quantity", "available_from", "expires_at", "note", "status"],
        ["Kind Donor", "Donor warehouse", "N95", 200, None, None, "from our stock", "confirmed"],
        ["Kind Donor", "Donor warehouse", "KN95", 100, None, None, None, None],
    ]
    assert imported(client, logistics, "pledges", offers, fmt)["created"] == 2
    pledges = listing(client, admin, "/v1/pledges")
    assert [(p["organization_id"], p["quantity"], p["status"], p["note"]) for p in pledges] == [
        (orgs["Kind Donor"]["id"], 200, "confirmed", "from our stock"),
        (orgs["Kind Donor"]["id"], 100, "pledged", None),
    ]

    with Session(engine) as s:  # written through the services: audited, with the real key and on whose behalf
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "request.create")).all()
        assert {e.actor_key_id for e in events} == {logistics.key_id}
        assert all("on behalf of organization" in e.actor for e in events)
        actions = [e.action for e in s.exec(select(AuditEvent).where(AuditEvent.object_type == "pledges")).all()]
        assert actions == ["pledge.create", "pledge.confirm", "pledge.create"]


def test_one_bad_row_writes_nothing_and_every_bad_cell_is_reported(
    client: TestClient, engine: Engine, admin: Actor, logistics: Actor
) -> None:
    load_catalog(client, admin, logistics)
    before = row_counts(engine)
    sites = SITES[:1] + [
        ["North General", "North annex", "hospital_dock", 40.9, -73.8, None],
        ["Nobody", "Ghost dock", "hospital_dock", 40.9, -73.8, None],  # unknown organisation
        ["Depot Co", "Second depot", "depot", 40.1, -74.2, None],
        ["Depot Co", "Bad depot", "warehouse", 95, "east", None],  # kind, lat and lon all wrong
    ]
    r = upload(client, logistics, "sites", sites)
    assert errors_of(r) == [(3, "organization"), (5, "kind"), (5, "lat"), (5, "lon")]
    assert r.json()["kind"] == "sites" and r.json()["error_count"] == 4
    assert "nothing was imported" in r.json()["detail"]
    assert row_counts(engine) == before

    stock = [
        ["site", "sku", "quantity", "lot_code", "expires_at"],
        ["Central depot", "N95", 10, None, None],
        ["Central depot", "MASKS", 0, None, "2030-01-01"],  # unknown SKU, quantity 0, no UTC offset
        ["North dock", "N95", 5, None, None],  # not a depot
    ]
    r = upload(client, logistics, "inventory", stock)
    assert errors_of(r) == [(3, "expires_at"), (3, "quantity"), (3, "sku"), (4, "site")]
    assert row_counts(engine) == before


def test_a_request_file_with_one_bad_line_writes_no_request(
    client: TestClient, engine: Engine, admin: Actor, logistics: Actor
) -> None:
    load_catalog(client, admin, logistics)
    before = row_counts(engine)
    lines = [
        ["request_key", "organization", "site", "sku", "quantity", "priority", "needed_by"],
        ["1", "North General", "North dock", "N95", 10, "critical", None],
        ["2", "South Food Hub", "South hub", "N95", 10, None, None],
        ["2", "South Food Hub", "South hub", "GLOVES", 5, "urgent", "2001-01-01T00:00:00Z"],  # bad priority
        ["3", "North General", "South hub", "N95", 1, None, None],  # another organisation's site
        ["1", "South Food Hub", "North dock", "GLOVES", 1, None, None],  # organisation differs in request 1
        ["4", "North General", "North dock", "N95", 1, None, "2001-01-01T00:00:00Z"],  # in the past
    ]
    r = upload(client, logistics, "requests", lines)
    assert errors_of(r) == [(4, "priority"), (5, "site"), (6, "organization"), (7, "needed_by")]
    assert "differs from row 2" in r.json()["errors"][2]["message"]
    assert row_counts(engine) == before


def test_file_level_problems(client: TestClient, engine: Engine, admin: Actor) -> None:
    before = row_counts(engine)
    r = upload(client, admin, "organizations", [["name", "kind", "colour"], ["X", "hospital", "red"]])
    assert errors_of(r) == [(1, "colour"), (1, "region")]
    r = upload(client, admin, "organizations", [["name", "kind", "region"]])
    assert errors_of(r) == [(None, None)] and "no data rows" in r.json()["errors"][0]["message"]
    r = upload(client, admin, "organizations", [["name", "Name", "kind", "region"], ["a", "b", "clinic", "x"]])
    assert errors_of(r) == [(1, "name")]
    bad_bytes = {"file": ("o.csv", "name,kind,region\nCafé,clinic,x\n".encode("latin-1"), "text/csv")}
    r = client.post("/v1/imports/organizations", files=bad_bytes, headers=admin.headers)
    assert errors_of(r) == [(None, None)] and "UTF-8" in r.json()["errors"][0]["message"]
    r = client.post(
        "/v1/imports/organizations",
        files={"file": ("o.xlsx", b"PK\x03\x04broken", XLSX_MEDIA_TYPE)},
        headers=admin.headers,
    )
    assert errors_of(r) == [(None, None)] and "XLSX" in r.json()["errors"][0]["message"]
    r = client.post("/v1/imports/organizations", json=[{"name": "x"}], headers=admin.headers)
    assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/v1/imports/organizations", files={"upload": ("o.csv", b"a", "text/csv")}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"
    assert row_counts(engine) == before

    # A raw text/csv body works too, with blank lines, a BOM and an export's formula guard.
    body = "\ufeffname,kind,region\n\n'=Plus Clinic,clinic,north\n".encode()
    r = client.post("/v1/imports/organizations", content=body, headers=admin.headers | {"Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json()["rows"] == 1
    assert [o["name"] for o in listing(client, admin, "/v1/organizations")] == ["=Plus Clinic"]


def test_names_ids_and_ambiguity(client: TestClient, admin: Actor, logistics: Actor) -> None:
    load_catalog(client, admin, logistics)
    orgs = {o["name"]: o["id"] for o in listing(client, admin, "/v1/organizations")}
    twin = [SITES[0], [str(orgs["Depot Co"]), "Central depot", "depot", 41.0, -74.0, None]]  # by id, same name
    assert imported(client, logistics, "sites", twin)["created"] == 1
    r = upload(client, logistics, "inventory", [["site", "sku", "quantity"], ["Central depot", "N95", 1]])
    assert errors_of(r) == [(2, "site")] and "give the site's id" in r.json()["errors"][0]["message"]
    r = upload(client, logistics, "inventory", [["site", "sku", "quantity"], ["999999", "N95", 1]])
    assert errors_of(r) == [(2, "site")]


def test_item_substitutes_name_rows_before_and_after(client: TestClient, engine: Engine, logistics: Actor) -> None:
    before = row_counts(engine)
    rows = [
        ["sku", "name", "category", "substitutes"],
        ["A", "a", "ppe", "B:0.5; C"],
        ["B", "b", "ppe", "A"],
        ["C", "c", "unknown-category", None],  # fails, so A's reference to it fails too
        ["D", "d", "ppe", "Z:1"],  # names nothing
        ["E", "e", "ppe", "A:-1"],  # negative penalty
        ["A", "again", "ppe", None],  # duplicate SKU
    ]
    r = upload(client, logistics, "items", rows)
    assert errors_of(r) == [(2, "substitutes"), (4, "category"), (5, "substitutes"), (6, "substitutes"), (7, "sku")]
    messages = {e["row"]: e["message"] for e in r.json()["errors"]}
    assert "row 4" in messages[2] and "[0].penalty" in messages[6]
    assert row_counts(engine) == before


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_then_import_into_an_empty_database(
    client: TestClient, engine: Engine, factory: Factory, admin: Actor, logistics: Actor, fmt: str
) -> None:
    load_catalog(client, admin, logistics)
    imported(client, admin, "organizations", [["name", "kind", "region"], ["-Minus Clinic", "clinic", "east"]])
    exported = {}
    for kind in ("organizations", "sites", "items"):
        r = client.get(f"/v1/exports/{kind}", params={"format": fmt}, headers=logistics.headers)
        assert r.status_code == 200 and f'{kind}.{fmt}"' in r.headers["content-disposition"]
        exported[kind] = r.content

    def rows(kind: str) -> list[str]:
        """Everything but ids and timestamps; a site's owner and an item's substitutes by name."""
        org_names = {o["id"]: o["name"] for o in listing(client, new_admin, "/v1/organizations")}
        out = []
        for row in listing(client, new_admin, f"/v1/{kind}"):
            row["organization_id"] = org_names.get(row.get("organization_id"))
            row["substitutes"] = [(s["sku"], s["penalty"]) for s in row.get("substitutes", [])]
            out.append(repr(sorted((k, v) for k, v in row.items() if k not in {"id", "created_at", "updated_at"})))
        return sorted(out)

    new_admin = admin
    original = {kind: rows(kind) for kind in exported}
    _empty_tables(engine)
    new_admin, new_logistics = factory.actor("admin"), factory.actor("logistics")
    ctype = XLSX_MEDIA_TYPE if fmt == "xlsx" else "text/csv"
    for kind, actor in (("organizations", new_admin), ("sites", new_logistics), ("items", new_logistics)):
        r = client.post(f"/v1/imports/{kind}", content=exported[kind], headers=actor.headers | {"Content-Type": ctype})
        assert r.status_code == 201, r.text
    assert {kind: rows(kind) for kind in exported} == original
    names = [o["name"] for o in listing(client, new_admin, "/v1/organizations")]
    assert "-Minus Clinic" in names  # the CSV formula guard came off again


def test_operational_exports(client: TestClient, engine: Engine, admin: Actor, logistics: Actor) -> None:
    from tests.test_reports import _shipment

    load_catalog(client, admin, logistics)
    imported(
        client, logistics, "inventory", [["site", "sku", "quantity", "lot_code"], ["Central depot", "N95", 40, "=L"]]
    )
    imported(
        client,
        logistics,
        "requests",
        [["request_key", "organization", "site", "sku", "quantity"], ["k", "North General", "North dock", "N95", 7]],
    )
    sites = {s["name"]: s["id"] for s in listing(client, admin, "/v1/sites")}
    with Session(engine) as s:
        from app.organizations.models import Organization
        from app.requests.models import RequestLine
        from app.sites.models import Site

        line = s.exec(select(RequestLine)).one()
        depot, dock = s.get(Site, sites["Central depot"]), s.get(Site, sites["North dock"])
        hospital = s.get(Organization, dock.organization_id)  # type: ignore[union-attr]
    lot_id = listing(client, logistics, "/v1/inventory/lots")[0]["id"]
    shipped = [{"request_line": line, "quantity": 7, "lot_id": lot_id}]
    _shipment(engine, depot, dock, hospital, "dispatched", shipped)  # type: ignore[arg-type]  # rows written directly

    def table(path: str, **params: Any) -> list[dict[str, str]]:
        r = client.get(path, params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        return list(csv.DictReader(io.StringIO(r.text)))

    inventory = table("/v1/exports/inventory")
    assert [(r["site"], r["sku"], r["quantity"], r["available"], r["lot_code"]) for r in inventory] == [
        ("Central depot", "N95", "40", "40", "'=L")
    ]
    requests = table("/v1/exports/requests")
    assert [(r["organization"], r["site"], r["sku"], r["quantity"], r["status"]) for r in requests] == [
        ("North General", "North dock", "N95", "7", "open")
    ]
    shipments = table("/v1/exports/shipments")
    assert [(r["status"], r["origin_site"], r["destination_organization"], r["quantity"]) for r in shipments] == [
        ("dispatched", "Central depot", "North General", "7")
    ]
    assert table("/v1/exports/plans")[0]["quantity"] == "7"
    gap = table("/v1/exports/reports/gap", group_by="coalition")
    assert [(r["region"], r["item_sku"], r["requested"], r["available"], r["gap"]) for r in gap] == [
        ("", "N95", "7", "40", "0")
    ]
    r = client.get("/v1/exports/reports/gap", params={"group_by": "priority"}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "group_by"
    x = client.get("/v1/exports/pledges", params={"format": "xlsx"}, headers=admin.headers)
    header = next(openpyxl.load_workbook(io.BytesIO(x.content), read_only=True).active.iter_rows(values_only=True))
    assert header[:4] == ("id", "organization", "site", "sku")


def test_who_may_import_and_export(client: TestClient, factory: Factory) -> None:
    importers = {
        "organizations": {"admin"},
        "items": {"admin", "logistics"},
        "sites": {"admin", "logistics"},
        "inventory": {"logistics"},
        "requests": {"logistics"},
        "pledges": {"logistics"},
    }
    actors = {role: factory.actor(role) for role in ("admin", "logistics", "requester", "donor", "driver")}
    for kind, allowed in importers.items():
        for role, actor in actors.items():
            r = upload(client, actor, kind, [["x"], ["1"]])
            assert r.status_code == (422 if role in allowed else 403), (kind, role, r.status_code)
    for role, actor in actors.items():
        for path in ("/v1/exports/items", "/v1/exports/reports/gap"):
            expected = 200 if role in ("admin", "logistics") else 403
            assert client.get(path, headers=actor.headers).status_code == expected, (role, path)


def test_command_line_import_and_export(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CRISIS_DATABASE_URL")}
    env |= {"CRISIS_DATA_DIR": str(tmp_path / "data"), "CRISIS_EMBEDDED_WORKER": "off"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    assert cli("db", "upgrade").returncode == 0
    good, bad = tmp_path / "orgs.csv", tmp_path / "bad.csv"
    good.write_bytes(spreadsheet("csv", ORGS)[0])
    bad.write_bytes(spreadsheet("csv", ORGS + [["Broken", "castle", "north", 99]])[0])

    failed = cli("import", "organizations", str(bad))
    assert failed.returncode == 1, failed.stderr
    assert "nothing was imported" in failed.stderr and "equity_weight" in failed.stderr and "│ 6" in failed.stderr
    done = cli("import", "organizations", str(good))
    assert done.returncode == 0, done.stderr
    assert "4 organizations created" in done.stdout and "checking and writing" in done.stderr

    out = tmp_path / "orgs.xlsx"
    assert cli("export", "organizations", "--format", "xlsx", "-o", str(out)).returncode == 0
    sheet = openpyxl.load_workbook(out, read_only=True).active
    assert [r[1] for r in sheet.iter_rows(min_row=2, values_only=True)] == [row[0] for row in ORGS[1:]]
    printed = cli("export", "organizations")
    assert printed.returncode == 0 and printed.stdout.splitlines()[0].startswith("id,name,kind,region")
