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
from radassist.safety import NEGATION_BEFORE, affirmed_match, check_notes

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
_IODINATED = re.compile(r"iodin|\bct\s+contra?st|contrst|\biv\s+contrast|omnipaque|iohexol|isovue|iopamidol|"
                        r"visipaque|iodixanol|optiray|ultravist|\bdye\b|cat\s+scan", _I)
_ALLERGY_RESOLVED = re.compile(
    r"clarif|was\s+told|actually|not\s+(?:a\s+)?(?:true|real)\s+allerg|de-?label|"
    r"(?:betadine|povidone|antiseptic|chlorhexidine|skin\s+prep|iodine\s+(?:prep|swab|paint|solution|tincture)|"
    r"shellfish|seafood|prawn|shrimp|lobster|crab|fish)|vasovagal|not\s+(?:an?\s+)?allerg|not\s+allergic|"
    r"no\s+(?:\w+\s+){0,2}(?:rxn|reaction)s?\s+(?:hx|history)|"
    r"tolerated\s+(?:\w+\s+){0,3}(?:contrast|ct|cect)|uneventful|without\s+(?:any\s+)?(?:issue|problem|reaction)|"
    r"no\s+reaction\s+(?:to|with|since|after)|since\s+(?:had|received)\s+(?:\w+\s+){0,3}contrast|"
    r"had\s+(?:\w+\s+){0,3}contrast\s+(?:\w+\s+){0,4}(?:since|fine|without)", _I)
_PREMED = re.compile(r"pre-?\s?med|premedicat|steroid\s+(?:prep|cover|protocol)|pre-?treat|13[\s-]?h(?:ou)?r|"
                     r"prednisone\s+\d+\s*mg|antihistamine\s+cover|accelerated\s+premed", _I)


_NEG_BEFORE = NEGATION_BEFORE
_affirmed = affirmed_match


def _contrast_allergy(text: str, flag: SafetyFlag, policy=None) -> SafetyFlag:
    ctx = _context(text, flag.start, flag.end)
    near = _window(text, flag.start, flag.end, 60, 140)
    lex = getattr(policy, "lexicon", {}) or {}
    site_severe = [m for m in _lexicon_hits(near, lex.get("severe_reaction")) if not _NEG_BEFORE.search(near[:m.start()])]
    site_mild = _lexicon_hits(near, lex.get("mild_reaction"))
    mild_only = re.search(r"(?:hives|rash|itch\w*|urticaria|nausea|flushing)\s+only|only\s+(?:mild|hives|a\s+rash|rash|itch)", near)
    explicit_moderate = re.search(r"\bmoderate\b", near) and not re.search(
        r"anaphyla|intubat|adrenaline|epinephrine|\bepi\b|icu", near)
    if (_affirmed(_SEVERE, near) or site_severe) and not mild_only and not explicit_moderate:
        severity = "severe"
    elif _affirmed(_MODERATE, near) and not mild_only:
        severity = "moderate"
    elif _MILD.search(near) or site_mild:
        severity = "mild"
    else:
        severity = "unknown"
    ev = flag.evidence.lower()
    kind = "gadolinium" if _GAD.search(ev) or (_GAD.search(near) and not _IODINATED.search(ev)) else (
        "iodinated" if _IODINATED.search(near) or "contrast" in ev else "unknown")
    status = "resolved" if _ALLERGY_RESOLVED.search(ctx) else "active"
    if re.search(r"treat(?:ing|ed)?\s+(?:it\s+)?as\s+(?:a\s+)?mild", ctx):
        severity = "mild"
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


