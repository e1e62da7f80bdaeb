"""Severity, status and kind of each safety flag, read from the words around its evidence.

``radassist.safety.check_notes`` finds stated hazards and drops plain negations. This module reads
the sentence around each finding (and the one after it) to say how much it matters:

- contrast allergy: severe (anaphylaxis, airway, hypotension, adrenaline), moderate, mild (hives,
  rash, itch, nausea), unknown; the agent (iodinated or gadolinium); resolved when the notes say it
  was clarified, was to an antiseptic or shellfish only, or contrast was tolerated since; handled
  when premedication is planned;
- renal: caution (eGFR between the impaired and caution cut-offs), impaired (below the cut-off),
  aki, dialysis; an eGFR estimated from creatinine (CKD-EPI 2021, units detected) when the notes
  give only creatinine; resolved ("now resolved", "recovered", "back to baseline");
- implants: mr-unsafe or unknown (type unknown, no records, MRI safety declined, shrapnel, orbits
  not cleared), found here too when the checker has no named device;
- pregnancy uncertain ("?pregnant", "possible pregnancy", "awaiting hCG");
- anticoagulation kind anticoagulant / antiplatelet / both, naming the drug;
- claustrophobia severe (failed MRI, general anaesthesia needed, declines sedation) or mild.

Thresholds come from the site policy (``radassist.safety_policy``), not from code.
"""
from __future__ import annotations

import re
from dataclasses import replace

from radassist.domain import SafetyFlag
from radassist.safety import check_notes

_I = re.IGNORECASE
_SENT_END = re.compile(r"(?<!\d)[.!](?=\s|$)|[;\n]")


def _context(text: str, start: int, end: int, after_sentences: int = 1) -> str:
    """The sentence holding [start, end) and the next ``after_sentences`` sentences, lower-cased."""
    lo = 0
    for m in _SENT_END.finditer(text, 0, max(0, start)):
        lo = m.end()
    hi, seen = len(text), 0
    for m in _SENT_END.finditer(text, end):
        seen += 1
        if seen > after_sentences:
            hi = m.start()
            break
    return text[lo:hi].lower()


def _window(text: str, start: int, end: int, before: int = 80, after: int = 120) -> str:
    return text[max(0, start - before):end + after].lower()


# --- contrast allergy ---------------------------------------------------------------------------
_SEVERE = re.compile(
    r"anaphyla|airway|throat\s+(?:swell|clos|tight)|laryn|stridor|bronchospasm|wheez|hypotensi|"
    r"\bshock\b|intubat|\bicu\b|epinephrine|adrenaline|epi-?pen|\bim\s+adrenaline|cardiac\s+arrest|"
    r"angio-?o?edema|tongue\s+swell|lips?\s+swell|(?:facial|face)\s+swell|severe|life[\s-]threat|"
    r"collapse|resus|\bcode\b|crash", _I)
_MODERATE = re.compile(r"moderate|diffuse\s+(?:hives|urticaria)|widespread\s+(?:hives|urticaria)|"
                       r"generali[sz]ed\s+(?:hives|urticaria)|vomiting\s+and\s+hives", _I)
_MILD = re.compile(r"\bmild|hives|urticari|\brash|itch|prurit|flush|sneez|nausea|vomit|warm|"
                   r"minor|few\s+welts|skin\s+reaction", _I)
_GAD = re.compile(r"gad(?:olinium|o\w*)?\b|\bgbca|mri?\s+contrast|mr\s+contrast|gadavist|dotarem|magnevist|"
                  r"multihance|prohance|eovist|clariscan|omniscan", _I)
_IODINATED = re.compile(r"iodin|\bct\s+contrast|\biv\s+contrast|omnipaque|iohexol|isovue|iopamidol|"
                        r"visipaque|iodixanol|optiray|ultravist|\bdye\b|cat\s+scan", _I)
