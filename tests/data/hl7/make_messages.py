"""Writes the HL7 v2 test messages of this folder (hand-written, fictional patients).

Run ``python tests/data/hl7/make_messages.py`` after editing; the .hl7 files are committed.
Fields are given by number so that positions are right (OBR-18, OBR-44 ...).
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seg(name: str, fields: dict[int, str]) -> str:
    top = max(fields) if fields else 0
    return "|".join([name] + [fields.get(i, "") for i in range(1, top + 1)])


def msh(app, fac, when, kind, control, version, extra=None):
    # MSH-1 is the separator: the joined fields start at MSH-2
    f = {1: "^~\\&", 2: app, 3: fac, 4: "RADASSIST", 5: "RAD", 6: when, 8: kind, 9: control, 10: "P",
         11: version}
    f.update(extra or {})
    return seg("MSH", f)


def write(name, segs, eol="\r", bom=False):
    data = (eol.join(segs) + eol).encode("utf-8")
    (HERE / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)


def main():
    pid_a = seg("PID", {1: "1", 3: "00123456^^^NGH^MR~999-88-7777^^^SSA^SS", 5: "TESTPATIENT^ALICE^M",
                        7: "19580312", 8: "F", 11: "12 MAIN ST^^SPRINGFIELD^IL^62701", 13: "555-0100"})
    dr = "4455^WELBY^MARCUS^^^DR"
    # Vendor A: ORM^O01 v2.3, CR endings, Z-segment, PID-3 repetitions, accession in OBR-18,
    # \.br\ and \T\ escapes, priority in OBR-27, a PV1 and a patient-level NTE that is not order text.
    write("vendor_a_orm_o01_v23.hl7", [
        msh("EPICRIS", "NORTHGEN", "20250314083000", "ORM^O01", "MSG00001", "2.3"),
        pid_a,
        seg("NTE", {1: "1", 3: "Patient-level comment that is not part of an order"}),
        seg("PV1", {1: "1", 2: "O", 3: "RAD^^^NGH", 7: dr}),
        seg("ORC", {1: "NW", 2: "PLC10001", 3: "FIL10001", 5: "SC", 9: "20250314082900", 12: dr}),
        seg("OBR", {1: "1", 2: "PLC10001", 3: "FIL10001", 4: "CTHEADWO^CT Head without contrast^L",
                    7: "20250314082900",
                    13: "Fall from standing at home\\.br\\On apixaban for AF\\.br\\Headache \\T\\ vomiting",
                    16: dr, 18: "ACC10001", 27: "^^^^^R"}),
        seg("NTE", {1: "1", 2: "L", 3: "Daughter reports prior hives after contrast"}),
        seg("ZDS", {1: "1.2.840.113619.2.55.3.1^EPIC^Application^DICOM"}),
    ])
    # Vendor B: OMI^O23 v2.5.1, two orders, TQ1 priority, OBX text and numeric, OBR-31 repetitions,
    # PID-8 written 'F^' style ('M^'), birth date with a time part, a zoned message time, Z-segment.
    pid_b = seg("PID", {1: "1", 3: "MRN778812^^^SMC^MR", 5: "EXAMPLE^BOB^^^MR", 7: "197001011230", 8: "M^"})
    house = "8812^HOUSE^GREGORY"
    write("vendor_b_omi_o23_v251_two_orders.hl7", [
        msh("CERNER", "SOUTHMED", "20250402141500-0500", "OMI^O23^OMI_O23", "CTL-B-7781", "2.5.1",
            {14: "AL", 15: "NE"}),
        pid_b,
        seg("PV1", {1: "1", 2: "E", 3: "ED^^^SMC"}),
        seg("ORC", {1: "NW", 2: "SMC-P-551", 3: "SMC-F-551", 9: "20250402141000", 12: house}),
        seg("TQ1", {1: "1", 9: "S^Stat^HL70485"}),
        seg("OBR", {1: "1", 2: "SMC-P-551", 3: "SMC-F-551", 4: "74177^CT abdomen and pelvis with contrast^CPT4",
                    7: "20250402141000", 16: house, 18: "SMC-ACC-551",
                    31: "^RLQ pain \\S\\ fever~^r/o appendicitis"}),
        seg("OBX", {1: "1", 2: "TX", 3: "CLINHX^Clinical history^L", 5: "RLQ pain 12h, WBC 15", 11: "F"}),
        seg("OBX", {1: "2", 2: "NM", 3: "33914-3^eGFR^LN", 5: "28", 6: "mL/min/1.73m2", 7: ">60", 8: "L",
                    11: "F"}),
        seg("ORC", {1: "NW", 2: "SMC-P-552", 3: "SMC-F-552", 9: "20250402141000", 12: house}),
        seg("TQ1", {1: "1", 9: "R^Routine^HL70485"}),
        seg("OBR", {1: "2", 2: "SMC-P-552", 3: "SMC-F-552", 4: "71045^XR chest 1 view^CPT4",
                    7: "20250402141000", 16: house, 18: "SMC-ACC-552"}),
        seg("NTE", {1: "1", 3: "Cough \\F\\ SOB; \\E\\ check line placement"}),
        seg("ZPI", {1: "custom", 2: "vendor-data"}),
    ])
    # Vendor C: sparse ORM^O01 v2.4, LF endings and a BOM, empty OBR-4 with the procedure in OBR-44,
    # priority in ORC-7 (TQ), no ORC-12 (provider in OBR-16), accession only in OBR-3, no DOB.
    write("vendor_c_sparse_lf_bom.hl7", [
        msh("MEDITECH", "VALLEY", "20250501100000", "ORM^O01", "VAL-0001", "2.4"),
        seg("PID", {3: "V-00991", 5: "SPARSE^CASEY", 8: "U"}),
        seg("ORC", {1: "NW", 2: "V-P-1", 7: "^^^^^A"}),
        seg("OBR", {1: "1", 2: "V-P-1", 3: "V-ACC-1", 16: "7788^QUINN^MICHAELA",
                    44: "MRBRAINWWO^MRI brain with and without contrast^L"}),
        seg("NTE", {1: "1", 3: "Seizure, new onset"}),
    ], eol="\n", bom=True)
    # Vendor A follow-ups, CRLF endings, two messages in one file: XO amendment (contrast
    # anaphylaxis added, now STAT) and then CA.
    write("vendor_a_followups_crlf.hl7", [
        msh("EPICRIS", "NORTHGEN", "20250314090000", "ORM^O01", "MSG00002", "2.3"),
        pid_a,
        seg("ORC", {1: "XO", 2: "PLC10001", 3: "FIL10001", 7: "^^^^^S", 9: "20250314085900", 12: dr}),
        seg("OBR", {1: "1", 2: "PLC10001", 3: "FIL10001", 4: "CTHEADWO^CT Head without contrast^L",
                    7: "20250314082900",
                    13: "Fall from standing at home\\.br\\On apixaban for AF\\.br\\Headache \\T\\ vomiting"
                        "\\.br\\Anaphylaxis to iodinated contrast",
                    16: dr, 18: "ACC10001"}),
        seg("NTE", {1: "1", 2: "L", 3: "Daughter reports prior hives after contrast"}),
        msh("EPICRIS", "NORTHGEN", "20250314091000", "ORM^O01", "MSG00003", "2.3"),
        pid_a,
        seg("ORC", {1: "CA", 2: "PLC10001", 3: "FIL10001"}),
        seg("OBR", {1: "1", 2: "PLC10001", 3: "FIL10001", 4: "CTHEADWO^CT Head without contrast^L",
                    18: "ACC10001"}),
    ], eol="\r\n")
    # A batch file (FHS/BHS wrappers) with a discontinue (DC) of vendor B's second order.
    write("vendor_b_batch_dc.hl7", [
        "FHS|^~\\&|CERNER|SOUTHMED",
        "BHS|^~\\&|CERNER|SOUTHMED",
        msh("CERNER", "SOUTHMED", "20250402150000", "OMI^O23^OMI_O23", "CTL-B-7790", "2.5.1"),
        seg("PID", {1: "1", 3: "MRN778812^^^SMC^MR", 5: "EXAMPLE^BOB", 7: "19700101", 8: "M"}),
        seg("ORC", {1: "DC", 2: "SMC-P-552", 3: "SMC-F-552"}),
        seg("OBR", {1: "1", 2: "SMC-P-552", 3: "SMC-F-552", 4: "71045^XR chest 1 view^CPT4", 18: "SMC-ACC-552"}),
        "BTS|1",
        "FTS|1",
    ])
    # Malformed: one good message, a bad birth date, no exam at all, an ADT (not an order).
    good = {1: "1", 2: "P-1", 3: "F-1", 4: "USABD^US abdomen^L", 18: "M-ACC-1"}
    write("mixed_malformed.hl7", [
        msh("RIS", "H", "20250601120000", "ORM^O01", "BAD-0", "2.3"),
        seg("PID", {1: "1", 3: "M1", 5: "ONE^GOOD", 7: "19900101", 8: "F"}),
        seg("ORC", {1: "NW", 2: "P-1", 3: "F-1"}), seg("OBR", good),
        msh("RIS", "H", "20250601120100", "ORM^O01", "BAD-1", "2.3"),
        seg("PID", {1: "1", 3: "M2", 5: "TWO^BADDOB", 7: "19XX0101", 8: "F"}),
        seg("ORC", {1: "NW", 2: "P-2", 3: "F-2"}), seg("OBR", {**good, 2: "P-2", 3: "F-2", 18: "M-ACC-2"}),
        msh("RIS", "H", "20250601120200", "ORM^O01", "BAD-2", "2.3"),
        seg("PID", {1: "1", 3: "M3", 5: "THREE^NOEXAM", 7: "19900101", 8: "F"}),
        seg("ORC", {1: "NW", 2: "P-3", 3: "F-3"}), seg("OBR", {1: "1", 2: "P-3", 3: "F-3", 18: "M-ACC-3"}),
        msh("RIS", "H", "20250601120300", "ADT^A01", "BAD-3", "2.3"),
        seg("PID", {1: "1", 3: "M4", 5: "FOUR^ADT", 7: "19900101", 8: "F"}),
    ])


if __name__ == "__main__":
    main()
