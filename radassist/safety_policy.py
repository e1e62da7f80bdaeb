"""The site's safety policy as data: thresholds, which flags steer the ranking, conflicts, safe alternatives.

Three files under ``resources/knowledge/`` (a site points ``RADASSIST_KNOWLEDGE_DIR`` at its own copy):

- ``safety_policy.json``: eGFR cut-offs, the MRI table limit, which (severity, status) of each flag
  type steer the ranking and ask for acknowledgement, and the conflict rules (flag type x protocol
  modality / contrast agent);
- ``safe_alternatives.csv``: for a protocol and a flag type, the protocols that answer the same
  clinical question without the conflict (``code,flag,alternatives,unless,note``, alternatives
  separated by ``;``; ``-`` says no alternative answers, so the protocol stays with its conflict
  marked; ``unless`` is a regular expression over the notes that makes the alternatives unsuitable,
  e.g. consolidation on the chest film for a V/Q scan);
- ``eligibility.csv``: protocols limited to one sex or an age range (``code,sex,min_age,max_age,note``).

``load_policy(catalog)`` reads and validates them: a malformed file raises ``PolicyError`` naming the
file, line and field; rows naming codes the site's catalog lacks are dropped and reported in
``policy.warnings`` (a site may remove protocols). Protocols without a row still get the generic
rule: an alternative in the same body region and modality family that does not conflict.
"""
from __future__ import annotations

import csv
import json
import re
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from radassist.domain import FLAG_STATUSES, FLAG_TYPES, SEXES, Protocol

SCHEMA = "radassist.safety-policy/1"
LEXICON_KEYS = ("anticoagulant", "antiplatelet", "metformin", "mri_unsafe_device", "severe_reaction", "mild_reaction")
CONTRAST_AGENTS = ("iodinated", "gadolinium", "radiotracer", "intra-articular", "none")


class PolicyError(ValueError):
    """The policy files are malformed; the message names the file and the field."""


def knowledge_dir() -> Path:
    from radassist.paths import RESOURCES_DIR

    return Path(os.environ.get("RADASSIST_KNOWLEDGE_DIR") or RESOURCES_DIR / "knowledge")


def protocol_agent(p: Protocol) -> str:
    """The contrast agent a protocol gives: iodinated, gadolinium, radiotracer, intra-articular or none."""
    c = p.contrast.lower()
    if p.modality == "CT" and "iv" in c:
        return "iodinated"
    if "gadolinium" in c:
        return "gadolinium"
    if "radiotracer" in c or p.modality in ("NM", "PET"):
        return "radiotracer"
    if "intra-articular" in c:
        return "intra-articular"
    return "none"


@dataclass(frozen=True)
class ConflictRule:
    flag: str
    modalities: tuple[str, ...] = ()
    contrast: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()  # for contrast-allergy: which allergy kinds the rule covers
    why: str = ""
    requires_alternative: bool = False  # a conflict only where safe_alternatives.csv names one (pregnancy)

    def applies(self, protocol: Protocol, flag_kind: str) -> bool:
        if self.agents and (flag_kind or "unknown") not in self.agents:
            return False
        if self.modalities and protocol.modality not in self.modalities:
            return False
        if self.contrast and protocol_agent(protocol) not in self.contrast:
            return False
        return True


@dataclass(frozen=True)
class Eligibility:
    sex: str = ""
    min_age: int | None = None
    max_age: int | None = None

    def allows(self, sex: str, age: int | None) -> bool:
        if self.sex and sex in ("F", "M") and sex != self.sex:
            return False
        if age is not None and self.min_age is not None and age < self.min_age:
            return False
        if age is not None and self.max_age is not None and age > self.max_age:
            return False
        return True


