"""seed the API key revocation counter (read by the shipment poll cache)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counters = sa.table("change_counters", sa.column("name", sa.String), sa.column("value", sa.Integer))
    op.bulk_insert(counters, [{"name": "api_keys", "value": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM change_counters WHERE name = 'api_keys'")
