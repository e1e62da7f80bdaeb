"""Anchor the audit chain: an HMAC of each event with the site key kept outside the database.

Events recorded before this revision keep a NULL ``hmac``: they are verified by their hash
chain only and reported as unanchored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

AUDIT_TRIGGERS = {
    "audit_events_no_update": "BEFORE UPDATE ON audit_events BEGIN "
    "SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "audit_events_no_delete": "BEFORE DELETE ON audit_events BEGIN "
    "SELECT RAISE(ABORT, 'audit_events is append-only'); END",
}


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("hmac", sa.String(64), nullable=True))


def downgrade() -> None:
    for name in AUDIT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hmac")
    for name, body in AUDIT_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
