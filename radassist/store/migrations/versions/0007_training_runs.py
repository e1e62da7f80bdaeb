"""Training runs: who claimed a run, the one-time run token, and the hashes of a model's files.

- ``created_role``: the role of the user who registered the run (the run acts as that user,
  never as a hard-coded admin).
- ``owner_pid``: the process that registered the run (the app); only a process in its tree
  (itself or a child) may claim it.
- ``run_token_hash``: sha256 of the one-time token the app hands its training process through
  the environment; cleared when the run is claimed, so a token works once.
- ``files_json``: sha256 and size of every file of the trained model, recorded at training
  time; promotion verifies them.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("created_role", sa.String(20), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("run_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("files_json", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("files_json")
        batch.drop_column("run_token_hash")
        batch.drop_column("owner_pid")
        batch.drop_column("created_role")
