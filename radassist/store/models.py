"""SQLAlchemy 2.0 typed models: the database schema of RadAssist."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Naive UTC timestamp (SQLite stores no zone; everything in the database is UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ProtocolRow(Base):
    __tablename__ = "protocols"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(8))
    body_region: Mapped[str] = mapped_column(String(100), default="")
    contrast: Mapped[str] = mapped_column(String(40), default="none")
    indications: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OrderRow(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession: Mapped[str] = mapped_column(String(64), unique=True)
    ordered_exam: Mapped[str] = mapped_column(String(200))
    clinical_notes: Mapped[str] = mapped_column(Text, default="")
    age: Mapped[int | None] = mapped_column(Integer)
    sex: Mapped[str] = mapped_column(String(1), default="U")
    priority: Mapped[str] = mapped_column(String(8), default="ROUTINE")
    mrn: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(200))
    ordering_provider: Mapped[str | None] = mapped_column(String(200))
    ordered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(12), default="todo")  # todo | done

    suggestions: Mapped[list[SuggestionRow]] = relationship(back_populates="order", cascade="all, delete-orphan")
    decisions: Mapped[list[DecisionRow]] = relationship(back_populates="order", order_by="DecisionRow.id")

    __table_args__ = (Index("ix_orders_status_priority", "status", "priority", "ordered_at"),)


class SuggestionRow(Base):
    """An engine's suggestions for one order, as computed (one row per order and model version)."""

    __tablename__ = "suggestions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(120))
    suggestions_json: Mapped[str] = mapped_column(Text)  # [{"code","name","score"}...]
    flags_json: Mapped[str] = mapped_column(Text, default="[]")  # [{"type","evidence"}...]
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # None: pre-selectable; else why the engine asks for review (target precision, near tie, OOD, conflict)
    review_reason: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    order: Mapped[OrderRow] = relationship(back_populates="suggestions")

    __table_args__ = (UniqueConstraint("order_id", "model_version", name="uq_suggestion_order_model"),)


class DecisionRow(Base):
    """What the radiologist chose for an order: accepted the suggestion or overrode it."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    username: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    suggested_code: Mapped[str | None] = mapped_column(String(64))
    suggested_score: Mapped[float | None] = mapped_column(Float)
    final_code: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(12))  # accepted | overridden | returned
    comment: Mapped[str] = mapped_column(Text, default="")
    model_version: Mapped[str | None] = mapped_column(String(120))
    time_to_decide_ms: Mapped[int | None] = mapped_column(Integer)
    # flag types the chosen protocol conflicts with, acknowledged by the radiologist (JSON list)
    acknowledged_conflicts: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # further protocols after final_code, in the order added (JSON list of codes; migration 0008)
    additional_codes: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # action "returned": the question sent back to the referrer (final_code is then "")
    question: Mapped[str | None] = mapped_column(Text, nullable=True)

    order: Mapped[OrderRow] = relationship(back_populates="decisions")

    __table_args__ = (Index("ix_decisions_decided_at", "decided_at"),)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))  # radiologist | admin | auditor
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEventRow(Base):
    """Append-only, hash-chained audit trail (triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recorded_at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, exact text is hashed
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(40))
    entity: Mapped[str] = mapped_column(String(200), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # 0006: HMAC-SHA256(site key, "<id>|<hash>"); NULL for events recorded before anchoring
    hmac: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)

    __table_args__ = (Index("ix_audit_recorded_at", "recorded_at"), Index("ix_audit_username", "username"))


class SettingRow(Base):
    """Site settings shared by every workstation using this database."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="system")


class ModelVersionRow(Base):
    """Registry of trained models: every training run and its outcome."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    engine: Mapped[str] = mapped_column(String(20))  # embedding | llm
    version: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[str] = mapped_column(String(12))  # running|failed|cancelled|candidate|active|retired
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    path: Mapped[str | None] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(String(200))
    data_json: Mapped[str] = mapped_column(Text, default="{}")
    hyperparams_json: Mapped[str] = mapped_column(Text, default="{}")
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    log_path: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    # 0007 (training-run service): the registering user's role, the registering process, the
    # one-time run token's sha256 (cleared when claimed) and {file: {sha256, size}} of the model.
    created_role: Mapped[str | None] = mapped_column(String(20))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    run_token_hash: Mapped[str | None] = mapped_column(String(64))
    files_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


class InterfaceOrderRow(Base):
    """Where an order came from on a hospital interface (HL7 v2 or FHIR), to send the protocol back."""

    __tablename__ = "interface_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), unique=True)
    source: Mapped[str] = mapped_column(String(8))  # hl7 | fhir
    message_type: Mapped[str] = mapped_column(String(20), default="")  # ORM^O01 | OMI^O23 | ServiceRequest
    version: Mapped[str] = mapped_column(String(12), default="")
    sending_app: Mapped[str] = mapped_column(String(200), default="")
    sending_facility: Mapped[str] = mapped_column(String(200), default="")
    receiving_app: Mapped[str] = mapped_column(String(200), default="")
    receiving_facility: Mapped[str] = mapped_column(String(200), default="")
    placer_number: Mapped[str] = mapped_column(String(200), default="")   # ORC-2 / OBR-2, as sent
    filler_number: Mapped[str] = mapped_column(String(200), default="")   # ORC-3 / OBR-3, as sent
    service_code: Mapped[str] = mapped_column(String(400), default="")    # OBR-4 as sent
    patient_json: Mapped[str] = mapped_column(Text, default="{}")         # PID-3/5/7/8 or Patient ref, as sent
    resource_id: Mapped[str] = mapped_column(String(200), default="")     # FHIR ServiceRequest id
    control_id: Mapped[str] = mapped_column(String(200), default="")      # MSH-10 of the latest message
    last_control: Mapped[str] = mapped_column(String(4), default="NW")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OutboxRow(Base):
    """A protocol result waiting to go back to the sender (or sent): survives restarts, delivered in order."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(100))  # e.g. "mllp:ris.example:2576", "fhir:/var/out"
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    control_id: Mapped[str] = mapped_column(String(40))     # MSH-10 / file name: the same on every retry
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | sent | rejected
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("destination", "decision_id", name="uq_outbox_destination_decision"),
                      Index("ix_outbox_destination_status", "destination", "status", "id"))


class ServiceAccountRow(Base):
    """A non-person account (the interface feed, a scheduled import) that signs in with a key file.

    Only the key's sha256 is stored; the key itself lives in a 0600 file on the machine that runs
    the service (migration 0009).
    """

    __tablename__ = "service_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class OrderAmendmentRow(Base):
    """An order re-sent with different content: which fields changed, before and after (0009).

    ``after_decision``: the order had been decided; it went back to To do and the radiologist is
    shown this difference (``ingest.amendment_for``). The values are PHI like the order itself:
    they stay in the database, never in the audit log.
    """

    __tablename__ = "order_amendments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    amended_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(8))          # file | hl7 | fhir
    username: Mapped[str] = mapped_column(String(64))       # the account that delivered it
    previous_status: Mapped[str] = mapped_column(String(12))
    after_decision: Mapped[bool] = mapped_column(Boolean, default=False)
    changes_json: Mapped[str] = mapped_column(Text, default="{}")       # {field: [before, after]}
    flags_before_json: Mapped[str] = mapped_column(Text, default="[]")  # flag types before / after
    flags_after_json: Mapped[str] = mapped_column(Text, default="[]")

    __table_args__ = (Index("ix_order_amendments_order", "order_id", "id"),)