_ALLERGY_RESOLVED = re.compile(
    r"clarif|was\s+told|actually|not\s+(?:a\s+)?(?:true|real)\s+allerg|de-?label|"
    r"(?:betadine|povidone|antiseptic|chlorhexidine|skin\s+prep|iodine\s+(?:prep|swab|paint|solution|tincture)|"
    r"shellfish|seafood|prawn|shrimp)|"
    r"tolerated\s+(?:\w+\s+){0,3}(?:contrast|ct|cect)|uneventful|without\s+(?:any\s+)?(?:issue|problem|reaction)|"
    r"no\s+reaction\s+(?:to|with|since|after)|since\s+(?:had|received)\s+(?:\w+\s+){0,3}contrast|"
    r"had\s+(?:\w+\s+){0,3}contrast\s+(?:\w+\s+){0,4}(?:since|fine|without)", _I)
_PREMED = re.compile(r"pre-?\s?med|premedicat|steroid\s+(?:prep|cover|protocol)|pre-?treat|13[\s-]?h(?:ou)?r|"
                     r"prednisone\s+\d+\s*mg|antihistamine\s+cover|accelerated\s+premed", _I)


_NEG_BEFORE = re.compile(r"(?:\bno|\bnot|\bnil|\bwithout|\bdenie[sd]|\bdeny|\bnever|\bw/o|\bnon)[\s-]+(?:\w+[\s-]+){0,2}$", _I)


def _affirmed(pattern: re.Pattern, text: str) -> bool:
    """A match of ``pattern`` in ``text`` not preceded by a negation ("no airway sx")."""
    return any(not _NEG_BEFORE.search(text[max(0, m.start() - 25):m.start()]) for m in pattern.finditer(text))


def _contrast_allergy(text: str, flag: SafetyFlag) -> SafetyFlag:
    ctx = _context(text, flag.start, flag.end)
    near = _window(text, flag.start, flag.end, 60, 140)
    mild_only = re.search(r"(?:hives|rash|itch\w*|urticaria|nausea|flushing)\s+only|only\s+(?:mild|hives|a\s+rash|rash|itch)", near)
    if _affirmed(_SEVERE, near) and not mild_only:
        severity = "severe"
    elif _affirmed(_MODERATE, near) and not mild_only:
        severity = "moderate"
    elif _MILD.search(near):
        severity = "mild"
    else:
        severity = "unknown"
    ev = flag.evidence.lower()
    kind = "gadolinium" if _GAD.search(ev) or (_GAD.search(near) and not _IODINATED.search(ev)) else (
        "iodinated" if _IODINATED.search(near) or "contrast" in ev else "unknown")
    status = "resolved" if _ALLERGY_RESOLVED.search(ctx) else "active"
    handled = ""
    m = _PREMED.search(text)
    if m and status == "active":
        handled = text[m.start():m.end() + 30].split(".")[0].strip()
    if severity == "severe":
        handled = ""  # a severe reaction stays a conflict to acknowledge, even premedicated ...
        m2 = _PREMED.search(text)
        if m2 and re.search(r"accelerated|emergen|life[\s-]threat|no\s+alternative|proceed", text, _I):
            handled = text[m2.start():m2.end() + 30].split(".")[0].strip()  # ... unless the plan says why
    return replace(flag, severity=severity, status=status, kind=kind, handled=handled)


# --- renal ----------------------------------------------------------------------------------------
_EGFR_VALUE = re.compile(r"\b(?:e?gfr|egfr(?:cr)?|estimated\s+gfr|crcl)\b[^\d\n]{0,15}?(?P<cmp>[<>≤≥]=?)?\s*"
                         r"(?P<v>\d{1,3}(?:\.\d)?)", _I)
_CREAT_VALUE = re.compile(r"\b(?:creatinine|creat|s?cr)\b\.?[^\d\n]{0,12}?(?P<v>\d{1,4}(?:\.\d{1,2})?)"
                          r"(?P<unit>\s*(?:mg/dl|umol/l|µmol/l|μmol/l|micromol/l|umol|µmol))?", _I)
_DIALYSIS = re.compile(r"dialy|\bhd\b|\bpd\b|crrt|cvvh|esrd|eskd|end[\s-]stage|anuri", _I)
_AKI = re.compile(r"\baki\b|acute\s+(?:kidney|renal)\s+(?:injury|failure|insufficiency)|arf\b|"
                  r"creatinine\s+(?:rising|bump)|oliguri", _I)
