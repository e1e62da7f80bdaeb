"""Reserved for the import: amendments after decision, service accounts (filled in by that change; a no-op until then).

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
