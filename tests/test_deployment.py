"""Deployment (issue 6 item 5): no Docker engine runs here, so test what can be tested — the compose
file and the Dockerfile say what we mean, and the commands they run work outside Docker: the
one-shot migration, the API (the image's CMD, checked by the image's HEALTHCHECK command), the
workers, and several API processes sharing their request metrics."""

from __future__ import annotations

import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops_support import (
    CLI,
    REPO,
    background,
    cli_env,
    empty_database,
    free_port,
    http_get,
    logs_on_failure,
    run_cli,
    wait_until,
)

APP_SERVICES = {"migrate", "api1", "api2", "worker1", "worker2"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _healthcheck_command() -> list[str]:
    (args,) = [rest for word, rest in _dockerfile() if word == "HEALTHCHECK"]
    return json.loads(args[args.index("CMD ") + 4 :])


def _image_cmd() -> list[str]:
    return json.loads([rest for word, rest in _dockerfile() if word == "CMD"][-1])


def test_compose_runs_postgres_a_migration_two_apis_and_two_workers() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"db"} | APP_SERVICES
    db = services["db"]
    assert db["image"] == "postgres:15"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        service = services[name]
        url = service["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql://crisis:") and url.endswith("@db:5432/crisis"), name
        assert "${POSTGRES_PASSWORD" in url, f"{name}: the password comes from the environment"
        assert service["command"][0] == "crisis-supply"
        if name != "migrate":
            assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    commands = {name: services[name]["command"][1:] for name in APP_SERVICES}
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["api1"] == commands["api2"] == ["serve", "--host", "0.0.0.0"]
    assert commands["worker1"] == commands["worker2"] == ["worker"]
    assert {services[n]["ports"][0].split(":")[1] for n in ("api1", "api2")} == {"8000"}
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")  # required, no default


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    instructions = _dockerfile()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages)
    last_stage = instructions[max(i for i, (word, _) in enumerate(instructions) if word == "FROM") :]
    users = [rest for word, rest in last_stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any("from=build" in rest for _, rest in last_stage)  # takes the built wheels, not the sources
    assert "/healthz" in " ".join(_healthcheck_command())
    assert _image_cmd() == ["crisis-supply", "serve", "--host", "0.0.0.0"]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", "tests"} <= set(ignored)


def test_every_command_the_deployment_runs_is_a_real_subcommand(tmp_path: Path) -> None:
    commands = [services["command"] for services in _compose()["services"].values() if "command" in services]
    commands.append(_image_cmd())
    env = cli_env(tmp_path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: run_cli([*c[1:], "--help"], env), commands))
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"{shlex.join(command)} --help: {result.stderr}"
        assert "Usage:" in result.stdout


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path.name}: not a JSON log line: {line!r}") from None
    return parsed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_containers_commands_work_outside_docker(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with logs_on_failure(tmp_path / "api.log", tmp_path / "worker.log"):
        services = _compose()["services"]
        with empty_database(backend, tmp_path, request) as url:
            port = free_port()
            env = cli_env(tmp_path / "data", url, PORT=str(port), CRISIS_EMBEDDED_WORKER="off")
            migrate = run_cli(services["migrate"]["command"][1:], env)
            assert migrate.returncode == 0, migrate.stderr

            with (
                background([CLI, *_image_cmd()[1:]], env, tmp_path / "api.log") as api,
                background([CLI, *services["worker1"]["command"][1:]], env, tmp_path / "worker.log") as worker,
            ):
                healthcheck = [sys.executable, *_healthcheck_command()[1:]]

                def healthy() -> bool:
                    assert api.poll() is None, (tmp_path / "api.log").read_text()
                    return run_probe(healthcheck, env) == 0

                wait_until(healthy, 60, "the image's HEALTHCHECK command to pass")
                base = f"http://127.0.0.1:{port}"
                assert http_get(base + "/readyz") == (200, '{"status":"ready"}')
                status, metrics = http_get(base + "/metrics")
                assert status == 200 and "crisis_database_up 1.0" in metrics
                wait_until(lambda: "started" in (tmp_path / "worker.log").read_text(), 30, "the worker to start")
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()

            api_lines = _json_lines(tmp_path / "api.log")  # uvicorn's own messages included
            requests = [line for line in api_lines if line.get("event") == "request"]
            assert {"/healthz", "/readyz", "/metrics"} <= {line["path"] for line in requests}
            assert all(len(str(line["request_id"])) == 32 for line in requests)
            assert any(line.get("logger", "").startswith("uvicorn") for line in api_lines)
            assert any("started" in str(line.get("event")) for line in _json_lines(tmp_path / "worker.log"))


def run_probe(command: list[str], env: dict[str, str]) -> int:
    import subprocess

    return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode


def test_several_api_processes_share_request_metrics_through_the_multiprocess_dir(tmp_path: Path) -> None:
    """`serve --workers 2` with PROMETHEUS_MULTIPROC_DIR: whichever process answers /metrics counts the
    requests of both; stale files from an earlier run are cleared at start."""
    data, metrics_dir = tmp_path / "data", tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")
    port = free_port()
    env = cli_env(data, PORT=str(port), CRISIS_EMBEDDED_WORKER="off", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    assert run_cli(["db", "upgrade"], env).returncode == 0
    with background([CLI, "serve", "--workers", "2"], env, tmp_path / "api.log") as api:
        base = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            return http_get(base + "/healthz", timeout=2)[0] == 200 if _port_open(port) else False

        wait_until(answering, 60, "two API processes to start")
        wait_until(lambda: len(_started_workers(tmp_path / "api.log")) >= 2, 30, "both processes to start")
        for _ in range(29):
            assert http_get(base + "/healthz")[0] == 200
        totals = set()
        for _ in range(6):  # several scrapes, answered by either process: the same total every time
            totals.add(_healthz_requests(http_get(base + "/metrics")[1]))
        assert totals == {30.0}
        assert not (metrics_dir / "counter_99999.db").exists()


def _healthz_requests(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "crisis_http_requests_total" and sample.labels["route"] == "/healthz"
    )


def _started_workers(log: Path) -> set[int]:
    return {line["pid"] for line in _json_lines(log) if "Application startup complete" in str(line.get("event"))}


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
