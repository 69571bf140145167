"""Imports every table so SQLModel.metadata is complete (Alembic and tests rely on it)."""

from app.allocation.models import AllocationRun, Plan, PlanLine
from app.audit.models import AuditEvent
from app.idempotency.models import IdempotencyKey
from app.inventory.models import InventoryLot, InventoryMovement
from app.items.models import Item, ItemSubstitute
from app.keys.models import ApiKey
from app.organizations.models import Organization
from app.pledges.models import Pledge
from app.requests.models import RequestLine, SupplyRequest
from app.shipments.models import ChangeCounter, Shipment, ShipmentEvent, ShipmentLine
from app.sites.models import Site
from app.usage.models import UsageReport

__all__ = [
    "AllocationRun",
    "ChangeCounter",
    "Plan",
    "PlanLine",
    "Shipment",
    "ShipmentEvent",
    "ShipmentLine",
    "ApiKey",
    "AuditEvent",
    "IdempotencyKey",
    "InventoryLot",
    "InventoryMovement",
    "Item",
    "ItemSubstitute",
    "Organization",
    "Pledge",
    "RequestLine",
    "Site",
    "SupplyRequest",
    "UsageReport",
]
