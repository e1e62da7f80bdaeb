"""Hospital interfaces: where interface orders came from, and the persistent outbox of results.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interface_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False, server_default=""),
        sa.Column("version", sa.String(12), nullable=False, server_default=""),
        sa.Column("sending_app", sa.String(200), nullable=False, server_default=""),
        sa.Column("sending_facility", sa.String(200), nullable=False, server_default=""),
        sa.Column("receiving_app", sa.String(200), nullable=False, server_default=""),
        sa.Column("receiving_facility", sa.String(200), nullable=False, server_default=""),
        sa.Column("placer_number", sa.String(200), nullable=False, server_default=""),
        sa.Column("filler_number", sa.String(200), nullable=False, server_default=""),
        sa.Column("service_code", sa.String(400), nullable=False, server_default=""),
        sa.Column("patient_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("resource_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("control_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("last_control", sa.String(4), nullable=False, server_default="NW"),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id"), nullable=False),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("control_id", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.String(200)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.UniqueConstraint("destination", "decision_id", name="uq_outbox_destination_decision"),
    )
    op.create_index("ix_outbox_destination_status", "outbox", ["destination", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_destination_status", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("interface_orders")
