"""Regenerate migrations/versions/0001_initial.py from the models.

Only while nothing is deployed: once a release ships, add new revisions instead. Generation happens
in a scratch copy of the migrations folder (without the later, hand-written revisions such as 0002's
data seed), so nothing in the real folder is touched until the new 0001 exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from app.migrate import MIGRATIONS_DIR, alembic_config


def main() -> None:
    target = MIGRATIONS_DIR / "versions" / "0001_initial.py"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "migrations"
        (scratch / "versions").mkdir(parents=True)
        for name in ("env.py", "script.py.mako"):
            shutil.copy(MIGRATIONS_DIR / name, scratch / name)
        cfg = alembic_config(f"sqlite:///{Path(tmp) / 'empty.db'}")
        cfg.set_main_option("script_location", str(scratch))
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
        produced = next((scratch / "versions").glob("0001_*.py"))
        shutil.copy(produced, target)
    # House style for generated code too (ruff is a dev dependency; regeneration is a dev task).
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "--unsafe-fixes", "-q", str(target)], check=False)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(target)], check=False)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
