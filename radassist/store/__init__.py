"""Persistence: SQLAlchemy models, migrations, and opening the database."""
from radassist.store.database import Database, head_revision, open_database
from radassist.store.models import (
    AuditEventRow,
    Base,
    DecisionRow,
    ModelVersionRow,
    OrderRow,
    ProtocolRow,
    SettingRow,
    SuggestionRow,
    UserRow,
    utcnow,
)

__all__ = [
    "AuditEventRow", "Base", "Database", "DecisionRow", "ModelVersionRow", "OrderRow", "ProtocolRow",
    "SettingRow", "SuggestionRow", "UserRow", "head_revision", "open_database", "utcnow",
]
