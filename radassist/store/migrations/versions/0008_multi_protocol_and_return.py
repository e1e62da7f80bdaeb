"""Reserved for the worklist: multi-protocol decisions, return to referrer (filled in by that change; a no-op until then).

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
