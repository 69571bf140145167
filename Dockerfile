# syntax=docker/dockerfile:1
# crisis-supply: API (`crisis-supply serve`), worker (`crisis-supply worker`) and the one-shot
# migration (`crisis-supply db upgrade`) all run from this one image; docker-compose.yml shows how.
# bookworm pins the PostgreSQL client tools (for `crisis-supply db backup|restore`) at 15, the
# server version docker-compose.yml runs; pg_dump must not be older than the server.

# ---- build: the project and every dependency as wheels --------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY optimizer ./optimizer
COPY migrations ./migrations
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: slim, no compilers, no sources, not root --------------------------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRISIS_DATA_DIR=/data \
    PORT=8000
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 crisis \
    && useradd --system --uid 10001 --gid crisis --home-dir /home/crisis --create-home crisis \
    && mkdir -p /data \
    && chown crisis:crisis /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels crisis-supply
USER crisis:crisis
WORKDIR /home/crisis
VOLUME ["/data"]
EXPOSE 8000
# Liveness only (no database access); /readyz is for load balancers and orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["crisis-supply", "serve", "--host", "0.0.0.0"]
