"""The reference for the polling benchmark (``benchmarks/api.py``): a bare FastAPI app with one
endpoint returning a literal dict — no middleware, no authentication, no database.

Serve it exactly like the API (one uvicorn worker process, same event loop and HTTP parser):
``python -m uvicorn bare_app:app --app-dir benchmarks --port 8001``.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="bare")


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}