_RENAL_RESOLVED = re.compile(r"resolved|recovered|back\s+to\s+baseline|normali[sz]ed|now\s+normal|"
                             r"returned\s+to\s+(?:normal|baseline)|improved\s+to\s+(?:normal|baseline)|"
                             r"renal\s+function\s+(?:now\s+)?normal", _I)
_UNCERTAIN = re.compile(r"\?|\br/o\b|rule\s+out|possible|possibly|query|suspected|\bmay\s+be\b|awaiting|"
                        r"pending|unknown|unclear|not\s+sure|uncertain", _I)
_DIALYSIS_PLANNED = re.compile(r"dialysis\s+(?:is\s+)?(?:scheduled|planned|booked|arranged|after|post|following)|"
                               r"(?:hd|dialysis)\s+(?:session\s+)?(?:tomorrow|today|after\s+(?:the\s+)?scan)|"
                               r"nephrology\s+(?:aware|agrees|ok)", _I)


def ckd_epi_2021(creatinine_mg_dl: float, age: int, sex: str) -> float:
    """eGFR (mL/min/1.73 m2), CKD-EPI 2021 race-free creatinine equation."""
    female = sex == "F"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    egfr = 142 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938 ** age
    return egfr * (1.012 if female else 1.0)


def _creatinine_mg_dl(m: re.Match) -> tuple[float, str] | None:
    value = float(m.group("v"))
    unit = (m.group("unit") or "").strip().lower()
    if "mol" in unit or (not unit and value > 20):
        if not 20 <= value <= 2500:
            return None
        return value / 88.4, f"{m.group('v')} umol/L"
    if not 0.1 <= value <= 20:
        return None
    return value, f"{m.group('v')} mg/dL"


def _last_egfr(text: str) -> tuple[float, re.Match] | None:
    last = None
    for m in _EGFR_VALUE.finditer(text):
        cmp = m.group("cmp") or ""
        if ">" in cmp or "≥" in cmp:
            value = max(float(m.group("v")), 90.0) if float(m.group("v")) >= 60 else float(m.group("v")) + 1
        else:
            value = float(m.group("v"))
        if 1 <= value <= 200:
            last = (value, m)
    return last


def _renal(text: str, flag: SafetyFlag, policy, age: int | None, sex: str) -> SafetyFlag:
    ev = flag.evidence.lower()
    ctx = _context(text, flag.start, flag.end)
    note = ""
    if _DIALYSIS.search(ev):
        severity = "dialysis"
    elif _AKI.search(ev) or re.search(r"renal\s+failure|kidney\s+failure", ev):
        severity = "aki" if _AKI.search(ev) else "impaired"
    else:
        severity = "impaired"
        egfr = _last_egfr(text)
        if egfr is not None:
            severity = "impaired" if egfr[0] < policy.egfr_impaired_below else (
                "caution" if egfr[0] < policy.egfr_caution_below else "normal")
        elif re.search(r"\b(?:creatinine|creat|s?cr)\b", ev) and age is not None and sex in ("F", "M"):
            m = _CREAT_VALUE.search(flag.evidence)
            conv = _creatinine_mg_dl(m) if m else None
            if conv:
                est = ckd_epi_2021(conv[0], age, sex)
                note = f"eGFR about {est:.0f} estimated from creatinine {conv[1]} (CKD-EPI 2021, age {age}, sex {sex})"
                severity = "impaired" if est < policy.egfr_impaired_below else (
                    "caution" if est < policy.egfr_caution_below else "normal")
    status = "active"
    if _RENAL_RESOLVED.search(ctx):
        status = "resolved"
    elif severity in ("aki",) and _UNCERTAIN.search(_window(text, flag.start, flag.end, 12, 0)):
        status = "uncertain"
    if severity == "aki" and status == "active":
        egfr = _last_egfr(text[flag.end:])
        if egfr is not None and egfr[0] >= 60:
            status = "resolved"
    if severity == "normal":
        status, severity = "resolved", "caution"
    handled = ""
    m = _DIALYSIS_PLANNED.search(text)
    if m and severity in ("dialysis", "impaired", "aki"):
        handled = text[m.start():m.end()].strip()
    return replace(flag, severity=severity, status=status, handled=handled, note=note)


