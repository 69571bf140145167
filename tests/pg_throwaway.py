"""A throwaway PostgreSQL cluster for fault tests: its own data directory, port and socket directory.

Fault tests stop and restart PostgreSQL; they must never touch the shared server on 5432. This helper
runs the Debian server binaries (`/usr/lib/postgresql/<version>/bin`, or `$CRISIS_PG_BINDIR`):
`initdb` into a fresh temporary directory, `pg_ctl start/stop` on a free loopback port with the socket
in that directory. initdb refuses to run as root, so as root every command runs as the `postgres` user
(`runuser -u postgres --`) and the directory belongs to it.

Teardown always ends the cluster (`pg_ctl stop -m immediate`, then SIGKILL of the postmaster's PID
from `postmaster.pid` if pg_ctl could not) and removes the directory — from `close()`, the `with`
block, or at interpreter exit when a test run is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.procs import free_port

SERVICE_USER = "postgres"
START_TIMEOUT_S = 60

_OPEN: set[ThrowawayPostgres] = set()


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries (initdb, pg_ctl, postgres), or None."""
    env = os.environ.get("CRISIS_PG_BINDIR")
    candidates = [Path(env)] if env else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    candidates += versions
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot be made here (None when it can)."""
    if server_bindir() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/<version>/bin; Debian: postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root and there is no '{SERVICE_USER}' user to run initdb as"
    return None


class ThrowawayPostgres:
    """One private PostgreSQL cluster: `start()`, `stop()`, `restart()`, `close()` (or a `with` block)."""

    def __init__(self) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL server binaries")
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="crisis-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        if self.as_root:
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        _OPEN.add(self)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", SERVICE_USER, "--", *cmd]
        result = subprocess.run(  # noqa: S603  (fixed binaries, arguments we built)
            cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30, cwd=self.root, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{self.log_tail()}"
            )
        return result

    def start(self) -> None:
        # fsync off: nothing here must survive a machine crash, and it keeps start-up and checkpoints fast.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and rolls their transactions back, like a service restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def close(self) -> None:
        """Stop the server however it is (immediate: no checkpoint, nothing to keep) and remove everything."""
        try:
            if self.data.exists() and self.running():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
            pid = self.postmaster_pid()
            if pid is not None and self.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _OPEN.discard(self)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@atexit.register
def _close_leftovers() -> None:
    for cluster in list(_OPEN):
        cluster.close()
