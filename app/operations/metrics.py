"""Prometheus metrics: HTTP requests (per process) and coalition state read from the database at scrape time.

Two kinds of metrics, on purpose:

* **Request metrics** (`crisis_http_*`) live in the API process that served the request. Several API
  processes behind one port (`crisis-supply serve --workers N`) each keep their own; set
  `PROMETHEUS_MULTIPROC_DIR` to an empty directory to have every process of one host write them to
  files that any process's `/metrics` sums (prometheus-client's multiprocess mode). Separate
  containers are scraped separately (one target per replica).
* **Database metrics** (`crisis_allocation_*`, `crisis_stock_*`) are computed from the shared database
  when `/metrics` is scraped, in one short read. They are therefore the same whichever API process
  answers, and include the work of every worker process — including run durations and outcomes,
  which the workers record in `allocation_runs` (started_at, finished_at, status). That is why the
  workers need no metrics endpoint of their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.allocation.models import RUN_STATUSES, AllocationRun
from app.db import utcnow
from app.inventory.models import InventoryLot
from app.items.models import Item

log = logging.getLogger("app.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUN_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled")
# Clients choose the method string; anything else is folded into one label value (bounded cardinality).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> None:
    """Empty the multiprocess directory before the server starts (stale files from earlier runs
    would be summed in forever). Called once by `crisis-supply serve`, never by a worker process."""
    directory = multiprocess_dir()
    if directory is None:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for child in path.glob("*.db"):
        child.unlink(missing_ok=True)


class RequestMetrics:
    """The HTTP metrics of one app. Each app gets its own registry, so tests see only their own app."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "crisis_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "crisis_http_request_duration_seconds",
            "HTTP request latency (until the response is complete) by method, route template and status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        # Also counted in crisis_http_requests_total (status 304); this says how many skipped the app.
        self.poll_cache_hits = Counter(
            "crisis_shipment_poll_cache_hits_total",
            "Shipment polls answered 304 from the in-memory poll cache (app.shipments.poll_cache).",
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route, str(status)).observe(seconds)


class DatabaseCollector(Collector):
    """Queue depth, run outcomes and durations, and stock by item — read at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        # Declared without samples, so registering the collector does not query the database.
        return _empty_families()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("crisis_database_up", "1 when the last scrape could read the database, else 0.")
        try:
            families = _read_families(self.engine)
        except Exception:  # noqa: BLE001  (a scrape must answer even when the database does not)
            log.warning("metrics: database read failed", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _empty_families() -> list[Metric]:
    return [
        GaugeMetricFamily("crisis_database_up", "1 when the last scrape could read the database, else 0."),
        GaugeMetricFamily("crisis_allocation_runs", "Allocation runs by status.", labels=["status"]),
        GaugeMetricFamily(
            "crisis_allocation_queue_oldest_age_seconds", "Age of the oldest queued run (0 when none is queued)."
        ),
        HistogramMetricFamily(
            "crisis_allocation_run_duration_seconds",
            "Duration of finished allocation runs (claim to finish) by outcome.",
            labels=["outcome"],
        ),
        GaugeMetricFamily("crisis_stock_on_hand_units", "On-hand units over all lots, by item SKU.", labels=["sku"]),
        GaugeMetricFamily("crisis_stock_reserved_units", "Reserved units over all lots, by item SKU.", labels=["sku"]),
    ]


def _duration_expression(dialect: str) -> str:
    if dialect == "postgresql":
        return "EXTRACT(EPOCH FROM (finished_at - started_at))"
    return "(julianday(finished_at) - julianday(started_at)) * 86400.0"  # SQLite stores UTC text


def _read_families(engine: Engine) -> list[Metric]:
    runs, oldest, durations, on_hand, reserved = _empty_families()[1:]
    with Session(engine) as session:  # one short read; rolled back (nothing written) on close
        if engine.dialect.name == "postgresql":
            # A slow scrape must not pile up behind itself: give up (crisis_database_up 0) instead.
            session.connection().execute(text("SET LOCAL statement_timeout = 5000"))
        by_status = dict(session.exec(select(AllocationRun.status, func.count()).group_by(AllocationRun.status)).all())
        for status in RUN_STATUSES:
            runs.add_metric([status], by_status.get(status, 0))

        first_queued = session.exec(
            select(func.min(AllocationRun.created_at)).where(AllocationRun.status == "queued")
        ).one()
        oldest.add_metric([], max(0.0, (utcnow() - first_queued).total_seconds()) if first_queued else 0.0)

        _add_durations(session, engine.dialect.name, durations)

        stock = session.exec(
            select(
                Item.sku,
                func.coalesce(func.sum(InventoryLot.on_hand), 0),
                func.coalesce(func.sum(InventoryLot.reserved), 0),
            )
            .select_from(Item)
            .outerjoin(InventoryLot, col(InventoryLot.item_id) == col(Item.id))
            .group_by(Item.sku)
            .order_by(Item.sku)
        ).all()
        for sku, units_on_hand, units_reserved in stock:
            on_hand.add_metric([sku], float(units_on_hand))
            reserved.add_metric([sku], float(units_reserved))
    return [runs, oldest, durations, on_hand, reserved]


def _add_durations(session: Session, dialect: str, family: HistogramMetricFamily) -> None:
    """Cumulative buckets computed in SQL (one aggregate row per outcome, not one row per run)."""
    duration = _duration_expression(dialect)
    bucket_columns = ", ".join(f"SUM(CASE WHEN d <= {le} THEN 1 ELSE 0 END)" for le in RUN_BUCKETS)
    statuses = ", ".join(f"'{s}'" for s in FINISHED_RUN_STATUSES)
    sql = text(
        f"SELECT status, COUNT(*), COALESCE(SUM(d), 0), {bucket_columns} FROM ("  # noqa: S608  (constants only)
        f"  SELECT status, {duration} AS d FROM allocation_runs"
        f"  WHERE status IN ({statuses}) AND started_at IS NOT NULL AND finished_at IS NOT NULL"
        ") AS finished GROUP BY status"
    )
    rows = {row[0]: row[1:] for row in session.connection().execute(sql)}
    for outcome in FINISHED_RUN_STATUSES:
        count, total, *cumulative = rows.get(outcome, (0, 0.0, *([0] * len(RUN_BUCKETS))))
        buckets = [(_le(le), float(n or 0)) for le, n in zip(RUN_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", float(count)))
        family.add_metric([outcome], buckets, float(total or 0.0))


def _le(value: float) -> str:
    return str(float(value))


class Metrics:
    """What an app exposes at /metrics: its request metrics and the database collector."""

    def __init__(self, engine: Engine) -> None:
        self.multiprocess = multiprocess_dir() is not None
        disable_created_metrics()  # the `_created` series double the output and no dashboard uses them
        # In multiprocess mode the values go to files; exposition reads every process's files.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestMetrics(None if self.multiprocess else self.registry)
        if self.multiprocess:
            from prometheus_client import multiprocess

            Path(multiprocess_dir() or "").mkdir(parents=True, exist_ok=True)
            multiprocess.MultiProcessCollector(self.registry)
        else:
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self.registry.register(DatabaseCollector(engine))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
