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


@dataclass(frozen=True)
class SafetyFlag:
    type: str
    evidence: str
    start: int = -1
    end: int = -1

    def to_json(self) -> dict:
        return {"type": self.type, "evidence": self.evidence}


def format_confidence(score: float) -> str:
    """A model's probability as a percentage that never claims certainty (">99%", "<1%")."""
    pct = score * 100
    if pct >= 99.5 and score < 1.0:
        return ">99%"
    if 0.0 < pct < 0.5:
        return "<1%"
    return f"{pct:.0f}%"


@dataclass(frozen=True)
class Suggestion:
    code: str
    name: str
    score: float

    def to_json(self) -> dict:
        return {"code": self.code, "name": self.name, "score": round(float(self.score), 4)}


@dataclass
class Prediction:
    accession: str
    suggestions: list[Suggestion]
    flags: list[SafetyFlag] = field(default_factory=list)
    model: str = ""
    latency_ms: float = 0.0

    @property
    def top(self) -> Suggestion | None:
        return self.suggestions[0] if self.suggestions else None

    def to_json(self) -> dict:
        return {
            "accession": self.accession,
            "suggestions": [s.to_json() for s in self.suggestions],
            "flags": [f.to_json() for f in self.flags],
            "model": self.model,
            "latency_ms": round(self.latency_ms, 2),
        }


@dataclass(frozen=True)
class LabelledOrder:
    """An order with its correct protocol: synthetic data, dev set or a decision."""

    order: Order
    code: str
    acceptable: tuple[str, ...] = ()
