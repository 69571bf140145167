"""Pure status rules for request lines and headers (SPEC §2). No database, no web: the workflow
(allocation approval, shipment events) recomputes statuses with these after changing quantities."""

from __future__ import annotations

from collections.abc import Iterable

# A line in one of these states has stock committed to it or received; only `open` lines may be edited or cancelled.
PROGRESSED = frozenset({"partially_allocated", "allocated", "partially_fulfilled", "fulfilled"})


def line_status(quantity: int, reserved: int, in_transit: int, delivered: int, cancelled: bool) -> str:
    """A line's status, derived from its quantities.

    remaining = quantity − (reserved + in_transit + delivered). In order:
    - `cancelled` when the line was cancelled (a cancelled line never comes back);
    - `fulfilled` when everything asked for was delivered;
    - `partially_fulfilled` when some units were delivered (the rest may be reserved, moving or unmet);
    - `open` when nothing is reserved, moving or delivered — including after a failed or returned
      shipment gave its quantity back to remaining;
    - `allocated` when reserved + in transit cover the whole quantity (remaining = 0);
    - `partially_allocated` otherwise (some units committed, remaining > 0).
    """
    if cancelled:
        return "cancelled"
    if delivered >= quantity:
        return "fulfilled"
    if delivered > 0:
        return "partially_fulfilled"
    committed = reserved + in_transit
    if committed == 0:
        return "open"
    if committed >= quantity:
        return "allocated"
    return "partially_allocated"


def summarize_status(line_statuses: Iterable[str]) -> str:
    """The request header's status, summarizing its lines' statuses.

    Cancelled lines are ignored unless every line is cancelled. Among the other lines:
    - all `fulfilled` → `fulfilled`;
    - any delivery (`fulfilled` or `partially_fulfilled`) but not all fulfilled → `partially_fulfilled`;
    - all `open` → `open`;
    - all `allocated` → `allocated`;
    - otherwise (a mix of open, partially allocated and allocated) → `partially_allocated`.
    No lines, or only cancelled lines → `cancelled`.
    """
    active = [s for s in line_statuses if s != "cancelled"]
    if not active:
        return "cancelled"
    kinds = set(active)
    if kinds == {"fulfilled"}:
        return "fulfilled"
    if kinds & {"fulfilled", "partially_fulfilled"}:
        return "partially_fulfilled"
    if kinds == {"open"}:
        return "open"
    if kinds == {"allocated"}:
        return "allocated"
    return "partially_allocated"
