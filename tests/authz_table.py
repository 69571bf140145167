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
    # audit events: admin read
    "GET /v1/audit-events": ADMIN,
}
