"""Regenerate migrations/versions/0001_initial.py from the models.

Only while nothing is deployed: once a release ships, add new revisions instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from app.migrate import MIGRATIONS_DIR, alembic_config


def main() -> None:
    target = MIGRATIONS_DIR / "versions" / "0001_initial.py"
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'empty.db'}"
        command.revision(alembic_config(url), message="initial schema", autogenerate=True, rev_id="0001")
    produced = next((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    produced.rename(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
