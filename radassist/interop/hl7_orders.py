"""HL7 v2 orders in (ORM^O01, OMI^O23; v2.3-v2.8) and ACKs out.

Each ORC/OBR group of a message becomes one order record (the design's order contract), with the
interface metadata needed to send the protocol back. Field access is by position on the raw
segment text (``hl7`` splits messages and segments), with HL7 escapes decoded here so that
``\\.br\\`` becomes a line break. Errors name segment and field (``PID-7``), never the value.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import hl7

SUPPORTED = {("ORM", "O01"), ("OMI", "O23")}
UPSERT_CONTROLS = {"NW", "XO", "RP", "XX"}          # new / change order / replacement
CANCEL_CONTROLS = {"CA", "DC", "OC", "OD", "CR"}    # cancel / discontinue / ... done by placer or filler
IGNORED_CONTROLS = {"SC", "SN", "HD", "HR", "OH", "RL", "RO", "OK", "UA", "UC", "UD", "UX"}
DEFAULT_ACCESSION_FIELDS = ("OBR-18", "OBR-3", "ORC-3", "OBR-2", "ORC-2")
ACCESSION_FIELDS = ("OBR-18", "OBR-19", "OBR-20", "OBR-3", "ORC-3", "OBR-2", "ORC-2")

PRIORITY_CODES = {
    "S": "STAT", "STAT": "STAT", "E": "STAT", "EMERGENCY": "STAT", "C": "STAT",
    "A": "URGENT", "ASAP": "URGENT", "U": "URGENT", "URGENT": "URGENT", "P": "URGENT", "T": "URGENT",
    "R": "ROUTINE", "ROUTINE": "ROUTINE", "EL": "ROUTINE", "ELECTIVE": "ROUTINE",
}
SEX_CODES = {"F": "F", "M": "M", "O": "O", "A": "O", "N": "U", "U": "U", "X": "O"}
TEXT_OBX_TYPES = {"TX", "ST", "FT", "CE", "CWE", "NM", "SN", "TS", "DT"}


class HL7FormatError(ValueError):
    """A message is not usable HL7 v2: names the segment/field, never its content."""

    def __init__(self, message: str, location: str = "", code: int = 207):
        self.location, self.code = location, code
        super().__init__(message)


@dataclass
class OrderItem:
    """One ORC/OBR group, mapped: ``record`` follows the order contract, ``meta`` the interface row."""

    control: str
    record: dict
    meta: dict
    index: int  # 1-based group number in the message


@dataclass
class ItemError:
    index: int
    location: str     # e.g. "OBR-4" (ERR-2 / ERR-1)
    code: int         # HL7 table 0357: 101 required field missing, 102 data type, 103 table value
    message: str

    def __str__(self) -> str:
        return f"order {self.index}: {self.message}"


@dataclass
class ParsedMessage:
    control_id: str
    message_type: str      # "ORM^O01"
    version: str
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    items: list[OrderItem] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    supported: bool = True


# --- low-level access --------------------------------------------------------------------------


class _Enc:
    def __init__(self, msh_field_sep: str, encoding_chars: str):
        chars = (encoding_chars + "^~\\&")[:4]
        self.field = msh_field_sep or "|"
        self.comp, self.rep, self.esc, self.sub = chars[0], chars[1], chars[2], chars[3]

    def unescape(self, text: str) -> str:
        if self.esc not in text:
            return text
        esc = re.escape(self.esc)
        pattern = re.compile(esc + "([^" + esc + "]*)" + esc)

        def sub(m: re.Match) -> str:
            code = m.group(1)
            if code == "F":
                return self.field
            if code == "S":
                return self.comp
            if code == "T":
                return self.sub
            if code == "R":
                return self.rep
            if code == "E":
                return self.esc
            if code == ".br":
                return "\n"
            if code.startswith(".sp"):
                return "\n"
            if code.startswith("X") and len(code) > 1:
                try:
                    return bytes.fromhex(code[1:]).decode("utf-8", errors="replace")
                except ValueError:
                    return ""
            return ""  # \H\ \N\ highlighting, \.in\ formatting and unknown escapes: dropped

        return pattern.sub(sub, text)


class _Seg:
    """A segment as raw text fields; ``get(7, comp=1, rep=1)`` returns unescaped text."""

    def __init__(self, raw: str, enc: _Enc):
        self.enc = enc
        self.fields = raw.split(enc.field)
        self.name = self.fields[0].strip().upper()
        if self.name == "MSH":  # MSH-1 is the separator itself: shift so that fields[n] == MSH-n
            self.fields = ["MSH", enc.field] + self.fields[1:]

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        raw = self.raw(n)
        return [r for r in raw.split(self.enc.rep)] if raw else []

    def comps(self, n: int, rep: int = 1) -> list[str]:
        reps = self.reps(n)
        if len(reps) < rep:
            return []
        return [self.enc.unescape(c.split(self.enc.sub)[0]) for c in reps[rep - 1].split(self.enc.comp)]

    def get(self, n: int, comp: int = 1, rep: int = 1) -> str:
        comps = self.comps(n, rep)
        return comps[comp - 1].strip() if len(comps) >= comp else ""

    def text(self, n: int) -> str:
        """The whole field unescaped, repetitions joined by '; ' (free-text fields)."""
        return "; ".join(t for t in (self.enc.unescape(r).strip() for r in self.reps(n)) if t)


def normalise_text(data: bytes | str) -> str:
    """Decode (UTF-8, BOM stripped, Latin-1 fallback) and turn LF/CRLF segment ends into CR."""
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    else:
        text = data.lstrip("\ufeff")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def split_messages(data: bytes | str) -> list[tuple[int, str]]:
    """(line number of MSH, message text) for each message of a file; batch/file headers dropped.

    MLLP framing bytes in a captured file are tolerated. Lines before the first MSH are returned
    as a message starting with something else, so the caller can report them.
    """
    text = normalise_text(data).replace("\x0b", "").replace("\x1c", "\r")
    messages: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.split("\r"), start=1):
        line = line.strip("\x00 \t")
        if not line:
            continue
        head = line[:3].upper()
        if head in ("FHS", "BHS", "FTS", "BTS"):
            continue
        if head == "MSH" or not messages:
            messages.append((number, [line]))
        else:
            messages[-1][1].append(line)
    return [(n, "\r".join(segs) + "\r") for n, segs in messages]


def parse_ts(value: str) -> datetime | None:
    """HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as naive UTC; None when empty or invalid."""
    value = (value or "").strip()
    if not value:
        return None
    m = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?", value)
    if not m:
        raise ValueError("not an HL7 timestamp")
    year, month, day, hour, minute, sec, zone = m.groups()
    dt = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(sec or 0))
    if zone:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        dt = (dt - offset) if zone[0] == "+" else (dt + offset)
    return dt


def _age(birth: datetime, at: datetime) -> int:
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


def _priority(code: str) -> str | None:
    code = (code or "").strip().upper()
    return PRIORITY_CODES.get(code) if code else None


def _person(seg: _Seg, n: int) -> str:
    """XCN (id^family^given^middle^suffix^prefix) as 'Prefix Given Family' (or the id alone)."""
    c = seg.comps(n)
    if not c:
        return ""
    family, given, prefix = (c[1] if len(c) > 1 else ""), (c[2] if len(c) > 2 else ""), (c[5] if len(c) > 5 else "")
    name = " ".join(p.strip() for p in (prefix, given, family) if p.strip())
    return name or c[0].strip()


def _patient_name(seg: _Seg) -> str:
    c = seg.comps(5)
    family, given = (c[0].strip() if c else ""), (c[1].strip() if len(c) > 1 else "")
    return ", ".join(p for p in (family, given) if p)


def _mrn(seg: _Seg) -> str:
    """PID-3: the repetition typed MR (CX-5), else the first; PID-2 for old feeds."""
    reps = seg.reps(3)
    for i in range(1, len(reps) + 1):
        comps = seg.comps(3, i)
        if len(comps) > 4 and comps[4].strip().upper() == "MR" and comps[0].strip():
            return comps[0].strip()
    return seg.get(3) or seg.get(2)


def _coded_text(seg: _Seg, n: int) -> str:
    """CE/CWE: the text (component 2), else the code, else the alternate text; repetitions joined."""
    out = []
    for r in range(1, len(seg.reps(n)) + 1):
        c = seg.comps(n, r)
        text = next((x.strip() for x in (c[1] if len(c) > 1 else "", c[4] if len(c) > 4 else "", c[0])
                     if x.strip()), "")
        if text:
            out.append(text)
    return "; ".join(out)


# --- message parsing ---------------------------------------------------------------------------


@dataclass
class _Group:
    orc: _Seg | None = None
    obr: _Seg | None = None
    tq1: list[_Seg] = field(default_factory=list)
    nte: list[_Seg] = field(default_factory=list)
    obx: list[_Seg] = field(default_factory=list)


def _groups(segments: Sequence[_Seg]) -> list[_Group]:
    groups: list[_Group] = []
    current: _Group | None = None
    for seg in segments:
        if seg.name == "ORC":
            current = _Group(orc=seg)
            groups.append(current)
        elif seg.name == "OBR":
            if current is None or current.obr is not None:  # OBR without its own ORC (some vendors)
                current = _Group(orc=current.orc if current is not None else None)
                groups.append(current)
            current.obr = seg
        elif current is None:
            continue  # PID/PV1/NTE of the patient, Z-segments before the order: not order content
        elif seg.name == "TQ1":
            current.tq1.append(seg)
        elif seg.name == "NTE":
            current.nte.append(seg)
        elif seg.name == "OBX":
            current.obx.append(seg)
    return groups


def _segments(text: str) -> tuple[_Enc, list[_Seg]]:
    lines = [s for s in text.split("\r") if s.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise HL7FormatError("message does not start with an MSH segment", "MSH", 100)
    sep = lines[0][3]
    enc_chars = lines[0][4:].split(sep, 1)[0]
    if sep.isalnum() or len(enc_chars) < 2:
        raise HL7FormatError("MSH-1/MSH-2 encoding characters are invalid", "MSH-2", 102)
    if not hl7.ishl7(text):  # python-hl7's check; a full hl7.parse costs more than storing the order
        raise HL7FormatError("message cannot be parsed as HL7 v2", "MSH", 100)
    enc = _Enc(sep, enc_chars)
    segs = []
    for line in lines:
        name = line.split(sep, 1)[0].strip()
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise HL7FormatError("a segment has an invalid name", "segment", 100)
        segs.append(_Seg(line, enc))
    return enc, segs


def parse_header(text: str) -> ParsedMessage:
    """MSH only (for an ACK to a message that cannot be parsed further)."""
    _, segs = _segments(text)
    return _header(segs[0])


def _header(msh: _Seg) -> ParsedMessage:
    return ParsedMessage(control_id=msh.get(10), message_type="^".join(x for x in msh.comps(9)[:2] if x),
                         version=msh.get(12), sending_app=msh.get(3), sending_facility=msh.get(4),
                         receiving_app=msh.get(5), receiving_facility=msh.get(6),
                         processing_id=msh.get(11) or "P")


def parse_order_message(text: str, accession_fields: Sequence[str] = DEFAULT_ACCESSION_FIELDS,
                        now: datetime | None = None) -> ParsedMessage:
    """Parse one ORM^O01 / OMI^O23 into order items and per-group errors.

    Raises HL7FormatError when the message as a whole is unusable (no MSH, no control id).
    An unsupported message type returns ``supported=False`` (the caller answers AR).
    """
    text = normalise_text(text)
    _, segs = _segments(text)
    msh = segs[0]
    msg = _header(msh)
    if not msg.control_id:
        raise HL7FormatError("MSH-10 (message control id) is missing", "MSH-10", 101)
    kind = tuple(c.strip().upper() for c in (msh.comps(9) + ["", ""])[:2])
    if kind not in SUPPORTED:
        msg.supported = False
        return msg
    msg.message_type = f"{kind[0]}^{kind[1]}"
    try:
        msg_time = parse_ts(msh.get(7)) or now or datetime.now(timezone.utc).replace(tzinfo=None)
    except ValueError:
        msg_time = now or datetime.now(timezone.utc).replace(tzinfo=None)
    pid = next((s for s in segs if s.name == "PID"), None)
    groups = _groups(segs)
    if not groups:
        msg.errors.append(ItemError(0, "ORC", 101, "no ORC/OBR order group"))
        return msg
    patient: dict = {}
    patient_meta: dict = {}
    patient_error: ItemError | None = None
    if pid is None:
        patient_error = ItemError(0, "PID", 100, "PID segment missing")
    else:
        patient_meta = {"pid3": pid.raw(3), "pid5": pid.raw(5), "pid7": pid.raw(7), "pid8": pid.raw(8)}
        patient["mrn"] = _mrn(pid) or None
        patient["patient_name"] = _patient_name(pid) or None
        sex = pid.get(8).upper()
        patient["sex"] = SEX_CODES.get(sex, "U")
        try:
            birth = parse_ts(pid.get(7))
        except ValueError:
            patient_error = ItemError(0, "PID-7", 102, "PID-7 (date of birth) is not an HL7 date")
            birth = None
        if birth is not None:
            age = _age(birth, msg_time)
            if not 0 <= age <= 130:
                patient_error = ItemError(0, "PID-7", 102, "PID-7 (date of birth) gives an age out of range")
            else:
                patient["age"] = age
    for index, group in enumerate(groups, start=1):
        if patient_error is not None:
            msg.errors.append(ItemError(index, patient_error.location, patient_error.code, patient_error.message))
            continue
        try:
            msg.items.append(_item(index, group, patient, patient_meta, msg_time, accession_fields))
        except HL7FormatError as exc:
            msg.errors.append(ItemError(index, exc.location, exc.code, str(exc)))
    return msg


def _field(group: _Group, name: str) -> str:
    seg_name, number = name.split("-")
    seg = group.obr if seg_name == "OBR" else group.orc
    return seg.get(int(number)) if seg is not None else ""


def _item(index: int, g: _Group, patient: dict, patient_meta: dict, msg_time: datetime,
          accession_fields: Sequence[str]) -> OrderItem:
    orc, obr = g.orc, g.obr
    control = (orc.get(1).upper() if orc is not None else "") or "NW"
    if control not in UPSERT_CONTROLS | CANCEL_CONTROLS | IGNORED_CONTROLS:
        raise HL7FormatError(f"ORC-1 order control {control!r} is not supported" if len(control) <= 2
                             else "ORC-1 order control is not supported", "ORC-1", 103)
    accession = next((v for v in (_field(g, f) for f in accession_fields) if v), "")
    if not accession:
        raise HL7FormatError(f"no accession number ({'/'.join(accession_fields)} all empty)",
                             accession_fields[0], 101)
    if obr is None and control in UPSERT_CONTROLS:
        raise HL7FormatError("order group has no OBR segment", "OBR", 100)
    exam = ""
    if obr is not None:
        exam = _coded_text(obr, 4).split("; ")[0] or _coded_text(obr, 44).split("; ")[0]
    if not exam and control in UPSERT_CONTROLS:
        raise HL7FormatError("no ordered exam (OBR-4 and OBR-44 empty)", "OBR-4", 101)
    notes: list[str] = []
    if obr is not None:
        notes += [obr.text(13), _coded_text(obr, 31)]
    notes += [s.text(3) for s in g.nte]
    for obx in g.obx:
        kind = obx.get(2).upper()
        if kind and kind not in TEXT_OBX_TYPES:
            continue
        value = _coded_text(obx, 5) if kind in ("CE", "CWE") else obx.text(5)
        if not value:
            continue
        label = _coded_text(obx, 3).split("; ")[0]
        units = obx.get(6, 2) or obx.get(6)
        text = f"{value} {units}".strip() if kind in ("NM", "SN") and units else value
        notes.append(f"{label}: {text}" if label and kind in ("NM", "SN", "CE", "CWE") else text)
    priority = None
    for seg in g.tq1:
        priority = priority or _priority(seg.get(9))
    for maybe, n in ((orc, 7), (obr, 27)):
        if maybe is not None and priority is None:
            priority = _priority(maybe.get(n, 6))
    if priority is None and obr is not None:
        priority = _priority(obr.get(5))
    ordered_at = None
    for maybe, n in ((orc, 9), (obr, 6), (obr, 7)):
        if maybe is not None and ordered_at is None:
            try:
                ordered_at = parse_ts(maybe.get(n))
            except ValueError:
                pass
    provider = (_person(orc, 12) if orc is not None else "") or (_person(obr, 16) if obr is not None else "")
    record = {
        "accession": accession, "ordered_exam": exam, "clinical_notes": "\n".join(n for n in notes if n),
        "age": patient.get("age"), "sex": patient.get("sex", "U"), "priority": priority or "ROUTINE",
        "mrn": patient.get("mrn"), "patient_name": patient.get("patient_name"),
        "ordering_provider": provider or None,
        "ordered_at": (ordered_at or msg_time).isoformat(),
    }
    placer = (orc.raw(2) if orc is not None else "") or (obr.raw(2) if obr is not None else "")
    filler = (orc.raw(3) if orc is not None else "") or (obr.raw(3) if obr is not None else "")
    meta = {"placer_number": placer, "filler_number": filler,
            "service_code": (obr.raw(4) or obr.raw(44)) if obr is not None else "", "patient": patient_meta}
    return OrderItem(control=control, record=record, meta=meta, index=index)


# --- ACK ---------------------------------------------------------------------------------------


def escape(text: str, enc: str = "|^~\\&") -> str:
    """Escape text for an HL7 field (``|`` -> ``\\F\\`` ...); line breaks become ``\\.br\\``."""
    field_sep, comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3], enc[4]
    out = text.replace(esc, f"{esc}E{esc}")
    for ch, code in ((field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{esc}.br{esc}")


def hl7_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S+0000")


_ACK_COUNTER = iter(range(1, 1 << 62))


def build_ack(msg: ParsedMessage | None, code: str, errors: Sequence[ItemError] = (), text: str = "",
              app: str = "RADASSIST", facility: str = "") -> str:
    """ACK (AA/AE/AR) echoing the original control id, with one ERR per error (no patient text)."""
    msg = msg or ParsedMessage(control_id="", message_type="", version="2.5")
    version = msg.version or "2.5"
    trigger = msg.message_type.split("^")[1] if "^" in msg.message_type else ""
    ack_type = f"ACK^{trigger}^ACK" if trigger and version >= "2.4" else (f"ACK^{trigger}" if trigger else "ACK")
    control = f"RA{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}{next(_ACK_COUNTER):06d}"[:20]
    segs = [
        "|".join(["MSH", "^~\\&", escape(app), escape(facility), escape(msg.sending_app),
                  escape(msg.sending_facility), hl7_now(), "", ack_type, control, msg.processing_id or "P",
                  version]),
        "|".join(["MSA", code, escape(msg.control_id), escape(text[:80])]),
    ]
    for err in errors:
        seg, _, number = err.location.partition("-")
        location = f"{seg}^1^{number}" if number else seg
        if version >= "2.5":
            segs.append(f"ERR||{location}|{err.code}^{escape(err.message[:60])}^HL70357|E")
        else:
            segs.append(f"ERR|{location}^{err.code}&{escape(err.message[:60])}&HL70357")
    return "\r".join(segs) + "\r"


def parse_ack(text: str) -> tuple[str, str]:
    """(MSA-1 code, MSA-2 control id) of an ACK; ('', '') when there is no MSA."""
    for line in normalise_text(text).split("\r"):
        if line.startswith("MSA"):
            sep = line[3] if len(line) > 3 else "|"
            parts = line.split(sep)
            return (parts[1].strip().upper() if len(parts) > 1 else "",
                    parts[2].strip() if len(parts) > 2 else "")
    return "", ""

