"""Reserved for the training-run service (registry, run tokens, model file hashes) (filled in by that change; a no-op until then).

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
