"""SPEC §1's rights table, per route: which roles may call it at all (function level).

Object-level scoping (own organisation, own shipments) is tested separately; here a role listed for
a route must never get 401/403, and a role not listed must get 403. A route missing here fails the test.
"""

from __future__ import annotations

ALL = frozenset({"admin", "logistics", "requester", "donor", "driver"})
ADMIN = frozenset({"admin"})
STAFF = frozenset({"admin", "logistics"})
ORG_READERS = frozenset({"admin", "logistics", "requester", "donor"})  # organisations, keys, items
LOGISTICS = frozenset({"logistics"})
REQUESTER = frozenset({"requester"})
REQUEST_READERS = frozenset({"admin", "logistics", "requester"})

EXPECTED: dict[str, frozenset[str]] = {
    # organisations, API keys: admin write, logistics read, requester/donor own org read
    "GET /v1/organizations": ORG_READERS,
    "POST /v1/organizations": ADMIN,
    "GET /v1/organizations/{organization_id}": ORG_READERS,
    "PATCH /v1/organizations/{organization_id}": ADMIN,
    "PUT /v1/organizations/{organization_id}/equity-weight": STAFF,
    "POST /v1/organizations/{organization_id}/leave": ADMIN,
    "POST /v1/organizations/{organization_id}/join": ADMIN,
    "GET /v1/api-keys": ORG_READERS,
    "POST /v1/api-keys": ADMIN,
    "GET /v1/api-keys/{key_id}": ORG_READERS,
    "POST /v1/api-keys/{key_id}/revoke": ADMIN,
    # sites, items: admin/logistics write; items read by requester/donor; own sites; driver: sites on own shipments
    "GET /v1/sites": ALL,
    "POST /v1/sites": STAFF,
    "GET /v1/sites/{site_id}": ALL,
    "PATCH /v1/sites/{site_id}": STAFF,
    "POST /v1/sites/{site_id}/deactivate": STAFF,
    "POST /v1/sites/{site_id}/activate": STAFF,
    "GET /v1/items": ORG_READERS,
    "POST /v1/items": STAFF,
    "GET /v1/items/{item_id}": ORG_READERS,
    "PATCH /v1/items/{item_id}": STAFF,
    "POST /v1/items/{item_id}/deactivate": STAFF,
    "POST /v1/items/{item_id}/activate": STAFF,
    # requests: admin read, logistics read+cancel, requester own org create/read/edit/cancel
    "GET /v1/requests": REQUEST_READERS,
    "POST /v1/requests": REQUESTER,
    "GET /v1/requests/{request_id}": REQUEST_READERS,
    "PATCH /v1/requests/{request_id}": REQUESTER,
    "POST /v1/requests/{request_id}/cancel": frozenset({"logistics", "requester"}),
    "PATCH /v1/requests/{request_id}/lines/{line_id}": REQUESTER,
    "POST /v1/requests/{request_id}/lines/{line_id}/cancel": frozenset({"logistics", "requester"}),
    # usage reports: admin/logistics read, requester own org create/read
    "GET /v1/usage-reports": REQUEST_READERS,
    "POST /v1/usage-reports": REQUESTER,
    "GET /v1/usage-reports/{report_id}": REQUEST_READERS,
    # inventory lots, ledger: admin read, logistics write
    "GET /v1/inventory/lots": STAFF,
    "GET /v1/inventory/lots/{lot_id}": STAFF,
    "GET /v1/inventory/movements": STAFF,
    "GET /v1/inventory/movements/{movement_id}": STAFF,
    "POST /v1/inventory/movements": LOGISTICS,
    # pledges: admin read; logistics read/confirm/receive/cancel; donor own org create/read/cancel
    "GET /v1/pledges": frozenset({"admin", "logistics", "donor"}),
    "POST /v1/pledges": frozenset({"donor"}),
    "GET /v1/pledges/{pledge_id}": frozenset({"admin", "logistics", "donor"}),
    "POST /v1/pledges/{pledge_id}/confirm": LOGISTICS,
    "POST /v1/pledges/{pledge_id}/receive": LOGISTICS,
    "POST /v1/pledges/{pledge_id}/cancel": frozenset({"logistics", "donor"}),
    # allocation runs and plans: admin read, logistics write
    "GET /v1/allocation-runs": STAFF,
    "POST /v1/allocation-runs": LOGISTICS,
    "GET /v1/allocation-runs/{run_id}": STAFF,
    "GET /v1/allocation-runs/{run_id}/problem": STAFF,
    "GET /v1/allocation-runs/{run_id}/events": STAFF,
    "POST /v1/allocation-runs/{run_id}/cancel": LOGISTICS,
    "GET /v1/allocation-runs/{run_id}/plan": STAFF,
    "PATCH /v1/allocation-runs/{run_id}/plan/lines/{line_id}": LOGISTICS,
    "DELETE /v1/allocation-runs/{run_id}/plan/lines/{line_id}": LOGISTICS,
    "POST /v1/allocation-runs/{run_id}/plan/approve": LOGISTICS,
    "POST /v1/allocation-runs/{run_id}/plan/reject": LOGISTICS,
    "GET /v1/allocation-runs/{run_id}/plan/pick-list.csv": STAFF,
    "GET /v1/allocation-runs/{run_id}/plan/manifest.csv": STAFF,
    # shipments: admin read; logistics read/assign/all events; requester to own org; donor from own
    # pledges; driver assigned ones (read + report events) — scoping is object level (404)
    "GET /v1/shipments": ALL,
    "GET /v1/shipments/{shipment_id}": ALL,
    "GET /v1/shipments/{shipment_id}/events": ALL,
    "POST /v1/shipments/{shipment_id}/events": frozenset({"logistics", "driver"}),
    "POST /v1/shipments/{shipment_id}/assign": LOGISTICS,
    # reports: admin/logistics all; requester own org; donor own pledge impact
    "GET /v1/reports/gap": REQUEST_READERS,
    "GET /v1/reports/days-of-supply": REQUEST_READERS,
    "GET /v1/reports/request-ageing": REQUEST_READERS,
    "GET /v1/reports/donor-impact": frozenset({"admin", "logistics", "donor"}),
    # imports follow the write rights of each record kind; exports are staff-only
    "POST /v1/imports/organizations": ADMIN,
    "POST /v1/imports/sites": STAFF,
    "POST /v1/imports/items": STAFF,
    "POST /v1/imports/inventory": LOGISTICS,
    "POST /v1/imports/requests": LOGISTICS,
    "POST /v1/imports/pledges": LOGISTICS,
    "GET /v1/exports/{kind}": STAFF,
    "GET /v1/exports/reports/{report}": STAFF,
    # audit events: admin read
    "GET /v1/audit-events": ADMIN,
}