def _renal_caution(text: str, policy, age: int | None, sex: str) -> SafetyFlag | None:
    """An eGFR between the impaired and caution cut-offs: no hazard by the < cut-off rule, still worth seeing."""
    egfr = _last_egfr(text)
    if egfr is not None:
        value, m = egfr
        if value < policy.egfr_caution_below and not (m.group("cmp") or ""):
            severity = "impaired" if value < policy.egfr_impaired_below else "caution"
            return SafetyFlag("renal-impairment", text[m.start():m.end()], m.start(), m.end(), severity, "active")
        return None
    if age is None or sex not in ("F", "M"):
        return None
    for m in _CREAT_VALUE.finditer(text):
        conv = _creatinine_mg_dl(m)
        if conv is None:
            continue
        est = ckd_epi_2021(conv[0], age, sex)
        note = f"eGFR about {est:.0f} estimated from creatinine {conv[1]} (CKD-EPI 2021, age {age}, sex {sex})"
        if est < policy.egfr_impaired_below:
            return SafetyFlag("renal-impairment", text[m.start():m.end()], m.start(), m.end(), "impaired",
                              "active", note=note)
        if est < policy.egfr_caution_below:
            return SafetyFlag("renal-impairment", text[m.start():m.end()], m.start(), m.end(), "caution",
                              "active", note=note)
    return None


# --- implants -------------------------------------------------------------------------------------
_UNKNOWN_IMPLANT = re.compile(
    r"(?:clip|implant|device|stimulator|pacemaker|ppm|icd|valve|coil|stent|hardware|prosthesis|pump|port|"
    r"fragment|foreign\s+body)[^.;\n]{0,60}?(?:type\s+(?:is\s+)?unknown|unknown\s+(?:type|make|model|mr\s+status|"
    r"mri\s+status|compatibility)|no\s+(?:documentation|records|details|paperwork|card)|"
    r"not\s+(?:known|documented)|cannot\s+be\s+(?:identified|confirmed)|unable\s+to\s+(?:confirm|identify))|"
    r"unknown\s+(?:metal(?:lic)?\s+)?(?:implant|device|clip|hardware)|"
    r"mri\s+safety\s+(?:team|officer|committee|physicist)?\s*(?:has\s+)?(?:declined|refused|not\s+cleared|"
    r"did\s+not\s+clear|unable\s+to\s+clear|would\s+not\s+clear)|"
    r"(?:orbits?|eyes?)\s+(?:not\s+(?:yet\s+)?cleared|not\s+screened|uncleared)|"
    r"not\s+cleared\s+(?:for|by)\s+(?:mri|mr\b)|"
    r"(?:metal\s*worker|welder|grinder|machinist)[^.;\n]{0,60}?(?:not\s+cleared|no\s+(?:orbit|xr|x-ray)|"
    r"not\s+screened|without\s+(?:orbit|screening))|"
    r"(?:shrapnel|bullet\s+fragments?|retained\s+(?:metal|bullet|fragments?))", _I)
_IMPLANT_RESOLVED = re.compile(r"removed|explanted|extracted|taken\s+out", _I)
_IMPLANT_CLEARED = re.compile(r"(?<!not\s)(?<!non\s)(?<!non-)(?<!not\smri\s)(?<!not\smr\s)(?<!not\san\s)"
                              r"(?:cleared\s+(?:by|for|with)|(?<!not\s)mr[\s-]*(?:i\s+)?(?:conditional|safe|compatible)\b)"
                              r"(?!\s*(?:status\s+)?(?:unknown|unclear|not))|orbit\w*\s+(?:xr|x-ray|radiographs?|films?)"
                              r"\s+(?:clear|negative|normal)|safety\s+(?:team\s+)?(?:approved|cleared)", _I)