_ON_DIALYSIS = re.compile(r"\b(?:on\s+|maintenance\s+)?(?:ha?emo|peritoneal\s+)?dialysis\b(?!\s+(?:planned|considered|"
                          r"discussed|may|might|if))|\b(?:MHD|CAPD|APD|CCPD)\b|\bon\s+(?:HD|PD)\b|\bHD\s+(?:via|MWF|TTS)", _I)


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
    if _DIALYSIS.search(ev) or _affirmed(_ON_DIALYSIS, text):
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
    if _affirmed(_RENAL_RESOLVED, ctx):
        status = "resolved"
    elif severity in ("aki",) and _UNCERTAIN.search(_window(text, flag.start, flag.end, 12, 0)):
        status = "uncertain"
    if severity == "aki" and status == "active":
        egfr = _last_egfr(text[flag.end:])
        if egfr is not None and egfr[0] >= 60:
            status = "resolved"
    if severity in ("aki", "impaired") and status == "active":
        for m in re.finditer(r"(?:now|today|improved\s+to|down\s+to|back\s+to)\s+(?:cr\s*|creat\w*\s*)?"
                             r"(\d{1,3}(?:\.\d{1,2})?)\b", ctx):
            value = float(m.group(1))
            if value <= 1.2 or 40 <= value <= 110:  # mg/dL or umol/L back in the normal range
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
    if re.search(r"no\s+device\s+(?:was\s+)?(?:fitted|implanted|inserted|placed|in\s+situ)|"
                 r"(?:advised|considered|offered|recommended|discussed)\s+but\s+(?:\w+\s+){0,3}"
                 r"(?:declined|refused|not\s+(?:needed|fitted|implanted|done))|never\s+(?:fitted|implanted)", ctx):
        status = "resolved"  # the device was never put in
    handled = ""
    cleared = _IMPLANT_CLEARED.search(ctx)
    if cleared and not _UNKNOWN_IMPLANT.search(near):
        handled = cleared.group(0)
    m = _SAFETY_CLEARED.search(ctx)
    if m and not _NEG_BEFORE.search(ctx[max(0, m.start() - 15):m.start()]) and not re.search(
            r"not\s+(?:been\s+|yet\s+)?(?:cleared|allowed|approved)|declin|refus", m.group(0)):
        handled = m.group(0)
    if _NOT_IMPLANTED.search(ctx):
        status, handled = "resolved", ""
    return replace(flag, severity=severity, status=status, handled=handled)


_SAFETY_CLEARED = re.compile(r"(?:mri?|mr)\s+safety[^.;\n]{0,80}?(?:cleared|allowed|approved|ok(?:ay)?\b|passed|happy)|"
                             r"(?:cleared|allowed|approved)\s+(?:for|by)\s+(?:the\s+)?(?:mri?\b|mr\b|scanning|the\s+scan|"
                             r"(?:mri?\s+|mr\s+)?safety)|orbit\w*\s+(?:xr|x-?rays?|radiographs?|films?)\s+(?:\w+\s+){0,3}"
                             r"(?:clear|negative|normal)", _I)
_NOT_IMPLANTED = re.compile(r"not\s+(?:yet\s+)?implanted|not\s+implanted\s+yet|(?:implant|device|pacemaker|scs)\s+"
                            r"candida|candidate\s+(?:for\s+)?(?:a\s+)?(?:cochlear|pacemaker|implant|device|scs)|"
                            r"before\s+(?:deciding\s+(?:on\s+)?|starting\s+|the\s+|an?\s+)?(?:pacemaker|scs|implant|"
                            r"device|stimulator)(?:\s+trial)?|(?:scs|stimulator)\s+trial\s+planned", _I)


# --- pregnancy, anticoagulation, claustrophobia -----------------------------------------------------
_PREG_UNCERTAIN = re.compile(r"\?\s*preg|possib\w*\s+(?:early\s+)?preg|may\s+be\s+preg|could\s+be\s+preg|"
                             r"r/o\s+preg|rule\s+out\s+preg|preg\w*\s+(?:status\s+)?(?:unknown|unclear|not\s+known)|"
                             r"(?:hcg|upt|pregnancy\s+test)\s+(?:pending|awaited|awaiting|not\s+(?:yet\s+)?done)|"
                             r"awaiting\s+(?:b-?\s?)?(?:hcg|upt|pregnancy\s+test)|lmp\s+(?:unknown|unsure|late)|"
                             r"period\s+(?:is\s+)?late|missed\s+(?:a\s+)?period|preg\w*\s+not\s+(?:been\s+)?"
                             r"(?:excluded|ruled\s+out)|(?:b(?:eta)?[\s-]?)?hcg\s+(?:awaited|not\s+(?:yet\s+)?(?:done|sent|back))|"
                             r"preg\w*\s+status\s+(?:is\s+)?(?:unknown|unclear|not\s+known)|awaiting\s+(?:a\s+)?preg\w*\s+test", _I)
# Drug names come from the policy's lexicon (one list, site-editable); these generic words are not drug names.
_ANTIPLATELET_WORDS = ("antiplatelet", "antiplatelets", "dapt", "asa")
_ANTICOAGULANT_WORDS = ("anticoagulant", "anticoagulants", "anticoagulation", "anticoagulated", "blood thinner",
                        "blood thinners", "inr", "doac", "noac", "lmwh")


def _drug_pattern(policy, key: str, words: tuple[str, ...]) -> re.Pattern:
    lex = getattr(policy, "lexicon", {}) or {}
    return _term_pattern(tuple(lex.get(key, ())) + words)


