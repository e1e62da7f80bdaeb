"""Apply radiologist review edits to raw/outpatient.jsonl and raw/scenario.jsonl.

Explicit (accession, field, new value) edits; each edit also records the value it
expects to replace, so the script refuses to run against a file that has changed.
Rewrites each file with json.dumps per line, keeping line order and all other fields.
Idempotent: an edit already applied is skipped. No lines are dropped.
"""
import json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, '..', 'raw')

MISMATCH = 'ordered-exam-mismatch'

# file -> list of (accession, field, old_value, new_value, reason)
EDITS = {
    'outpatient.jsonl': [
        # --- acceptable ---
        ('OPD-0351', 'acceptable', ['CTA-CHEST-PE', 'NM-VQ'], ['CTA-CHEST-PE'],
         'pregnant with R lower-zone consolidation/effusion on CXR: site rule is CTA when the film is '
         'abnormal; V/Q would be non-diagnostic (matches SC-0119, NN-0059, PED-0250)'),
        ('OPD-0298', 'acceptable', ['NM-VQ', 'CTA-CHEST-PE'], ['NM-VQ'],
         'pregnant with a normal CXR: site rule is V/Q (CTA only if the film is abnormal); matches '
         'SC-0603, NN-0298, ONC-0268 and the CF-0291/CF-0540 review edits'),
        ('OPD-0541', 'acceptable', ['NM-VQ', 'CTA-CHEST-PE'], ['NM-VQ'],
         'pregnant with a normal CXR: site rule is V/Q (CTA only if the film is abnormal)'),
        ('OPD-0225', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         '23-year-old with Crohn disease; referrer explicitly asks to avoid radiation, which is why the '
         'ordered CT enterography is changed'),
        ('OPD-0221', 'acceptable', ['MR-ABD-RENAL', 'CT-RENAL-MASS'], ['MR-ABD-RENAL'],
         'a CT renal-mass protocol has already been done and was equivocal; MRI is the problem-solver, '
         'repeating the CT does not answer the question'),
        ('OPD-0477', 'acceptable', ['MR-ABD-RENAL', 'CT-RENAL-MASS'], ['MR-ABD-RENAL'],
         '28-year-old with VHL on lifelong renal surveillance; note explicitly asks to avoid repeated CT'),
        # --- category ---
        ('OPD-0017', 'category', 'ordinary', MISMATCH,
         'ordered "CT HEAD" (plain) for a wake-up stroke needing penumbral imaging -> CT-PERF-HEAD; the '
         'identical order in OPD-0321 is tagged mismatch'),
        ('OPD-0121', 'category', 'ordinary', MISMATCH,
         'ordered "CT ABDOMEN" for active melaena with haemodynamic compromise -> CTA-ABD-GIB; the same '
         'pattern in OPD-0122 / SC-0255 is tagged mismatch'),
        ('OPD-0358', 'category', 'negated-risk', 'ordinary',
         'no contraindication or risk word at all: "quit smoking 12 years ago" is a screening-eligibility '
         'detail, not a negated risk'),
    ],
    'scenario.jsonl': [
        # --- acceptable ---
        ('SC-0222', 'acceptable', ['CT-PANC-MP', 'MRCP'], ['CT-PANC-MP'],
         'question is staging/resectability of pancreatic cancer; MRCP (the ordered, wrong exam) is a '
         'duct study and does not stage vascular involvement'),
        # --- category ---
        ('SC-0020', 'category', 'ordinary', 'contraindication',
         'non-MR-labelled spinal cord stimulator is the reason for CT WO/W instead of MRI; the twin '
         'SC-0635 (CT HEAD W ordered, SCS) is tagged contraindication'),
        ('SC-0023', 'category', 'ordinary', MISMATCH,
         'ordered "CT HEAD" (plain) for code stroke LVO evaluation -> CTA-HEAD-NECK; the same pattern '
         'in SC-0033 (CT HEAD -> CT-PERF-HEAD) is tagged mismatch'),
    ],
}

DROP = {'outpatient.jsonl': [], 'scenario.jsonl': []}


def main():
    total = 0
    for fname, edits in EDITS.items():
        path = os.path.join(RAW, fname)
        lines = open(path, encoding='utf-8').read().splitlines()
        rows = [json.loads(l) for l in lines if l.strip()]
        assert len(rows) == len(lines), f'{fname}: blank lines present'
        idx = {r['accession']: i for i, r in enumerate(rows)}
        for acc, field, old, new, _why in edits:
            r = rows[idx[acc]]
            if r[field] == new:
                continue  # already applied
            if r[field] != old:
                sys.exit(f'{fname} {acc}.{field}: expected {old!r}, found {r[field]!r}; not applying')
            r[field] = new
            assert r['expected'] in r['acceptable'], (acc, r['expected'], r['acceptable'])
            total += 1
        drop = set(DROP.get(fname, []))
        rows = [r for r in rows if r['accession'] not in drop]
        with open(path, 'w', encoding='utf-8') as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + '\n')
    print(f'applied {total} edits')


if __name__ == '__main__':
    main()
