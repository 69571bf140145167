"""The dashboard in a real browser, through the main flows, asserting on what the page shows.

One server for the module (demo coalition, embedded worker). The main flow is one test because its
steps build on each other: a requester posts a request, logistics runs the allocation and watches it
finish, reviews, edits and approves the plan and assigns a driver, the driver dispatches and delivers.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 60_000


def sign_in(page: Any, server: Server, label: str) -> None:
    page.goto("/login")
    page.get_by_label("API key").fill(server.key(label))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.get_by_test_id("role").inner_text().lower() == server.keys[label]["role"]


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    page.wait_for_load_state()


def shot(page: Any, artifacts: Path, name: str, *, full_page: bool = True) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def api(server: Server, label: str, path: str) -> Any:
    response = httpx.get(server.base_url + path, headers={"Authorization": f"Bearer {server.key(label)}"})
    response.raise_for_status()
    return response.json()


def test_main_flow(new_page: Any, server: Server, artifacts: Path) -> None:
    pause = Path(server.data_dir) / "solve-pause"

    # --- requester: an invalid quantity is refused next to the field, then a valid request is posted
    requester = new_page()
    sign_in(requester, server, "requester")
    nav(requester, "New request")
    n95 = requester.locator("#f-lines-0-item_id option", has_text=re.compile(r"^N95 ")).get_attribute("value")
    requester.locator("#f-lines-0-item_id").select_option(n95)
    requester.locator("#f-lines-0-quantity").fill("-5")
    requester.locator("#f-lines-0-priority").select_option("critical")
    requester.get_by_role("button", name="Submit request").click()
    error = requester.locator("#f-lines-0-quantity-error")
    assert "greater than 0" in error.inner_text()
    assert requester.locator("#f-lines-0-quantity").get_attribute("aria-invalid") == "true"
    assert requester.locator("#f-lines-0-quantity").input_value() == "-5"  # what was typed is kept
    shot(requester, artifacts, "requester-form-error")

    requester.locator("#f-lines-0-quantity").fill("120")
    requester.locator("#f-justification").fill("ICU surge, night shift")
    requester.get_by_role("button", name="Submit request").click()
    flash = requester.locator(".flash-ok")
    match = re.search(r"Request (\d+) submitted", flash.inner_text())
    assert match, flash.inner_text()
    request_id = int(match.group(1))
    card = requester.get_by_test_id(f"request-{request_id}")
    assert "N95" in card.inner_text() and "120" in card.inner_text() and "open" in card.inner_text()
    shot(requester, artifacts, "requester-requests")

    # --- logistics: gaps and map, then a run watched live until it finishes
    logistics = new_page()
    sign_in(logistics, server, "logistics")
    assert logistics.url.endswith("/gaps")
    assert logistics.get_by_test_id("heatmap").locator("td").count() > 0
    assert "N95" in logistics.get_by_test_id("heatmap").inner_text()
    shot(logistics, artifacts, "logistics-gaps")
    nav(logistics, "Map")
    assert logistics.get_by_test_id("map").locator(".site-depot").count() == 4
    shot(logistics, artifacts, "logistics-map-before")

    nav(logistics, "Runs")
    logistics.get_by_role("button", name="Trigger run").click()
    status = logistics.get_by_test_id("run-status")
    # The worker holds the run at the test hook (CRISIS_TEST_SOLVE_PAUSE_FILE) until the file is removed:
    # the page must show it running without a reload, then finishing.
    deadline = time.monotonic() + 30
    while not pause.exists():
        assert time.monotonic() < deadline, "the worker never claimed the run"
        time.sleep(0.1)
    expect(logistics.get_by_test_id("run-stage")).to_have_text("paused", timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "running"
    shot(logistics, artifacts, "logistics-run-running", full_page=False)
    pause.unlink()
    expect(status).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    assert logistics.get_by_test_id("run-stage").inner_text() == "done"
    assert logistics.locator("#run-bar").evaluate("el => el.value") == 100
    expect(logistics.get_by_role("button", name="Cancel run")).to_be_hidden()
    assert logistics.locator('[data-run-field="finished_at"]').inner_text().endswith("UTC")
    shot(logistics, artifacts, "logistics-run-done", full_page=False)

    # --- plan review: KPIs and chart against the greedy baseline, an edit, then approval
    logistics.get_by_role("link", name="Review the plan").click()
    assert logistics.get_by_test_id("plan-state").inner_text() == "proposed"
    assert logistics.locator("figure.chart rect.bar.series-0").count() >= 3  # this plan, per tier
    assert logistics.locator("figure.chart rect.bar.series-1").count() >= 3  # greedy baseline, per tier
    assert logistics.get_by_test_id("unmet").locator("tbody tr").count() > 0
    shot(logistics, artifacts, "logistics-plan", full_page=False)
    # docs/screenshot-logistics.png is this shot, copied by hand when the page changes (tests never
    # write to tracked files).

    first = logistics.get_by_test_id("plan-lines").locator("tbody tr").first
    line_id = int(first.get_attribute("id").removeprefix("line-"))
    quantity = int(first.locator("input.qty").input_value())
    new_quantity = max(1, quantity - 1)
    first.locator("input.qty").fill(str(new_quantity))
    first.get_by_role("button", name="Save").click()
    assert f"Line {line_id} set to {new_quantity} units" in logistics.locator(".flash-ok").inner_text()
    edited = logistics.locator(f"#line-{line_id}")
    assert "manual" in edited.inner_text()
    assert edited.locator("input.qty").input_value() == str(new_quantity)

    logistics.get_by_role("button", name="Approve plan").click()
    assert logistics.url.split("#")[0].endswith("/shipments")
    assert "Plan approved" in logistics.locator(".flash-ok").inner_text()
    planned_column = logistics.locator(".column-planned")
    assert planned_column.locator("article.shipment").count() > 0

    # Assign a driver to a shipment bound for the requester's hospital when the plan has one.
    run_id = api(server, "logistics", "/v1/allocation-runs?limit=500")["items"][-1]["id"]
    plan = api(server, "logistics", f"/v1/allocation-runs/{run_id}/plan")
    requester_org = server.keys["requester"]["organization_id"]
    shipments = [api(server, "logistics", f"/v1/shipments/{i}") for i in plan["shipment_ids"]]
    ours = [s for s in shipments if s["destination_organization_id"] == requester_org]
    shipment = (ours or shipments)[0]
    sid = shipment["id"]
    card = logistics.get_by_test_id(f"shipment-{sid}")
    card.get_by_label("Assign driver").select_option(label=server.keys["driver"]["name"])
    card.get_by_role("button", name="Assign").click()
    assert f"Shipment {sid}: driver assigned" in logistics.locator(".flash-ok").inner_text()
    assert logistics.get_by_test_id(f"driver-{sid}").inner_text() == server.keys["driver"]["name"]
    shot(logistics, artifacts, "logistics-shipments", full_page=False)
    nav(logistics, "Map")
    assert logistics.get_by_test_id("map").locator("line.flow").count() > 0
    shot(logistics, artifacts, "logistics-map")

    # --- driver: dispatch, then deliver with a short first line
    driver = new_page()
    sign_in(driver, server, "driver")
    card = driver.get_by_test_id(f"shipment-{sid}")
    card.get_by_role("button", name="Mark dispatched").click()
    assert f"Shipment {sid} is now dispatched" in driver.locator(".flash-ok").inner_text()
    card = driver.get_by_test_id(f"shipment-{sid}")
    assert "dispatched" in card.locator("h2 .badge").inner_text()
    assert card.get_by_role("button", name="Mark in transit").count() == 1
    assert card.get_by_role("button", name="Mark failed").count() == 1
    shot(driver, artifacts, "driver-dispatched")

    line = shipment["lines"][0]
    received = max(0, line["quantity"] - 1)
    card.locator(f"#received-{line['id']}-input").fill(str(received))
    if received < line["quantity"]:
        card.locator(f"#shortfall-{line['id']}-input").select_option("damaged")
    card.get_by_label("Received by").fill("Night shift dock")
    card.get_by_role("button", name="Mark delivered").click()
    assert f"Shipment {sid} is now delivered" in driver.locator(".flash-ok").inner_text()
    done = driver.get_by_test_id(f"shipment-{sid}")
    assert "delivered" in done.locator(".badge").first.inner_text()
    assert done.get_by_test_id(f"received-{line['id']}").inner_text().startswith(f"{received:,}")
    assert "Night shift dock" in done.inner_text()
    shot(driver, artifacts, "driver-delivered")

    # --- the requester sees the delivery (when it went to them)
    if ours:
        requester.goto("/requests")
        delivered = requester.locator(f"#shipment-{sid}")
        assert "delivered" in delivered.inner_text()
        shot(requester, artifacts, "requester-deliveries")

    for page in (requester, logistics, driver):
        assert page.js_errors == [], page.js_errors  # includes Content-Security-Policy violations


def test_donor_sees_pledges_and_form_errors(new_page: Any, server: Server, artifacts: Path) -> None:
    donor = new_page()
    sign_in(donor, server, "donor")
    assert donor.url.endswith("/pledges")
    assert donor.get_by_test_id("pledges").locator("tbody tr").count() > 0
    assert donor.get_by_test_id("impact").locator("tbody tr").count() > 0
    donor.locator("#f-item_id").select_option(index=1)
    donor.locator("#f-quantity").fill("0")
    donor.get_by_role("button", name="Pledge").click()
    assert "greater than 0" in donor.locator("#f-quantity-error").inner_text()
    donor.locator("#f-quantity").fill("500")
    donor.get_by_role("button", name="Pledge").click()
    assert re.search(r"Pledge \d+ recorded", donor.locator(".flash-ok").inner_text())
    shot(donor, artifacts, "donor-pledges")
    assert donor.js_errors == []


def test_admin_overview_and_role_limits(new_page: Any, server: Server, artifacts: Path) -> None:
    admin = new_page()
    sign_in(admin, server, "admin")
    assert admin.url.endswith("/admin")
    assert admin.get_by_test_id("orgs").locator("tbody tr").count() >= 40
    assert admin.get_by_test_id("keys").locator("tbody tr").count() >= 6
    shot(admin, artifacts, "admin-overview")
    admin.goto("/runs")
    assert admin.get_by_role("button", name="Trigger run").count() == 0  # admin reads runs, never triggers

    requester = new_page()
    sign_in(requester, server, "requester-2")
    response = requester.goto("/gaps")
    assert response.status == 403
    assert "Not allowed" in requester.locator("h1").inner_text()


def test_sign_in_errors_and_sign_out(new_page: Any, server: Server) -> None:
    page = new_page()
    page.goto("/gaps")
    assert "/login?next=" in page.url  # not signed in: sent to the sign-in page, and back after
    page.get_by_label("API key").fill("cs_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert "unknown or has been revoked" in page.locator("#api_key-error").inner_text()
    page.get_by_label("API key").fill(server.key("logistics"))
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/gaps")
    cookie = next(c for c in page.context.cookies() if c["name"] == "cs_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert server.key("logistics") not in cookie["value"]
    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/login")
    page.goto("/gaps")
    assert "/login" in page.url
