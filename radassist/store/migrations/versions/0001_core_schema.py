"""Core schema: protocols, orders, suggestions, decisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "protocols",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("modality", sa.String(8), nullable=False),
        sa.Column("body_region", sa.String(100), nullable=False),
        sa.Column("contrast", sa.String(40), nullable=False),
        sa.Column("indications", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("accession", sa.String(64), nullable=False, unique=True),
        sa.Column("ordered_exam", sa.String(200), nullable=False),
        sa.Column("clinical_notes", sa.Text, nullable=False),
        sa.Column("age", sa.Integer),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("mrn", sa.String(64)),
        sa.Column("patient_name", sa.String(200)),
        sa.Column("ordering_provider", sa.String(200)),
        sa.Column("ordered_at", sa.DateTime, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
    )
    op.create_index("ix_orders_status_priority", "orders", ["status", "priority", "ordered_at"])
    op.create_table(
        "suggestions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_version", sa.String(120), nullable=False),
        sa.Column("suggestions_json", sa.Text, nullable=False),
        sa.Column("flags_json", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("order_id", "model_version", name="uq_suggestion_order_model"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.Column("suggested_code", sa.String(64)),
        sa.Column("suggested_score", sa.Float),
        sa.Column("final_code", sa.String(64), nullable=False),
        sa.Column("action", sa.String(12), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(120)),
        sa.Column("time_to_decide_ms", sa.Integer),
    )
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("suggestions")
    op.drop_index("ix_orders_status_priority", "orders")
    op.drop_table("orders")
    op.drop_table("protocols")
