"""From an engine's probabilities to the suggestions a radiologist sees: safe, possible, explained.

Every engine ends here, so the rules hold whatever model scored the order:

1. **Eligibility.** Protocols impossible for the patient's sex or age (``eligibility.csv``) get
   probability 0 and are never offered.
2. **Flags steer.** A protocol that conflicts with a flag the site's policy counts (severity,
   status, not handled) keeps only ``conflict_weight`` of its probability; the rest moves to the
   protocols that answer the same question safely (``safe_alternatives.csv``, else the generic rule:
   same body region, no conflict), split in proportion to what the model gave them. Where no safe
   alternative exists (an aortic dissection with a severe allergy), the ranking stays and the
   suggestion carries its conflict. Moving mass, rather than deleting it, keeps the scores a
   probability of "this is the protocol to do" that the confidence calibration can rely on.
3. **Conflicts and reasons** travel with each suggestion: ``conflicts`` (flag types it goes
   against) and ``why`` (the phrases of the notes that share terms with the protocol).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from radassist.domain import Order, Protocol, SafetyFlag, Suggestion
from radassist.safety import affirmed_match
from radassist.safety_policy import SafetyPolicy, protocol_agent

_STOP = set("""a an and are as at be by for from has have in is it of on or the to with without w wo
            pt patient y yo old year years male female history hx h o s p r please eval evaluate evaluation
            rule out assess query new known left right l r bilateral since x days weeks months ago""".split())
_WORD = re.compile(r"[a-z][a-z0-9]+")
_CLAUSE = re.compile(r"[^.;,\n()]+")


def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "ities", "ity", "ies", "es", "s", "ing", "ed", "al", "ic"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def why_phrases(notes: str, protocol: Protocol, limit: int = 2) -> tuple[str, ...]:
    """Clauses of the notes that share terms with the protocol's name and indications, best first."""
    if not notes:
        return ()
    target = _terms(f"{protocol.name} {protocol.body_region} {protocol.indications}")
    scored = []
    for m in _CLAUSE.finditer(notes):
        clause = m.group(0).strip()
        if len(clause) < 3:
            continue
        overlap = len(_terms(clause) & target)
        if overlap:
            scored.append((-overlap, m.start(), clause[:80]))
    scored.sort()
    return tuple(c for _, _, c in scored[:limit])


_affirmed_match = affirmed_match


def _row_applies(policy: SafetyPolicy, code: str, key: str, notes: str) -> bool:
    only_if = policy.alternative_only_if.get((code, key))
    return only_if is None or _affirmed_match(only_if, notes)


def _generic_alternatives(protocol: Protocol, flag_type: str, catalog: Sequence[Protocol]) -> list[str]:
    """Same body region, another modality or no contrast: for protocols the alternatives table lacks."""
    out = []
    for p in catalog:
        if p.code == protocol.code or p.body_region != protocol.body_region:
            continue
        if flag_type in ("mri-unsafe-implant", "claustrophobia") and p.modality in ("CT", "US") :
            out.append(p.code)
        elif flag_type in ("contrast-allergy", "renal-impairment") and p.modality == protocol.modality \
                and protocol_agent(p) == "none":
            out.append(p.code)
        elif flag_type in ("pregnancy", "child") and p.modality in ("US", "MR"):
            out.append(p.code)
    return out


def steer(probs: np.ndarray, catalog: Sequence[Protocol], flags: Sequence[SafetyFlag], order: Order,
          policy: SafetyPolicy) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Probabilities over ``catalog`` after eligibility and flag steering, and each protocol's conflicts."""
    probs = np.asarray(probs, dtype=np.float64).copy()
    allowed = np.array([policy.allows(p, order.sex, order.age) for p in catalog])
    if allowed.any():
        probs = np.where(allowed, probs, 0.0)
    total = probs.sum()
    probs = probs / total if total > 0 else np.where(allowed, 1.0 / max(allowed.sum(), 1), 0.0)
    current = [f for f in flags if policy.steers(f)]
    conflicts = [policy.conflicts_of(p, current) if current else () for p in catalog]
    notes = order.clinical_notes or ""
    groups = policy.age_considerations(order.age)  # e.g. "child": US first where it answers
    steer_keys = [c + tuple(g for g in groups if (p.code, g) in policy.alternatives
                            and _row_applies(policy, p.code, g, notes)) for p, c in zip(catalog, conflicts)]
    if not any(steer_keys):
        return probs, conflicts
    index = {p.code: j for j, p in enumerate(catalog)}
    moved = np.zeros_like(probs)
    for j, p in enumerate(catalog):
        if not steer_keys[j] or probs[j] <= 0:
            continue
        alts: list[str] = []
        for ftype in steer_keys[j]:
            unless = policy.alternative_unless.get((p.code, ftype))
            if unless is not None and _affirmed_match(unless, order.clinical_notes or ""):
                continue  # the notes say the alternative cannot answer here (e.g. V/Q with consolidation)
            if (p.code, ftype) in policy.no_alternative or not _row_applies(policy, p.code, ftype, notes):
                continue
            alts += list(policy.alternatives.get((p.code, ftype), ())) or _generic_alternatives(p, ftype, catalog)
        targets = [index[c] for c in dict.fromkeys(alts)
                   if c in index and allowed[index[c]] and not steer_keys[index[c]]]
        if not targets:
            if policy.steer_only_with_alternative:
                continue  # nothing safer answers the question: keep it, marked with its conflicts
            targets = [k for k in range(len(catalog)) if not conflicts[k] and allowed[k]]
            if not targets:
                continue
        share = probs[j] * (1.0 - policy.conflict_weight)
        weights = probs[targets] + 0.05 * probs[targets].max() + 1e-6
        moved[targets] += share * weights / weights.sum()
        moved[j] -= share
    probs = np.clip(probs + moved, 0.0, None)
    return probs / probs.sum(), conflicts


def suggestions(order: Order, probs: np.ndarray, catalog: Sequence[Protocol], flags: Sequence[SafetyFlag],
                policy: SafetyPolicy, top_k: int = 3) -> list[Suggestion]:
    """The top ``top_k`` suggestions after steering, each with its conflicts and reasons."""
    probs, conflicts = steer(probs, catalog, flags, order, policy)
    best = np.argsort(-probs, kind="stable")[:top_k]
    out = []
    for j in best:
        if probs[j] <= 0:
            break
        p = catalog[j]
        out.append(Suggestion(p.code, p.name, float(probs[j]), conflicts[j], why_phrases(order.clinical_notes, p)))
    return out