_DECLINES = r"declin\w*\s+(?:\w+\s+){0,2}(?:sedation|ga\b|general|an(?:a)?esth|mri|scan|to\b)"
_CLAUSTRO_SEVERE = re.compile(r"fail|abort|unable|could\s*n[o']t|couldn't|refus|" + _DECLINES + r"|despite|general\s+an(?:a)?esth|"
                              r"\bga\b|severe|intolerable|cannot\s+tolerate|can't\s+tolerate|panic\s+attack|"
                              r"walked\s+out|stopped\s+(?:the\s+)?scan", _I)


_PREG_HISTORICAL = re.compile(r"\bwas\s+pregnant|\bdelivered\b|\bpost-?partum\b|\bgave\s+birth|\blast\s+year\b|"
                              r"\bprevious(?:ly)?\s+pregnan|\bmiscarri", _I)


def _pregnancy(text: str, flag: SafetyFlag) -> SafetyFlag:
    near = _window(text, flag.start, flag.end, 30, 40)
    ctx = _context(text, flag.start, flag.end, after_sentences=0)
    status = "uncertain" if _PREG_UNCERTAIN.search(near) or flag.evidence.strip().startswith("?") else "active"
    if status == "active" and _PREG_HISTORICAL.search(ctx) and not re.search(r"\bcurrently\b|\bnow\s+\d", ctx):
        status = "historical"
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
    antiplatelet = _drug_pattern(policy, "antiplatelet", _ANTIPLATELET_WORDS)
    anticoagulant = _drug_pattern(policy, "anticoagulant", _ANTICOAGULANT_WORDS)
    has_ap = _affirmed(antiplatelet, low)
    has_ac = _affirmed(anticoagulant, low)
    kind = "both" if has_ap and has_ac else ("antiplatelet" if has_ap and not has_ac else "anticoagulant")
    if antiplatelet.search(flag.evidence) and not has_ac:
        kind = "antiplatelet"
    return replace(flag, severity="any", kind=kind)


_CLAUSTRO_MILD = re.compile(r"\bmild|slight|a\s+bit|manag\w*\s+with|ok\s+with|fine\s+with|tolerat\w*\s+with|"
                            r"willing|happy\s+to|not\s+(?:too\s+|very\s+)?sever|scanned\s+fine|no\s+failed|never\s+failed", _I)
_CLAUSTRO_HANDLED = re.compile(r"(?:accepts?|agreed\s+to|under|with|for)\s+(?:a\s+)?(?:ga|general\s+an(?:a)?esth\w*)\b|"
                               r"(?:ga|general\s+an(?:a)?esth\w*|sedation|anaesthetics?|anesthesia)\s+"
                               r"(?:is\s+)?(?:arranged|booked|planned|organi[sz]ed|in\s+place)|open\s+(?:bore\s+)?mri\s+(?:booked|arranged)", _I)


def _claustrophobia(text: str, flag: SafetyFlag) -> SafetyFlag:
    ctx = _context(text, flag.start, flag.end)
    severe = _affirmed(_CLAUSTRO_SEVERE, ctx)
    if _CLAUSTRO_MILD.search(ctx) and not _affirmed(re.compile(r"fail|abort|refus|" + _DECLINES + "|despite", _I), ctx):
        severe = False
    m = _CLAUSTRO_HANDLED.search(ctx)
    handled = m.group(0) if m else ""
    return replace(flag, severity="severe" if severe else "mild", handled=handled)


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


_MED_STOPPED = re.compile(r"^[^.;\n]{0,45}?\b(?:stopped|discontinued|ceased|completed|finished|d/c'?d|"
                          r"no\s+longer\s+(?:on|taking))\b", _I)
_OTHER_PERSON = re.compile(r"\b(?:husband|wife|mother|mum|father|dad|son|daughter|brother|sister|partner|"
                           r"relative|carer|caregiver|spouse)(?:'s)?\s+(?:is|was|has|had|gets|got)?\s*(?:\w+\s+){0,2}$", _I)


def _refine_status(text: str, flag: SafetyFlag) -> SafetyFlag:
    """A medication "course completed and stopped", "(aspirin) stopped 1 month back": no longer taken."""
    if flag.type in ("anticoagulation", "metformin") and flag.start >= 0 and flag.status == "active":
        if _MED_STOPPED.search(text[flag.end:]) and not re.search(
                r"^[^.;\n]{0,45}?\b(?:restart|resume|re-?start)", text[flag.end:], _I):
            return replace(flag, status="historical")
    return flag


