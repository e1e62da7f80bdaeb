"""Users, append-only audit log, site settings, model registry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AUDIT_TRIGGERS = {
    "audit_events_no_update": "BEFORE UPDATE ON audit_events BEGIN "
    "SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "audit_events_no_delete": "BEFORE DELETE ON audit_events BEGIN "
    "SELECT RAISE(ABORT, 'audit_events is append-only'); END",
}


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_login_at", sa.DateTime),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("entity", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_recorded_at", "audit_events", ["recorded_at"])
    op.create_index("ix_audit_username", "audit_events", ["username"])
    for name, body in AUDIT_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value_json", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("version", sa.String(120), nullable=False, unique=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("path", sa.Text),
        sa.Column("base_model", sa.String(200)),
        sa.Column("data_json", sa.Text, nullable=False),
        sa.Column("hyperparams_json", sa.Text, nullable=False),
        sa.Column("metrics_json", sa.Text, nullable=False),
        sa.Column("log_path", sa.Text),
        sa.Column("pid", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("settings")
    for name in AUDIT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("audit_events")
    op.drop_table("users")