def _implant(text: str, flag: SafetyFlag) -> SafetyFlag:
    ctx = _context(text, flag.start, flag.end)
    near = _window(text, flag.start, flag.end, 40, 120)
    if _UNKNOWN_IMPLANT.search(near) and not re.search(r"shrapnel|bullet", flag.evidence, _I):
        severity, status = "unknown", "uncertain"
    else:
        severity, status = "mr-unsafe", "active"
    if re.search(r"shrapnel|bullet|fragment|foreign", flag.evidence, _I):
        severity, status = "unknown", "uncertain"
    if _IMPLANT_RESOLVED.search(ctx) and not re.search(r"not\s+(?:been\s+)?removed", ctx):
        status = "resolved"
    handled = ""
    if _IMPLANT_CLEARED.search(ctx) and not _UNKNOWN_IMPLANT.search(near):
        handled = _IMPLANT_CLEARED.search(ctx).group(0)
    return replace(flag, severity=severity, status=status, handled=handled)


# --- pregnancy, anticoagulation, claustrophobia -----------------------------------------------------
_PREG_UNCERTAIN = re.compile(r"\?\s*preg|possib\w*\s+(?:early\s+)?preg|may\s+be\s+preg|could\s+be\s+preg|"
                             r"r/o\s+preg|rule\s+out\s+preg|preg\w*\s+(?:status\s+)?(?:unknown|unclear|not\s+known)|"
                             r"(?:hcg|upt|pregnancy\s+test)\s+(?:pending|awaited|awaiting|not\s+(?:yet\s+)?done)|"
                             r"awaiting\s+(?:b-?\s?)?(?:hcg|upt|pregnancy\s+test)|lmp\s+(?:unknown|unsure|late)|"
                             r"period\s+(?:is\s+)?late|missed\s+period", _I)
_ANTIPLATELET = re.compile(r"clopidogrel|plavix|prasugrel|effient|ticagrelor|brilinta|ticlopidine|cilostazol|"
                           r"dipyridamole|aggrenox|aspirin|\basa\b|dapt|antiplatelet|ecosprin|disprin", _I)
_ANTICOAGULANT = re.compile(r"warfarin|coumadin|jantoven|apixaban|eliquis|rivaroxaban|xarelto|dabigatran|pradaxa|"
                            r"edoxaban|savaysa|lixiana|heparin|enoxaparin|lovenox|clexane|dalteparin|fragmin|"
                            r"tinzaparin|fondaparinux|arixtra|bivalirudin|argatroban|lmwh|doac|noac|"
                            r"anti-?coagula|blood\s+thinner|\binr\b|acitrom|acenocoumarol", _I)
_CLAUSTRO_SEVERE = re.compile(r"fail|abort|unable|could\s*n[o']t|couldn't|refus|declin|despite|general\s+an(?:a)?esth|"
                              r"\bga\b|severe|intolerable|cannot\s+tolerate|can't\s+tolerate|panic\s+attack|"
                              r"walked\s+out|stopped\s+(?:the\s+)?scan", _I)


def _pregnancy(text: str, flag: SafetyFlag) -> SafetyFlag:
    near = _window(text, flag.start, flag.end, 30, 40)
    status = "uncertain" if _PREG_UNCERTAIN.search(near) or flag.evidence.strip().startswith("?") else "active"
    return replace(flag, severity="any", status=status)


def _lexicon_hits(text: str, terms) -> list[re.Match]:
    if not terms:
        return []
    pattern = _term_pattern(tuple(terms))
    return list(pattern.finditer(text))


_PATTERN_CACHE: dict[tuple, re.Pattern] = {}


def _term_pattern(terms: tuple) -> re.Pattern:
    pat = _PATTERN_CACHE.get(terms)
    if pat is None:
        alts = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
        pat = _PATTERN_CACHE[terms] = re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])", _I)
    return pat


def _affirmed_term(text: str, m: re.Match, kind: str) -> bool:
    from radassist.safety import _Doc

    return not _Doc(text).negated(m.start(), m.end(), kind)


