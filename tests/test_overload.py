"""One API process under more concurrent clients than it has pooled connections keeps answering.

Regression: with ~60+ concurrent requests every worker thread could block waiting for a pooled
connection while the requests holding connections waited for a thread (a stall until the pool's
30 s timeout). Requests now queue on the event loop first (DatabaseConcurrencyMiddleware).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.db import make_engine, transaction
from app.keys import service as keys
from app.keys.models import ApiKeyCreate
from app.migrate import upgrade
from app.principal import SYSTEM
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.procs import Processes

CLIENTS = 100


@pytest.mark.postgres
def test_one_process_serves_100_concurrent_clients(pg_base_url: str, tmp_path: Path) -> None:
    url = _create_pg_database(pg_base_url)
    try:
        upgrade(url)
        engine = make_engine(url)
        with transaction(engine) as session:
            _, secret = keys.create_key(session, actor=SYSTEM, data=ApiKeyCreate(name="load", role="logistics"))
        engine.dispose()
        limits_off = {
            "CRISIS_RATE_LIMIT_READS_PER_MINUTE": "0",
            "CRISIS_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        }
        with Processes(url, tmp_path, env=limits_off) as procs:
            api = procs.start_api()
            headers = {"Authorization": f"Bearer {secret}"}

            def fetch(_: int) -> int:
                with httpx.Client(base_url=api.base_url, timeout=25.0) as client:
                    return sum(client.get("/v1/organizations", headers=headers).status_code == 200 for _ in range(3))

            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                answered = list(pool.map(fetch, range(CLIENTS)))
        assert answered == [3] * CLIENTS
    finally:
        _drop_pg_database(pg_base_url, url)