def _answered_no(text: str, flag: SafetyFlag) -> bool:
    """ "Anaphylaxis to contrast? No - mum had a reaction", "gadolinium reaction? none known"."""
    if flag.start < 0:
        return False
    return bool(re.match(r"\s*\?+\s*(?:no|n|n/a|na|none|nil|negative|neg|never|denies)(?![\w/])",
                         text[flag.end:flag.end + 20], _I))


def _about_someone_else(text: str, flag: SafetyFlag) -> bool:
    """ "Her husband is claustrophobic": a finding about another person."""
    if flag.start < 0:
        return False
    before = text[max(0, flag.start - 40):flag.start]
    before = before[max(before.rfind("."), before.rfind(";")) + 1:]
    return bool(_OTHER_PERSON.search(before))


_AGENT = (r"(?:contrast|contrst|dye|iodine|iodinated|omnipaque|iohexol|isovue|visipaque|optiray|ultravist|"
          r"gadolinium|gad|gadavist|dotarem|magnevist|multihance|prohance|eovist|clariscan|omniscan)")
_REACTION_WORDS = (r"(?:anaph?[ae]la\w*|allerg\w*|alerg\w*|hives|urticari\w*|rash|itch\w*|wheez\w*|swelling|"
                   r"reaction|rxn|nausea|vomit\w*|hypotensi\w*|sob|shortness\s+of\s+breath|stridor|angio-?o?edema)")
_SUPP_CONTRAST = re.compile(
    rf"\b{_REACTION_WORDS}\b[^.;\n]{{0,60}}?\b(?:after|with|to|from|post|following)\s+(?:\w+\s+){{0,2}}{_AGENT}\b|"
    rf"\b(?:ct\s+|iv\s+|mri?\s+)?{_AGENT}\s*(?:->|→|:|-|caused|gave|led\s+to)\s*(?:\w+\s+){{0,3}}{_REACTION_WORDS}\b|"
    rf"\b(?:alerg\w*|allerg\w*)\s+(?:to\s+)?(?:\w+\s+){{0,2}}{_AGENT}\b", _I)
_SUPP_PREGNANCY = re.compile(
    r"(?<![\w+])\+\s*(?:upt|b-?hcg|beta[\s-]?hcg|hcg|pregnancy\s+test|preg\s+test)\b|"
    r"\b(?:upt|b-?hcg|hcg)\s*\+(?![\w+])|"
    r"\b\d{1,2}\s*(?:wks?|weeks?)\s+preg\b|\b(?:G\d{1,2}\s*P\d{1,2}|gravida\s+\d{1,2}(?:\s+para\s+\d{1,2})?)"
    r"[^.;\n]{0,25}?\b(?:at|currently|now)\s+\d{1,2}\s*(?:wks?|weeks?)\b", _I)
_SUPP_IMPLANT = re.compile(r"never\s+had\s+(?:\w+\s+){0,2}orbits?\s+(?:screened|x-?rayed|cleared|checked)|"
                           r"orbits?\s+never\s+(?:screened|cleared|x-?rayed)", _I)
_SUPP_CLAUSTRO = re.compile(r"\b(?:anxious|nervous|uneasy)\s+(?:in|about|with|inside)\s+(?:small\s+|enclosed\s+|confined\s+|"
                            r"tight\s+|closed\s+){1,2}(?:spaces?|rooms?|scanners?)", _I)