@dataclass
class SafetyPolicy:
    egfr_impaired_below: float = 30.0
    egfr_caution_below: float = 45.0
    mri_table_limit_kg: float = 200.0
    steering: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)
    conflicts: list[ConflictRule] = field(default_factory=list)
    alternatives: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    no_alternative: set[tuple[str, str]] = field(default_factory=set)  # rows with "-": proceed, acknowledge
    # notes that make the alternative unsuitable ("consolidation" makes a V/Q non-diagnostic)
    alternative_unless: dict[tuple[str, str], "re.Pattern"] = field(default_factory=dict)
    # ... and notes that must be present for the row to apply (a child's RLQ pain, not every abdomen)
    alternative_only_if: dict[tuple[str, str], "re.Pattern"] = field(default_factory=dict)
    # patient groups that steer like a flag: {"child": 18} = under 18, ionising imaging where US answers
    age_rules: dict[str, int] = field(default_factory=dict)
    eligibility: dict[str, Eligibility] = field(default_factory=dict)
    steer_only_with_alternative: bool = True
    conflict_weight: float = 0.03
    lexicon: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def steers(self, flag) -> bool:
        """Does this flag (severity, status, not handled) change the ranking and need acknowledgement?"""
        severities, statuses = self.steering.get(flag.type, (set(), set()))
        if flag.handled or flag.status not in statuses:
            return False
        return "any" in severities or flag.severity in severities

    def conflicts_of(self, protocol: Protocol, flags: Sequence) -> tuple[str, ...]:
        """Flag types (among those that steer) that this protocol goes against."""
        out = []
        for flag in flags:
            if flag.type in out or not self.steers(flag):
                continue
            if any(r.flag == flag.type and r.applies(protocol, flag.kind)
                   and (not r.requires_alternative or (protocol.code, flag.type) in self.alternatives)
                   for r in self.conflicts):
                out.append(flag.type)
        return tuple(out)

    def age_considerations(self, age: int | None) -> tuple[str, ...]:
        """Age rules that apply to this patient ("child")."""
        if age is None:
            return ()
        return tuple(name for name, below in self.age_rules.items() if age < below)

    def allows(self, protocol: Protocol, sex: str, age: int | None) -> bool:
        rule = self.eligibility.get(protocol.code)
        return rule is None or rule.allows(sex, age)


def _int_or_none(value: str, where: str) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PolicyError(f"{where}: expected a whole number, got {value!r}") from None


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise PolicyError(f"{path.name}: missing column(s) {', '.join(missing)}")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None


def parse_policy(data: dict, source: str = "safety_policy.json") -> SafetyPolicy:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise PolicyError(f"{source}: 'schema' must be {SCHEMA!r}")
    policy = SafetyPolicy()
    try:
        renal = data.get("renal", {})
        policy.egfr_impaired_below = float(renal.get("egfr_impaired_below", 30))
        policy.egfr_caution_below = float(renal.get("egfr_caution_below", 45))
        policy.mri_table_limit_kg = float(data.get("mri", {}).get("table_limit_kg", 200))
        policy.conflict_weight = float(data.get("conflict_weight", 0.03))
    except (TypeError, ValueError, AttributeError):
        raise PolicyError(f"{source}: renal/mri thresholds and conflict_weight must be numbers") from None
    if not 0 < policy.egfr_impaired_below <= policy.egfr_caution_below <= 120:
        raise PolicyError(f"{source}: need 0 < renal.egfr_impaired_below <= renal.egfr_caution_below <= 120")
    if not 0 <= policy.conflict_weight < 1:
        raise PolicyError(f"{source}: conflict_weight must be in [0, 1)")
    policy.steer_only_with_alternative = bool(data.get("steer_only_with_alternative", True))
    for i, rule in enumerate(data.get("age_rules", [])):
        try:
            name, below = str(rule["name"]), int(rule["below_age"])
        except (KeyError, TypeError, ValueError):
            raise PolicyError(f"{source}: age_rules[{i}] needs 'name' and a whole-number 'below_age'") from None
        if name in FLAG_TYPES or not 0 < below <= 120:
            raise PolicyError(f"{source}: age_rules[{i}]: name must not be a flag type; 0 < below_age <= 120")
        policy.age_rules[name] = below
    lexicon = data.get("lexicon", {})
    if not isinstance(lexicon, dict):
        raise PolicyError(f"{source}: 'lexicon' must be an object of term lists")
    for key, terms in lexicon.items():
        if key == "description":
            continue
        if key not in LEXICON_KEYS:
            raise PolicyError(f"{source}: lexicon.{key}: unknown list (known: {', '.join(LEXICON_KEYS)})")
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
            raise PolicyError(f"{source}: lexicon.{key} must be a list of non-empty strings")
        policy.lexicon[key] = tuple(t.strip().lower() for t in terms)
    steering = data.get("steering", {})
    if not isinstance(steering, dict):
        raise PolicyError(f"{source}: 'steering' must be an object keyed by flag type")
    for ftype, rule in steering.items():
        if ftype not in FLAG_TYPES:
            raise PolicyError(f"{source}: steering: unknown flag type {ftype!r}")
        statuses = set(rule.get("statuses", []))
        bad = statuses - set(FLAG_STATUSES)
        if bad:
            raise PolicyError(f"{source}: steering.{ftype}.statuses: unknown {sorted(bad)}")
        policy.steering[ftype] = (set(rule.get("severities", [])), statuses)
    for i, rule in enumerate(data.get("conflicts", [])):
        where = f"{source}: conflicts[{i}]"
        if rule.get("flag") not in FLAG_TYPES:
            raise PolicyError(f"{where}.flag: unknown flag type {rule.get('flag')!r}")
        contrast = tuple(rule.get("contrast", ()))
        if set(contrast) - set(CONTRAST_AGENTS):
            raise PolicyError(f"{where}.contrast: must be among {', '.join(CONTRAST_AGENTS)}")
        if not rule.get("modalities") and not contrast:
            raise PolicyError(f"{where}: needs 'modalities' or 'contrast'")
        policy.conflicts.append(ConflictRule(rule["flag"], tuple(rule.get("modalities", ())), contrast,
                                             tuple(rule.get("agents", ())), rule.get("why", ""),
                                             bool(rule.get("requires_alternative", False))))
    return policy


