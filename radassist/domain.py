"""Domain types shared by every layer (no Qt, no database)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

SEXES = ("F", "M", "O", "U")
PRIORITIES = ("STAT", "URGENT", "ROUTINE")
MODALITIES = ("CT", "MR", "US", "XR", "NM", "PET", "FL", "MG")

FLAG_TYPES = (
    "contrast-allergy",
    "renal-impairment",
    "pregnancy",
    "mri-unsafe-implant",
    "anticoagulation",
    "metformin",
    "claustrophobia",
)


@dataclass(frozen=True)
class Protocol:
    """One row of the site's protocol catalog."""

    code: str
    name: str
    modality: str
    body_region: str
    contrast: str
    indications: str

    @property
    def indication_list(self) -> list[str]:
        return [s.strip() for s in self.indications.split(";") if s.strip()]

    @property
    def uses_iodinated_contrast(self) -> bool:
        return self.modality == "CT" and "iv" in self.contrast

    @property
    def uses_gadolinium(self) -> bool:
        return "gadolinium" in self.contrast

    def describe(self) -> str:
        """Text used to embed or prompt the protocol."""
        return f"{self.name}. {self.modality} {self.body_region}. For: {self.indications}"


@dataclass
class Order:
    """An imaging order as it arrives (design: order contract)."""

    accession: str
    ordered_exam: str
    clinical_notes: str = ""
    age: int | None = None
    sex: str = "U"
    priority: str = "ROUTINE"
    mrn: str | None = None
    patient_name: str | None = None
    ordering_provider: str | None = None
    ordered_at: datetime | None = None

    def model_text(self) -> str:
        """De-identified text a model sees: no name, MRN or accession."""
        demo = []
        if self.age is not None:
            demo.append(f"{self.age}y")
        if self.sex and self.sex != "U":
            demo.append(self.sex)
        head = f"{self.ordered_exam}"
        if demo:
            head += f" ({' '.join(demo)})"
        notes = self.clinical_notes.strip()
        return f"{head}: {notes}" if notes else head


FLAG_STATUSES = ("active", "uncertain", "resolved", "historical")


@dataclass(frozen=True)
class SafetyFlag:
    """A safety finding in the notes: what, how bad, whether it still holds, and the text that says so.

    ``severity`` depends on the type (contrast allergy: mild / moderate / severe / unknown;
    renal: caution / impaired / aki / dialysis; implant: mr-unsafe / unknown; claustrophobia:
    mild / severe; others: ``any``). ``status``: active, uncertain ("?pregnant", "type unknown"),
    resolved ("now resolved", "clarified as a skin rash") or historical. ``kind`` refines the
    type (contrast agent ``iodinated`` / ``gadolinium``; ``anticoagulant`` / ``antiplatelet``).
    ``handled``: the notes say the hazard is taken care of (premedication planned, dialysis
    scheduled, cleared by MRI safety), with the phrase that says so. ``note``: how a value was
    derived (an eGFR estimated from creatinine).
    """

    type: str
    evidence: str
    start: int = -1
    end: int = -1
    severity: str = "any"
    status: str = "active"
    kind: str = ""
    handled: str = ""
    note: str = ""

    @property
    def is_current(self) -> bool:
        return self.status in ("active", "uncertain")

    def to_json(self) -> dict:
        out = {"type": self.type, "evidence": self.evidence, "severity": self.severity, "status": self.status}
        for key in ("kind", "handled", "note"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def to_store(self) -> dict:
        return {**self.to_json(), "start": self.start, "end": self.end}

    @classmethod
    def from_json(cls, data: dict) -> "SafetyFlag":
        return cls(data["type"], data.get("evidence", ""), int(data.get("start", -1)), int(data.get("end", -1)),
                   data.get("severity", "any"), data.get("status", "active"), data.get("kind", ""),
                   data.get("handled", ""), data.get("note", ""))


def format_confidence(score: float) -> str:
    """A model's probability as a percentage that never claims certainty (">99%", "<1%")."""
    pct = score * 100
    if pct >= 99.5 and score < 1.0:
        return ">99%"
    if 0.0 < pct < 0.5:
        return "<1%"
    return f"{pct:.0f}%"


def format_model_confidence(score: float) -> str:
    """A suggestion's probability as the worklist and the order view show it: never "100%" (a stored score
    is rounded to 4 decimals, so 0.99996 reads back as 1.0; the live one said ">99%")."""
    return ">99%" if score >= 0.995 else format_confidence(score)


@dataclass(frozen=True)
class Suggestion:
    code: str
    name: str
    score: float
    conflicts: tuple[str, ...] = ()   # flag types this protocol goes against
    why: tuple[str, ...] = ()         # phrases of the notes that drove it

    def to_json(self) -> dict:
        out = {"code": self.code, "name": self.name, "score": round(float(self.score), 4)}
        if self.conflicts:
            out["conflicts"] = list(self.conflicts)
        if self.why:
            out["why"] = list(self.why)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Suggestion":
        return cls(data["code"], data["name"], float(data["score"]), tuple(data.get("conflicts", ())),
                   tuple(data.get("why", ())))


@dataclass
class Prediction:
    accession: str
    suggestions: list[Suggestion]
    flags: list[SafetyFlag] = field(default_factory=list)
    model: str = ""
    latency_ms: float = 0.0
    review: bool = False       # not confident enough to pre-select (target precision, out of distribution)
    review_reason: str = ""

    @property
    def top(self) -> Suggestion | None:
        return self.suggestions[0] if self.suggestions else None

    def to_json(self) -> dict:
        out = {
            "accession": self.accession,
            "suggestions": [s.to_json() for s in self.suggestions],
            "flags": [f.to_json() for f in self.flags],
            "model": self.model,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.review:
            out["review"] = True
            if self.review_reason:
                out["review_reason"] = self.review_reason
        return out


@dataclass(frozen=True)
class LabelledOrder:
    """An order with its correct protocol: synthetic data, dev set or a decision."""

    order: Order
    code: str
    acceptable: tuple[str, ...] = ()
    category: str = ""   # ordinary, ordered-exam-mismatch, contraindication, negated-risk, noisy
    style: str = ""      # writer style of a corpus order (ed, hospitalist, scenario, ...)
