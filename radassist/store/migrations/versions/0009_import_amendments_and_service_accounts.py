"""Import amendments and service accounts.

- ``order_amendments``: an order re-sent with different content (file import or interface feed):
  the changed fields before/after and the safety-flag types before/after; ``after_decision``
  marks an order that had been decided and went back to To do.
- ``service_accounts``: non-person accounts (the interface feed, scheduled imports) that sign in
  with a key file; only the key's sha256 is stored.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "order_amendments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("amended_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("previous_status", sa.String(12), nullable=False),
        sa.Column("after_decision", sa.Boolean(), nullable=False),
        sa.Column("changes_json", sa.Text(), nullable=False),
        sa.Column("flags_before_json", sa.Text(), nullable=False),
        sa.Column("flags_after_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_order_amendments_order", "order_amendments", ["order_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_order_amendments_order", table_name="order_amendments")
    op.drop_table("order_amendments")
    op.drop_table("service_accounts")
