"""Multi-protocol decisions and return to referrer.

A decision may carry further protocols after the primary ``final_code`` (``additional_codes``,
a JSON list, in the order the radiologist added them: a code stroke's CT head + CTA + perfusion),
and a decision may return the order to the referrer with a question (``action`` = "returned",
``question`` the text; ``final_code`` is then empty).

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("additional_codes", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("question", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("question")
        batch.drop_column("additional_codes")
