"""Rule-based safety flags from free-text clinical notes.

Pure Python, no Qt and no ML.  Each flag type has a set of concept patterns
(regular expressions written so they cannot backtrack catastrophically: every
repetition is bounded or deterministic).  A concept mention only raises a flag
when it is not negated, NegEx style:

* pre-negation triggers ("no", "denies", "negative for", "not", "without",
  "never", "NKDA", ...) within a few words before the concept, in the same
  clause (scope stops at sentence ends, ";", newlines, "but", "however",
  "except", "other than" ... and at a comma unless the concept continues a
  negated list: "denies fever, chills, or pregnancy");
* post-negation triggers shortly after the concept ("pregnancy: negative",
  "pacemaker removed", "warfarin discontinued", "AKI ruled out");
* for medications, "off", "stopped", "discontinued", "no longer" also negate
  ("held"/"hold" do not: a held drug is still the patient's drug).

Uncertainty ("r/o", "?", "possible", "evaluate for") is *not* negation: a
possible hazard is still worth a flag.  Numeric findings (eGFR, creatinine,
INR) are judged by value, not by negation.

``check_notes`` returns at most one flag per type (the first positive mention),
in ``FLAG_TYPES`` order, with ``text[start:end] == evidence``.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache
from typing import Callable

from radassist.domain import FLAG_TYPES, SafetyFlag

__all__ = ["FLAG_LABELS", "check_notes", "flag_types"]

FLAG_LABELS: dict[str, str] = {
    "contrast-allergy": "Contrast allergy",
    "renal-impairment": "Renal impairment",
    "pregnancy": "Pregnancy",
    "mri-unsafe-implant": "MRI-unsafe implant",
    "anticoagulation": "Anticoagulation",
    "metformin": "Metformin",
    "claustrophobia": "Claustrophobia",
}

_I = re.IGNORECASE

# --------------------------------------------------------------------------- #
# Negation machinery
# --------------------------------------------------------------------------- #

_WINDOW = 160  # characters looked at before a concept
_POST_WINDOW = 60  # characters looked at after a concept
_MAX_GAP = 5  # words allowed between a pre-negation trigger and the concept
_LIST_GAP = 12  # ... when the concept continues a list ("no A, B, or C")

# Sentence/clause ends: ".", "!" or "?" followed by space or end (so "3.8",
# "?PE" and single-letter abbreviations like "i.v." do not split), ";", newline.
_HARD = re.compile(r"[.!?](?<!\.[a-z][.!?])(?=\s|$)|[;\n\r|]", _I)
# Words that end a negation's scope.
_TERM = re.compile(
    r"\b(?:but|however|although|though|yet|despite|except|whereas|apart\s+from|"
    r"aside\s+from|other\s+than|besides|and\s+(?:is|has|was|takes|uses|on|currently|now))\b",
    _I,
)
_PRE_NEG = re.compile(
    r"\b(?:no|not|never|nor|neither|denie[sd]|deny|denying|without|w/o|"
    r"negative\s+for|neg\s+for|free\s+of|absence\s+of|ruled?\s+out|rules\s+out|"
    r"excluded|nkda|nka|none|unlikely\s+to\s+be)\b",
    _I,
)
# Trigger that only negates the word right after it: "non-pregnant".
_PRE_NEG_ADJ = re.compile(r"\bnon[\s-]?$", _I)
# Things that look like negations but are not.
_PSEUDO = re.compile(
    r"\b(?:no\s+(?:change|increase|interval|significant\s+change)|not\s+only|"
    r"not\s+necessarily|(?:whether|if)\s+or\s+not|or\s+not|if\s+not)\b",
    _I,
)
_MED_PRE_NEG = re.compile(
    r"\b(?:off|stopped|stopping|discontinued|discontinuing|d/c'?d|dc'?d|d/c|"
    r"ceased|no\s+longer|previously\s+on|formerly\s+on|quit)\b",
    _I,
)
_POST_NEG = re.compile(
    r"^\W{0,4}(?:(?:is|was|are|were|has\s+been|been|test|tests|testing|status|screen|hcg|upt)\W+){0,2}"
    r"(?:negative|neg|ruled\s+out|excluded|denied|absent|not\s+(?:present|seen|detected|identified))\b"
    r"|^\s*[:=-]\s*(?:none|no|neg|negative|denied|denies|nkda|nka|n)\b",
    _I,
)
_MED_POST_NEG = re.compile(
    r"^\W{0,4}(?:(?:was|is|has\s+been|been|were|recently|already)\W+){0,2}"
    r"(?:stopped|discontinued|d/c'?d|dc'?d|ceased|contraindicated)\b",
    _I,
)
_DEVICE_POST_NEG = re.compile(
    r"^\W{0,4}(?:(?:was|is|has\s+been|been|since|now|previously)\W+){0,2}"
    r"(?:removed|explanted|extracted)\b",
    _I,
)


def _last_end(pattern: re.Pattern, s: str) -> int:
    end = 0
    for m in pattern.finditer(s):
        end = m.end()
    return end


_WORDS = re.compile(r"[\w/]+")
_TOKEN = re.compile(r"\w+")
_LIST_HEAD = re.compile(r"\s*(?:or|nor)\b", _I)
_LIST_NEXT = re.compile(r"\s*,?[^,]{0,40}?\b(?:or|nor)\b", _I)
# A comma piece starting like this is a new statement, not a list item.
_NOT_LIST = re.compile(
    r"\s*(?:on|is|are|was|has|had|takes|taking|using|uses|currently|now|with|and|but|had|pt|patient)\b", _I
)


def _pre_scope(pre: str, post: str) -> tuple[str, bool]:
    """Negation scope before a concept; flag says 'inside a negated list'."""
    win = pre[_last_end(_TERM, pre):]
    comma = win.rfind(",")
    if comma < 0:
        return win, False
    pieces = win.split(",")
    short = all(len(_WORDS.findall(p)) <= 3 for p in pieces[1:])
    tail = pieces[-1]
    if short and not _NOT_LIST.match(tail) and (_LIST_HEAD.match(tail) or _LIST_NEXT.match(post)):
        return win, True
    return tail, False


def _pre_negated(pre: str, post: str, med: bool) -> bool:
    win, is_list = _pre_scope(pre, post)
    if _PRE_NEG_ADJ.search(win):
        return True
    max_gap = _LIST_GAP if is_list else _MAX_GAP
    patterns = (_PRE_NEG, _MED_PRE_NEG) if med else (_PRE_NEG,)
    for pat in patterns:
        for m in pat.finditer(win):
            if pat is _PRE_NEG and _PSEUDO.match(win, m.start()):
                continue
            if len(_WORDS.findall(win, m.end())) <= max_gap:
                return True
    return False


def _post_scope(post: str) -> str:
    m = _TERM.search(post)
    if m:
        post = post[:m.start()]
    comma = post.find(",")
    if comma >= 0:
        post = post[:comma]
    return post


@lru_cache(maxsize=4096)
def _negated_windows(pre: str, post: str, kind: str) -> bool:
    """Negation decision from the clause text before and after a concept."""
    med = kind == "med"
    if _pre_negated(pre, post, med):
        return True
    post = _post_scope(post)
    if _POST_NEG.search(post):
        return True
    if med and _MED_POST_NEG.search(post):
        return True
    if kind == "device" and _DEVICE_POST_NEG.search(post):
        return True
    return False


class _Doc:
    """One note: original text, a same-length lower-cased copy, clause bounds."""

    __slots__ = ("text", "low", "_starts", "_ends", "_vocab", "_occ")

    def __init__(self, text: str):
        self.text = text
        low = text.lower()
        if len(low) != len(text):  # rare characters whose lower case is longer
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        self.low = low
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self._vocab: str | None = None
        self._occ: dict[str, list[int]] = {}

    def occurrences(self, needle: str) -> list[int]:
        """Start offsets of ``needle`` (a run of word characters) in the note."""
        occ = self._occ.get(needle)
        if occ is None:
            if self._vocab is None:
                # Distinct words: a cheap first test for needles absent from a long note.
                # (A run of 40+ word characters cannot hold a word-bounded match.)
                self._vocab = " ".join({w for w in _TOKEN.findall(self.low) if len(w) < 40})
            occ = []
            if needle in self._vocab:
                find = self.low.find
                i = find(needle)
                while i >= 0:
                    occ.append(i)
                    i = find(needle, i + 1)
            self._occ[needle] = occ
        return occ

    def _bounds(self) -> None:
        starts, ends = [], []
        for m in _HARD.finditer(self.low):
            starts.append(m.start())
            ends.append(m.end())
        self._starts, self._ends = starts, ends

    def pre(self, start: int, width: int = _WINDOW) -> str:
        """Lower-cased text before ``start`` in the same clause (at most ``width``)."""
        if self._starts is None:
            self._bounds()
        i = bisect_right(self._ends, start)
        lo = self._ends[i - 1] if i else 0
        return self.low[max(lo, start - width):start]

    def post(self, end: int, width: int = _POST_WINDOW) -> str:
        """Lower-cased text after ``end`` in the same clause (at most ``width``)."""
        if self._starts is None:
            self._bounds()
        starts = self._starts
        assert starts is not None  # _bounds() sets it
        i = bisect_left(starts, end)
        hi = starts[i] if i < len(starts) else len(self.low)
        return self.low[end:min(hi, end + width)]

    def negated(self, start: int, end: int, kind: str) -> bool:
        return _negated_windows(self.pre(start), self.post(end), kind)


# A negation cue a few words before a phrase ("no airway sx", "denies prior reaction", "negative for
# hcg"): the one quick check for callers that look at a single phrase (flag assessment, the ranking's
# unless/only-if rules); `_Doc.negated` is the full clause-window test the checker itself uses.
NEGATION_BEFORE = re.compile(
    r"(?:\bno|\bnot|\bnil|\bwithout|\bdenie[sd]|\bdeny|\bnever|\bw/o|\bnon|\bnegative\s+for|\bclear\s+of)"
    r"[\s-]+(?:[\w/]+[\s-]+){0,3}$", re.I)


def negated_before(text: str, start: int, window: int = 25) -> bool:
    """Whether a negation cue sits in the ``window`` characters before ``start``."""
    return bool(NEGATION_BEFORE.search(text[max(0, start - window):start]))


def affirmed_match(pattern: re.Pattern, text: str, window: int = 25) -> bool:
    """A match of ``pattern`` in ``text`` that no negation cue precedes."""
    return any(not negated_before(text, m.start(), window) for m in pattern.finditer(text))


# --------------------------------------------------------------------------- #
# Concept patterns
# --------------------------------------------------------------------------- #

_CMP = r"(<=|>=|=<|=>|<|>|≤|≥|less\s+than|greater\s+than|under|over|below|above)?"
# Words that may sit between a lab name and its value ("Cr of 2.4", "egfr: 25").
_LINK = (
    r"(?:\s*(?::|=|~|is|was|of|at|now|today|currently|elevated|increased|rising|"
    r"up|to|down|dropped|level|value|result|mg/dl|\([^()\n]{0,25}\))){0,4}\s*"
)
# Further values in a trend ("Cr 1.2 -> 2.4").
_TREND = r"((?:\s*(?:->|-->|→|=>|to|then|now)\s*\d{1,4}(?:\.\d{1,3})?){0,4})"


_WS_RUN = re.compile(r"(\\s|\[\\s-\])([+*])(?![?{])")


def _bound_ws(regex: str) -> str:
    """Bound whitespace repetitions so that no pattern can backtrack badly."""
    return _WS_RUN.sub(lambda m: m.group(1) + ("{1,12}" if m.group(2) == "+" else "{0,12}"), regex)


class _Pattern:
    """A concept pattern.

    Case-insensitive patterns (the default) are written in lower case and run,
    case-sensitively and therefore fast, on the lower-cased note.  ``original``
    patterns run on the note as written (for abbreviations such as "HD").
    """

    __slots__ = ("regex", "kind", "check", "original", "needles", "co_needles", "before", "after")

    def __init__(self, regex: str, kind: str = "concept",
                 check: Callable[[re.Match, str], bool] | None = None, original: bool = False):
        self.regex = re.compile(_bound_ws(regex))
        self.kind = kind  # concept | med | device | value
        self.check = check
        self.original = original
        # Lower-case strings of which every match contains at least one; the
        # regex only runs in windows around them (see ``_scan_windows``).
        self.needles: tuple[str, ...] = ()
        # ... and, when set, also one of these within the same window.
        self.co_needles: tuple[str, ...] = ()
        self.before = _BEFORE  # longest stretch of a match before its needle
        self.after = _AFTER  # ... and after it


_BEFORE = 150
_AFTER = 150
_MARGIN = 80  # look-ahead room at a window's end


def _needles(patterns: list[_Pattern], spec: list[tuple[str, ...]],
             co: dict[int, tuple[str, ...]] | None = None,
             before: dict[int, int] | None = None, after: dict[int, int] | None = None) -> None:
    assert len(patterns) == len(spec)
    for i, (pat, needles) in enumerate(zip(patterns, spec)):
        pat.needles = needles
        pat.co_needles = (co or {}).get(i, ())
        pat.before = (before or {}).get(i, _BEFORE)
        pat.after = (after or {}).get(i, _AFTER)


def _scan_windows(doc: "_Doc", pat: _Pattern) -> list[tuple[int, int]]:
    """Merged [lo, hi) spans of the note that can hold a match of ``pat``."""
    n = len(doc.low)
    spans: list[tuple[int, int]] = []
    before = pat.before
    co: list[int] = []
    if pat.co_needles:
        co = sorted(i for c in pat.co_needles for i in doc.occurrences(c))
        if not co:
            return []
    for needle in pat.needles:
        after = len(needle) + pat.after
        for i in doc.occurrences(needle):
            lo, hi = (i - before if i > before else 0), i + after
            if co:
                k = bisect_left(co, lo)
                if k == len(co) or co[k] > hi:
                    continue
            spans.append((lo, min(n, hi + _MARGIN)))
    if not spans:
        return []
    spans.sort()
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _values(m: re.Match) -> list[float]:
    vals = [float(m.group("v"))]
    trend = m.group("trend") or ""
    vals += [float(x) for x in re.findall(r"\d{1,4}(?:\.\d{1,3})?", trend)]
    return vals


def _is_lower_bound(cmp: str | None) -> bool:
    return cmp is not None and cmp.strip().lower() in (">", ">=", "=>", "≥", "greater than", "over", "above")


def _gfr_low(m: re.Match, text: str) -> bool:
    cmp = m.group("cmp")
    if _is_lower_bound(cmp):
        return False
    vals = _values(m)
    if cmp:  # "< 30" style upper bound
        return vals[0] <= 30
    return any(v < 30 for v in vals)


def _creatinine_high(m: re.Match, text: str) -> bool:
    cmp = m.group("cmp")
    if cmp and not _is_lower_bound(cmp):
        return False  # "Cr < 1.0"
    after = text[m.end():m.end() + 15].lower()
    micromol = bool(re.match(r"\s*(?:µ|μ|u|micro)mol", after))
    word = m.group("lab").lower().startswith("creatinine")
    for v in _values(m):
        if micromol or (word and 20 < v < 2000):
            if v >= 177:
                return True
        elif v <= 20 and v >= 2.0:
            return True
    return False


def _inr_high(m: re.Match, text: str) -> bool:
    cmp = m.group("cmp")
    if cmp and not _is_lower_bound(cmp):
        return False
    return any(2.0 <= v <= 20 for v in _values(m))


_ALLERGY_EXCEPT = re.compile(
    r"\ballerg(?:y|ies|ic)(?:\s+\w+){0,2}?\s+(?:except|other\s+than|besides|apart\s+from|aside\s+from)"
    r"(?:\s+(?:for|to))?\s*$"
)


def _after_allergy_exception(m: re.Match, text: str) -> bool:
    return bool(_ALLERGY_EXCEPT.search(text[max(0, m.start() - 60):m.start()]))


# Contrast agents and their modifiers.
_CMOD = (
    r"(?:(?:iv|i\.v\.|intravenous|ct|cat\s+scan|iodinated|iodine|ionic|non-?ionic|low-?osmolar|"
    r"mri?|mr|gadolinium|gad|gd|prior|previous|radiographic|radiologic|the|any)[\s-]+){0,4}"
)
_CTERM = (
    r"(?:contrast(?:\s+(?:media|medium|dye|agents?|material))?|radio-?contrast|iodine|"
    r"(?<!hair\s)(?<!food\s)dyes?|gadolinium(?:[\s-]based\s+contrast(?:\s+agents?)?)?|gbcas?|"
    r"omnipaque|iohexol|isovue|iopamidol|visipaque|iodixanol|optiray|ioversol|ultravist|iopromide|"
    r"gadavist|gadobutrol|dotarem|gadoterate|magnevist|multihance|prohance|eovist|clariscan|omniscan)"
)
_CNOT_FOLLOW = (
    r"(?![\s-]*(?:study|studies|enhanced|ct\b|scan|exam|given|administered|injection|was|is|"
    r"bolus|timing|phase|load|nephropathy|induced\s+nephro))"
)
_REACTION = (
    r"(?:allerg(?:y|ies|ic)|anaphyla(?:xis|ctic|ctoid)(?:\s+reactions?)?|hives|urticaria|rash|"
    r"reactions?|rxns?|hypersensitivity|sensitivity|intolerance|bronchospasm|laryngeal\s+edema|"
    r"angioedema|itch(?:ing|y)?|prurit(?:us|ic))"
)
_ALLERGY_ITEM = r"[^,/;&()\n.:]{1,40}(?:\s*\([^()\n]{0,40}\))?\s*[,/;&]\s*"

_CTERM_NEEDLES = (
    "contrast", "iodin", "dye", "gadolin", "gbca", "omnipaque", "iohexol", "isovue", "iopamidol",
    "visipaque", "iodixanol", "optiray", "ioversol", "ultravist", "iopromide", "gadavist",
    "gadobutrol", "dotarem", "gadoterate", "magnevist", "multihance", "prohance", "eovist",
    "clariscan", "omniscan",
)

_CONTRAST = [
    # "anaphylaxis to IV contrast", "allergic to iodine", "hives after CT contrast"
    _Pattern(
        rf"\b{_REACTION}\s+(?:reaction\s+)?(?:to|with|from|after|following|post|on)\s+{_CMOD}{_CTERM}\b"
    ),
    # "contrast allergy", "prior contrast reaction", "iodine allergy", "gadolinium reaction"
    _Pattern(
        rf"\b{_CMOD}{_CTERM}[\s-]+(?:induced\s+|related\s+)?(?:allerg(?:y|ies|ic)|anaphyla\w*|"
        rf"reactions?|rxns?|hypersensitivity|sensitivity|intolerance|hives|urticaria)\b"
    ),
    # "Allergies: penicillin, iodinated contrast (hives)", "allergic to PCN and contrast"
    _Pattern(
        rf"\ballerg(?:y|ies|ic)\s*(?::|-|to\b|includes?\b|including\b|list\b)\s*"
        rf"(?:{_ALLERGY_ITEM}){{0,6}}"
        rf"(?:[^,/;&()\n.:]{{0,40}}?(?:\b(?:and|or)|&)\s+)?{_CMOD}{_CTERM}\b{_CNOT_FOLLOW}"
    ),
    # "No allergies except contrast": the concept starts after "except", so the
    # negation of "allergies" does not reach it.
    _Pattern(rf"\b{_CMOD}{_CTERM}\b{_CNOT_FOLLOW}", check=_after_allergy_exception),
    # "premedication required for contrast", "premedicated for IV contrast"
    _Pattern(
        rf"\bpre-?\s?med(?:ication|icated|icate|s|ded)?\b(?:\s+[\w/-]+){{0,5}}?\s+"
        rf"(?:for|before|prior\s+to|with)\s+{_CMOD}{_CTERM}\b"
    ),
    _Pattern(rf"\b{_CMOD}{_CTERM}\s+(?:steroid\s+)?pre-?\s?med\w*"),
    _Pattern(
        r"\b(?:steroid|prednisone|methylprednisolone)\s+pre-?\s?med\w*|"
        r"\bpre-?\s?med(?:ication|icated|icate)?\s+(?:with\s+)?(?:steroids?|prednisone|"
        r"methylprednisolone|benadryl|diphenhydramine)\b"
    ),
]
_REACTION_NEEDLES = (
    "allerg", "anaphyla", "hives", "urticaria", "rash", "reaction", "rxn", "sensitiv", "intoleran",
    "bronchospasm", "edema", "itch", "prurit",
)
_needles(
    _CONTRAST,
    [_CTERM_NEEDLES] * 6 + [("med",)],
    co={0: _REACTION_NEEDLES, 1: _REACTION_NEEDLES, 2: ("allerg",), 3: ("allerg",),
        4: ("med",), 5: ("med",)},
    before={2: 900},
)

_RENAL = [
    _Pattern(
        rf"\b(?P<lab>e?gfr|egfr(?:cr)?|estimated\s+gfr|crcl|creatinine\s+clearance)\b{_LINK}"
        rf"{_CMP.replace('(', '(?P<cmp>', 1)}\s*(?P<v>\d{{1,4}}(?:\.\d{{1,3}})?){_TREND.replace('(', '(?P<trend>', 1)}",
        kind="value", check=_gfr_low,
    ),
    _Pattern(
        rf"\b(?P<lab>creatinine|creat|s?cr)\b\.?{_LINK}"
        rf"{_CMP.replace('(', '(?P<cmp>', 1)}\s*(?P<v>\d{{1,4}}(?:\.\d{{1,3}})?){_TREND.replace('(', '(?P<trend>', 1)}",
        kind="value", check=_creatinine_high,
    ),
    _Pattern(
        r"\b(?:hemo|haemo|peritoneal\s+)?dialy(?:sis|sed|zed)\b|\bcrrt\b|\bcvvhd?f?\b|"
        r"\besrd\b|\beskd\b|\bend[\s-]*stage\s+(?:renal|kidney)\s+(?:disease|failure)\b|"
        r"\baki\b|\bacute\s+(?:kidney|renal)\s+(?:injury|failure|insufficiency)\b|"
        r"\b(?:chronic\s+)?(?:renal|kidney)\s+failure\b|"
        r"\bckd\s*-?\s*(?:stage\s*)?(?:3[ab]?\s*-\s*)?(?:4|5|iv|v)d?\b|"
        r"\bstage\s*(?:4|5|iv|v)\s+(?:ckd|chronic\s+kidney\s+disease)\b|"
        r"\bchronic\s+kidney\s+disease,?\s*(?:stage\s*)?(?:4|5|iv|v)\b|"
        r"\b(?:anuric|anuria)\b|"
        r"\bsevere\s+(?:renal|kidney)\s+(?:impairment|insufficiency|dysfunction|disease)\b"
    ),
    # Hemodialysis abbreviations, case-sensitive to avoid "HD stable", "HD #3".
    _Pattern(
        r"\b[Oo]n\s+(?:HD|PD|CRRT)\b|\bHD[\s-]*(?:dependent|pt|patient|MWF|M/W/F|TTS|T/Th/S|"
        r"catheter|line|access)\b",
        original=True,
    ),
]
_needles(_RENAL, [
    ("gfr", "crcl", "clearance"),
    ("cr",),
    ("dialy", "crrt", "cvvh", "esrd", "eskd", "aki", "renal", "kidney", "ckd", "anuri"),
    ("hd", "pd", "crrt"),
], after={0: 400, 1: 400})

_WEEKS = r"\d{1,2}(?:\.\d)?(?:\s*\+\s*\d)?\s*-?\s*(?:weeks?|wks?|wk|w)'?s?"
_PREGNANCY = [
    # positive tests
    _Pattern(
        r"\b(?:positive|pos\.?|\(?\+\)?)\s*(?:serum\s+|urine\s+|urinary\s+|quantitative\s+|"
        r"qualitative\s+|quant\s+)?(?:beta[\s-]*|b[\s-]?|β[\s-]*)?(?:hcg|pregnancy\s+test|preg\s+test|upt)\b"
    ),
    _Pattern(
        r"\b(?:serum\s+|urine\s+|urinary\s+)?(?:beta[\s-]*|b[\s-]?|β[\s-]*)?(?:hcg|pregnancy\s+test|"
        r"preg\s+test|upt)\s*(?:is\s+|was\s+|came\s+back\s+|returned\s+|:\s*|=\s*)?(?:positive\b|pos\b|\(?\+)"
    ),
    _Pattern(rf"\b(?:{_WEEKS}\s+)?preg(?:nant|ant|nent|nate|anant|nat)\b"),
    _Pattern(rf"\b{_WEEKS}\s+(?:of\s+)?(?:gestation(?:al\s+age)?|ga|ega|iup)\b"),
    _Pattern(rf"\bE?GA\s*(?:of\s+|:\s*|=\s*)?(?i:{_WEEKS})", original=True),
    _Pattern(rf"\bG\d{{1,2}}\s*P\d{{1,2}}[\d-]{{0,8}}\s*,?\s*(?i:at|@)\s*(?i:{_WEEKS})", original=True),
    _Pattern(
        r"(?<!prior\s)(?<!previous\s)(?<!past\s)(?<!last\s)(?<!former\s)"
        r"\bpreg(?:nancy|ancy|nacy)\b(?![\s-]*(?:tests?|testing|status|screen|screening|"
        r"category|risk|loss|losses|related))"
    ),
    _Pattern(
        r"\bgestation\b|\bgestational\s+(?:age|sac)\b|\biup\b|\bgravid\b|"
        r"\b(?:first|second|third|1st|2nd|3rd)\s+trimester\b|\bectopic\b"
    ),
]
_needles(_PREGNANCY, [
    ("hcg", "test", "upt"),
    ("hcg", "test", "upt"),
    ("preg",),
    ("gestation", "ga", "iup"),
    ("ga",),
    tuple(f"g{d}" for d in range(1, 10)),
    ("preg",),
    ("gestation", "iup", "gravid", "trimester", "ectopic"),
])

_DEVICE = (
    r"\b(?:pace[\s-]?makers?|pacemkrs?|pacers?|aicds?|s-icds?|icds?(?![\s-]?(?:9|10|11)\b)|"
    r"(?:implantable\s+(?:cardioverter[\s-])?)?defibrillators?|crt-?[dp]|"
    r"cardiac\s+resynchronization\s+(?:therapy|device)|"
    r"cochlear\s+implants?|neuro-?stim(?:ulators?)?|"
    r"(?:spinal\s+cord|deep\s+brain|vagus(?:\s+nerve)?|vagal(?:\s+nerve)?|sacral(?:\s+nerve)?|"
    r"phrenic(?:\s+nerve)?|hypoglossal(?:\s+nerve)?|occipital(?:\s+nerve)?|peripheral\s+nerve|nerve)"
    r"\s+stimulators?)\b"
)
_CONDITIONAL = re.compile(
    r"\b(?:(?:mri?|mr)[\s-]*(?:conditional|compatible|safe)|conditional)\b", _I
)
_COND_NEG = re.compile(r"(?:\bnon|\bnot|\bin)[\s-]*$", _I)
_DEVICE_RX = re.compile(_DEVICE, _I)


def _not_conditional(m: re.Match, text: str) -> bool:
    """True unless the device is stated to be MR-conditional nearby."""
    s, e = m.start(), m.end()
    return not _conditional_near(text[max(0, s - 45):s], text[e:e + 45])


@lru_cache(maxsize=1024)
def _conditional_near(pre: str, post: str) -> bool:
    pre = pre[_last_end(_HARD, pre):]
    pre = pre[_last_end(_DEVICE_RX, pre):]
    h = _HARD.search(post)
    if h:
        post = post[:h.start()]
    d = _DEVICE_RX.search(post)
    if d:
        post = post[:d.start()]
    for win in (pre, post):
        for c in _CONDITIONAL.finditer(win):
            if not _COND_NEG.search(win[:c.start()][-8:]):
                return True
    return False


_IMPLANT = [
    _Pattern(
        r"\b(?:mri?|mr)\s*(?:scan\s+|imaging\s+)?(?:is\s+|was\s+)?contra-?\s?indicated\b|"
        r"\bcontra-?\s?indicat(?:ion|ed)\s+(?:to|for)\s+(?:an?\s+)?(?:mri?|mr)\b|"
        r"\b(?:cannot|can't|can\s+not|unable\s+to|not\s+able\s+to)\s+(?:have|get|undergo|receive)\s+"
        r"(?:an?\s+)?(?:mri?|mr)\b|"
        r"\b(?:mri?|mr)[\s-]*unsafe\b|\bnot\s+(?:mri?|mr)[\s-]*(?:compatible|safe|conditional)\b|"
        r"\bnon[\s-]*(?:mri?|mr)[\s-]*(?:compatible|conditional|safe)\b"
    ),
    _Pattern(_DEVICE, kind="device", check=_not_conditional),
    _Pattern(r"\b(?:DBS|VNS|SCS|PPM)\b", kind="device", check=_not_conditional, original=True),
    _Pattern(
        r"\baneurysm(?:al)?\s+clips?\b|\bclipped\s+(?:cerebral\s+|intracranial\s+)?aneurysms?\b|"
        r"\baneurysm\s+clipping\b|\bshrapnel\b|\b(?:retained\s+)?bullet\s+fragments?\b|"
        r"\bmetal(?:lic)?\s+(?:foreign\s+bod(?:y|ies)|fbs?|fragments?|shavings?|slivers?|filings?)\s+"
        r"(?:in|within)\s+(?:(?:the|his|her|their|right|left|r|l|both)\s+){0,3}(?:eyes?|orbits?|globes?)\b|"
        r"\bmetal\s+in\s+(?:(?:the|his|her|their|right|left|r|l|both)\s+){0,3}(?:eyes?|orbits?)\b|"
        r"\b(?:intra)?orbital\s+(?:metal(?:lic)?\s+)?(?:foreign\s+bod(?:y|ies)|fbs?|metal|fragments?)\b|"
        r"\bintraocular\s+(?:metal(?:lic)?\s+)?(?:foreign\s+bod(?:y|ies)|fbs?|metal)\b|"
        r"\bmetal(?:lic)?\s+(?:foreign\s+bod(?:y|ies)|fbs?)\b",
        kind="device",
    ),
]
_needles(_IMPLANT, [
    ("mr",),
    ("pace", "icd", "defibrillator", "crt", "resync", "cochlear", "neuro", "stimulator"),
    ("dbs", "vns", "scs", "ppm"),
    ("aneurysm", "shrapnel", "bullet", "metal", "orbital", "intraocular"),
])

_ANTICOAG = [
    _Pattern(
        r"\b(?:warfarin|coumadin|jantoven|apixaban|el+iquis|rivaroxaban|xarelto|dabigatran|pradaxa|"
        r"edoxaban|savaysa|lixiana|heparin(?![\s-]*(?:induced|allerg|flush))|enoxaparin|lovenox|"
        r"dalteparin|fragmin|tinzaparin|fondaparinux|arixtra|bivalirudin|argatroban|lmwh|"
        r"clopidogrel|plavix|prasugrel|effient|ticagrelor|brilinta|ticlopidine|cilostazol|"
        r"dipyridamole|aggrenox|aspirin|dapt|dual\s+antiplatelets?(?:\s+therapy)?|"
        r"antiplatelets?(?:\s+(?:therapy|agents?|medications?))?|"
        r"anti-?coagulat(?:ed|ion|ants?)|anti-?coagulant\s+therapy|blood[\s-]+thinners?|doacs?|noacs?)\b|"
        r"\basa\s*(?:81|325)\b",
        kind="med",
    ),
    _Pattern(
        rf"\b(?P<lab>inr)\b{_LINK}{_CMP.replace('(', '(?P<cmp>', 1)}\s*"
        rf"(?P<v>\d{{1,2}}(?:\.\d{{1,2}})?){_TREND.replace('(', '(?P<trend>', 1)}",
        kind="value", check=_inr_high,
    ),
]
_needles(_ANTICOAG, [
    ("warfarin", "coumadin", "jantoven", "apixaban", "liquis", "rivaroxaban", "xarelto",
     "dabigatran", "pradaxa", "edoxaban", "savaysa", "lixiana", "heparin", "enoxaparin",
     "lovenox", "dalteparin", "fragmin", "tinzaparin", "fondaparinux", "arixtra", "bivalirudin",
     "argatroban", "lmwh", "clopidogrel", "plavix", "prasugrel", "effient", "ticagrelor",
     "brilinta", "ticlopidine", "cilostazol", "dipyridamole", "aggrenox", "aspirin", "dapt",
     "antiplatelet", "coagula", "thinner", "oac", "asa"),
    ("inr",),
], after={1: 400})

_METFORMIN = [
    _Pattern(
        r"\b(?:metformin|metformn|metfromin|glucophage|glucovance|janumet|glumetza|fortamet|riomet|"
        r"kazano|jentadueto|invokamet|xigduo|synjardy|segluromet|kombiglyze)\b"
        r"(?:\s+(?:xr|er|sr|xl))?(?:\s+\d{1,4}(?:\.\d{1,2})?\s*mg)?",
        kind="med",
    ),
]
_needles(_METFORMIN, [
    ("metform", "metfrom", "glucophage", "glucovance", "janumet", "glumetza", "fortamet", "riomet",
     "kazano", "jentadueto", "invokamet", "xigduo", "synjardy", "segluromet", "kombiglyze"),
])

_CLAUSTRO = [
    _Pattern(r"\bclaust(?:ro|ra|er|ero|e)?ph(?:ob)?i[ac]\w*"),
    _Pattern(
        r"\bpanic(?:ked|king|s)?(?:\s+attacks?)?\s+(?:in|during|inside|with)\s+"
        r"(?:(?:the|an?|prior|previous|last|her|his)\s+){0,2}(?:mri?|mr|scanners?|magnet|tube|"
        r"enclosed|closed|small|confined)\b"
    ),
    _Pattern(
        r"\b(?:needs?|needed|requires?|required|requiring|will\s+need)\s+"
        r"(?:(?:conscious|iv|oral|po|moderate|general|light|procedural)\s+){0,2}"
        r"(?:sedation|anesthesia|anaesthesia|anxiolysis|anxiolytics?|ativan|lorazepam|valium|"
        r"diazepam|versed|midazolam)\s+(?:for|during|with|in|before)\s+"
        r"(?:(?:the|an?|all|prior|any|this)\s+){0,2}(?:mri?|mr|scans?|imaging|scanner|studies)\b"
    ),
    _Pattern(
        r"\b(?:anxiety|fear|panic|uncomfortable|distress)\s+(?:in|of|with|about)\s+"
        r"(?:(?:small|enclosed|confined|tight|closed)\s+){1,2}spaces?\b"
    ),
    _Pattern(
        r"\b(?:failed|aborted|unable\s+to\s+complete|could\s+not\s+complete|couldn't\s+complete)\s+"
        r"(?:(?:the|an?|prior|previous|last)\s+){0,2}(?:mri?|mr)\b(?:\s+\w+){0,2}?\s+"
        r"(?:due\s+to|because\s+of|secondary\s+to|from)\s+(?:anxiety|claustro\w*|panic)\b"
    ),
]
_needles(_CLAUSTRO, [
    ("claust",),
    ("panic",),
    ("sedation", "anesthesia", "anaesthesia", "anxioly", "ativan", "lorazepam", "valium",
     "diazepam", "versed", "midazolam"),
    ("space",),
    ("anxiety", "claustro", "panic"),
])

_PATTERNS: dict[str, list[_Pattern]] = {
    "contrast-allergy": _CONTRAST,
    "renal-impairment": _RENAL,
    "pregnancy": _PREGNANCY,
    "mri-unsafe-implant": _IMPLANT,
    "anticoagulation": _ANTICOAG,
    "metformin": _METFORMIN,
    "claustrophobia": _CLAUSTRO,
}
assert set(_PATTERNS) == set(FLAG_TYPES)
assert all(p.needles and all(re.fullmatch(r"\w+", n) for n in p.needles)
           for pats in _PATTERNS.values() for p in pats)


def _first_positive(doc: _Doc, pat: _Pattern) -> re.Match | None:
    subject = doc.text if pat.original else doc.low
    n = len(subject)
    for lo, hi in _scan_windows(doc, pat):
        # Near a window's end (not the note's) a match may be cut short or an
        # end-of-text look-ahead may be fooled: every true match lies well
        # inside some window, so those are skipped.
        limit = n if hi >= n else hi - _MARGIN
        for m in pat.regex.finditer(subject, lo, hi):
            if m.start() >= limit:
                break
            if m.end() == m.start() or m.end() > limit:
                continue
            if pat.check is not None and not pat.check(m, doc.low):
                continue
            if pat.kind != "value" and doc.negated(m.start(), m.end(), pat.kind):
                continue
            return m
    return None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1] in " \t\r\n,;:(":
        end -= 1
    return start, end


def check_notes(text: str) -> list[SafetyFlag]:
    """Safety flags raised by ``text``: at most one per type, in FLAG_TYPES order."""
    if not text or not text.strip():
        return []
    doc = _Doc(text)
    flags: list[SafetyFlag] = []
    for ftype in FLAG_TYPES:
        best: re.Match | None = None
        for pat in _PATTERNS[ftype]:
            m = _first_positive(doc, pat)
            if m is not None and (best is None or m.start() < best.start()
                                  or (m.start() == best.start() and m.end() > best.end())):
                best = m
        if best is not None:
            s, e = _trim(text, best.start(), best.end())
            flags.append(SafetyFlag(type=ftype, evidence=text[s:e], start=s, end=e))
    return flags


def flag_types(text: str) -> set[str]:
    """The set of flag types raised by ``text``."""
    return {f.type for f in check_notes(text)}