def load_policy(catalog: Sequence[Protocol] | None = None, folder: str | Path | None = None) -> SafetyPolicy:
    folder = Path(folder) if folder else knowledge_dir()
    path = folder / "safety_policy.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PolicyError(f"{path.name}: not valid JSON ({exc})") from None
    policy = parse_policy(data, path.name)
    codes = {p.code for p in catalog} if catalog else None

    alt_path = folder / "safe_alternatives.csv"
    if alt_path.exists():
        for line, row in _read_csv(alt_path, ("code", "flag", "alternatives")):
            where = f"{alt_path.name}:{line}"
            code, flag = (row["code"] or "").strip(), (row["flag"] or "").strip()
            alts = tuple(a.strip() for a in (row["alternatives"] or "").split(";") if a.strip())
            known_keys = set(FLAG_TYPES) | set(policy.age_rules)
            if alts == ("-",):  # "no safe alternative": keep the protocol, only mark the conflict
                if flag not in known_keys:
                    raise PolicyError(f"{where}: flag: unknown flag type {flag!r}")
                policy.no_alternative.add((code, flag))
                continue
            if flag not in known_keys:
                raise PolicyError(f"{where}: flag: unknown flag type {flag!r}")
            if not code or not alts:
                raise PolicyError(f"{where}: code and alternatives are required")
            if codes is not None:
                missing = [c for c in (code, *alts) if c not in codes]
                if code not in codes:
                    policy.warnings.append(f"{where}: {code} is not in the catalog; row skipped")
                    continue
                if missing:
                    policy.warnings.append(f"{where}: {', '.join(missing)} not in the catalog; ignored")
                    alts = tuple(a for a in alts if a in codes)
            if alts:
                policy.alternatives[(code, flag)] = alts
            for column, target in (("unless", policy.alternative_unless), ("only_if", policy.alternative_only_if)):
                pattern = (row.get(column) or "").strip()
                if pattern:
                    try:
                        target[(code, flag)] = re.compile(pattern, re.IGNORECASE)
                    except re.error as exc:
                        raise PolicyError(f"{where}: {column}: not a valid regular expression ({exc})") from None

    elig_path = folder / "eligibility.csv"
    if elig_path.exists():
        for line, row in _read_csv(elig_path, ("code", "sex", "min_age", "max_age")):
            where = f"{elig_path.name}:{line}"
            code, sex = (row["code"] or "").strip(), (row["sex"] or "").strip()
            if sex and sex not in SEXES:
                raise PolicyError(f"{where}: sex must be one of {', '.join(SEXES)} or empty")
            rule = Eligibility(sex, _int_or_none(row["min_age"], f"{where}: min_age"),
                               _int_or_none(row["max_age"], f"{where}: max_age"))
            if codes is not None and code not in codes:
                policy.warnings.append(f"{where}: {code} is not in the catalog; row skipped")
                continue
            policy.eligibility[code] = rule
    return policy


@lru_cache(maxsize=8)
def _cached(folder: str, codes: tuple[tuple, ...]) -> SafetyPolicy:
    catalog = [Protocol(*row) for row in codes]
    return load_policy(catalog, folder)


def site_policy(catalog: Sequence[Protocol]) -> SafetyPolicy:
    """The policy for this catalog, loaded once per process."""
    key = tuple((p.code, p.name, p.modality, p.body_region, p.contrast, p.indications) for p in catalog)
    return _cached(str(knowledge_dir()), key)


@lru_cache(maxsize=1)
def shipped_policy() -> SafetyPolicy:
    """The policy files as shipped (or at RADASSIST_KNOWLEDGE_DIR), without a catalog check."""
    return load_policy()