def _supplementary_flags(text: str, present: set[str], policy=None) -> list[SafetyFlag]:
    """Phrasings the checker's patterns miss (typos, arrows, obstetric shorthand, uncertainty)."""
    out: list[SafetyFlag] = []
    if not text:
        return out

    def add(ftype, m, **kw):
        s, e = m.start(), m.end()
        out.append(SafetyFlag(ftype, text[s:e], s, e, **kw))
        present.add(ftype)

    low = text.lower()
    m: re.Match[str] | None

    def mentions(*needles: str) -> bool:  # a cheap test before each regex
        return any(n in low for n in needles)

    if "contrast-allergy" not in present and mentions(
            "contra", "contrst", "dye", "iodin", "omnipaque", "iohexol", "isovue", "visipaque", "optiray",
            "ultravist", "gad", "dotarem", "magnevist", "multihance", "prohance", "eovist", "clariscan", "omniscan"):
        for m in _SUPP_CONTRAST.finditer(text):
            if not _NEG_BEFORE.search(text[max(0, m.start() - 25):m.start()]) and not re.search(
                    r"\b(?:no|none|nil|never|denies|denied|negative)\b", text[m.start():m.end()], _I) and not re.match(
                    r"\s*[:=-]?\s*(?:none|nil|no|negative|denied)\b", text[m.end():], _I):
                add("contrast-allergy", m)
                out[-1] = _contrast_allergy(text, out[-1], policy)
                break
    if "pregnancy" not in present and mentions("preg", "hcg", "upt", "period", "gravida", "lmp", "wk", "week"):
        m = _SUPP_PREGNANCY.search(text)
        if m:
            add("pregnancy", m, severity="any")
        else:
            m = _PREG_UNCERTAIN.search(text)
            if m:
                add("pregnancy", m, severity="any", status="uncertain")
    if "mri-unsafe-implant" not in present and "orbit" in low:
        m = _SUPP_IMPLANT.search(text)
        if m:
            add("mri-unsafe-implant", m, severity="unknown", status="uncertain")
    if "claustrophobia" not in present and mentions("anxious", "nervous", "uneasy"):
        m = _SUPP_CLAUSTRO.search(text)
        if m and not _NEG_BEFORE.search(text[max(0, m.start() - 25):m.start()]):
            add("claustrophobia", m, severity="mild")
    if "renal-impairment" not in present and mentions("dialy", "hd", "pd", "capd", "apd"):
        m = _ON_DIALYSIS.search(text)
        if m and not _NEG_BEFORE.search(text[max(0, m.start() - 25):m.start()]):
            add("renal-impairment", m, severity="dialysis")
    return out


_RENAL_NEEDLE = re.compile(r"gfr|crcl|creat|\bs?cr\b")
_IMPLANT_NEEDLES = ("clip", "implant", "device", "stimulat", "pacemaker", "ppm", "icd", "valve", "coil", "stent",
                    "hardware", "prosthes", "pump", "port", "fragment", "foreign", "unknown", "safety", "orbit", "eye",
                    "clear", "metal", "weld", "grind", "machinist", "shrapnel", "bullet", "retained")


# --- entry points -----------------------------------------------------------------------------------
def assess(text: str, flags: list[SafetyFlag], policy=None, age: int | None = None, sex: str = "U") -> list[SafetyFlag]:
    """Add severity, status, kind, handled and notes to flags from ``check_notes(text)``; add the
    renal caution and unknown-implant findings the checker does not raise."""
    if policy is None:
        from radassist.safety_policy import shipped_policy

        policy = shipped_policy()
    out: list[SafetyFlag] = []
    for flag in flags:
        if flag.start < 0:
            out.append(flag)
        elif flag.type == "contrast-allergy":
            out.append(_contrast_allergy(text, flag, policy))
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
    low = text.lower() if text else ""
    if "renal-impairment" not in types and text and _RENAL_NEEDLE.search(low):
        caution = _renal_caution(text, policy, age, sex)
        if caution is not None:
            out.append(caution)
    if "mri-unsafe-implant" not in types and text and any(n in low for n in _IMPLANT_NEEDLES):
        for m in _UNKNOWN_IMPLANT.finditer(text):
            if _NEG_BEFORE.search(text[max(0, m.start() - 25):m.start()]) or re.search(
                    r"^\W{0,3}(?:\w+\W+){0,3}(?:removed|extracted|explanted)", text[m.end():m.end() + 40], _I):
                continue
            ctx = _context(text, m.start(), m.end())
            cleared = _IMPLANT_CLEARED.search(ctx)
            if cleared and not _NEG_BEFORE.search(ctx[max(0, cleared.start() - 12):cleared.start()] + " "):
                continue
            s, e = m.start(), m.end()
            out.append(SafetyFlag("mri-unsafe-implant", text[s:e], s, e, "unknown", "uncertain"))
            break
    out += _supplementary_flags(text, {f.type for f in out}, policy)
    out += _site_lexicon_flags(text, {f.type for f in out}, policy)
    out = [_refine_status(text, f) for f in out]
    out = [f for f in out if not _about_someone_else(text, f) and not _answered_no(text, f)]
    from radassist.domain import FLAG_TYPES

    rank = {t: i for i, t in enumerate(FLAG_TYPES)}
    return sorted(out, key=lambda f: rank.get(f.type, 99))


def assess_order(order, policy=None) -> list[SafetyFlag]:
    """Flags of one order, found once and assessed: what engines, the store and the GUI use."""
    notes = order.clinical_notes or ""
    return assess(notes, check_notes(notes), policy, order.age, order.sex)