def _anticoagulation(text: str, flag: SafetyFlag, policy=None) -> SafetyFlag:
    low = text.lower()
    lex = getattr(policy, "lexicon", {}) or {}
    has_ap = bool(_ANTIPLATELET.search(low)) or any(
        _affirmed_term(text, m, "med") for m in _lexicon_hits(text, lex.get("antiplatelet")))
    has_ac = bool(_ANTICOAGULANT.search(low)) or any(
        _affirmed_term(text, m, "med") for m in _lexicon_hits(text, lex.get("anticoagulant")))
    kind = "both" if has_ap and has_ac else ("antiplatelet" if has_ap and not has_ac else "anticoagulant")
    if _ANTIPLATELET.search(flag.evidence) and not has_ac:
        kind = "antiplatelet"
    return replace(flag, severity="any", kind=kind)


def _claustrophobia(text: str, flag: SafetyFlag) -> SafetyFlag:
    ctx = _context(text, flag.start, flag.end)
    severe = bool(_CLAUSTRO_SEVERE.search(ctx))
    if re.search(r"\bmild|slight|manag\w*\s+with|ok\s+with|fine\s+with|tolerat\w*\s+with", ctx) and not re.search(
            r"fail|abort|refus|declin|despite", ctx):
        severe = False
    return replace(flag, severity="severe" if severe else "mild")


def _site_lexicon_flags(text: str, present: set[str], policy) -> list[SafetyFlag]:
    """Flags from terms the site added to the policy's lexicon (local brands, device names)."""
    lex = getattr(policy, "lexicon", {}) or {}
    out = []
    for key, ftype, kind in (("anticoagulant", "anticoagulation", "med"), ("antiplatelet", "anticoagulation", "med"),
                             ("metformin", "metformin", "med"), ("mri_unsafe_device", "mri-unsafe-implant", "device")):
        if ftype in present or not text:
            continue
        for m in _lexicon_hits(text, lex.get(key)):
            if _affirmed_term(text, m, kind):
                flag = SafetyFlag(ftype, text[m.start():m.end()], m.start(), m.end())
                if ftype == "anticoagulation":
                    flag = _anticoagulation(text, flag, policy)
                elif ftype == "mri-unsafe-implant":
                    flag = _implant(text, flag)
                out.append(flag)
                present.add(ftype)
                break
    return out


# --- entry points -----------------------------------------------------------------------------------
def assess(text: str, flags: list[SafetyFlag], policy=None, age: int | None = None, sex: str = "U") -> list[SafetyFlag]:
    """Add severity, status, kind, handled and notes to flags from ``check_notes(text)``; add the
    renal caution and unknown-implant findings the checker does not raise."""
    if policy is None:
        from radassist.safety_policy import SafetyPolicy

        policy = SafetyPolicy()
    out: list[SafetyFlag] = []
    for flag in flags:
        if flag.start < 0:
            out.append(flag)
        elif flag.type == "contrast-allergy":
            out.append(_contrast_allergy(text, flag))
        elif flag.type == "renal-impairment":
            out.append(_renal(text, flag, policy, age, sex))
        elif flag.type == "mri-unsafe-implant":
            out.append(_implant(text, flag))
        elif flag.type == "pregnancy":
            out.append(_pregnancy(text, flag))
        elif flag.type == "anticoagulation":
            out.append(_anticoagulation(text, flag, policy))
        elif flag.type == "claustrophobia":
            out.append(_claustrophobia(text, flag))
        else:
            out.append(flag)
    types = {f.type for f in out}
    if "renal-impairment" not in types and text:
        caution = _renal_caution(text, policy, age, sex)
        if caution is not None:
            out.append(caution)
    if "mri-unsafe-implant" not in types and text:
        m = _UNKNOWN_IMPLANT.search(text)
        if m and not _IMPLANT_CLEARED.search(_context(text, m.start(), m.end())):
            s, e = m.start(), m.end()
            out.append(SafetyFlag("mri-unsafe-implant", text[s:e], s, e, "unknown", "uncertain"))
    out += _site_lexicon_flags(text, {f.type for f in out}, policy)
    from radassist.domain import FLAG_TYPES

    rank = {t: i for i, t in enumerate(FLAG_TYPES)}
    return sorted(out, key=lambda f: rank.get(f.type, 99))


def assess_order(order, policy=None) -> list[SafetyFlag]:
    """Flags of one order, found once and assessed: what engines, the store and the GUI use."""
    notes = order.clinical_notes or ""
    return assess(notes, check_notes(notes), policy, order.age, order.sex)
