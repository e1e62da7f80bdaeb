"""Apply radiologist review edits to raw/oncology.jsonl and raw/copyforward.jsonl.

Explicit (accession, field, new value) edits; each edit also records the value it
expects to replace, so the script refuses to run against a file that has changed.
Rewrites each file with json.dumps per line, keeping line order and all other fields.
"""
import json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, '..', 'raw')

# file -> list of (accession, field, old_value, new_value, reason)
EDITS = {
    'oncology.jsonl': [
        ('ONC-0033', 'acceptable', ['CT-CSPINE-WO', 'MR-CSPINE-WO'], ['CT-CSPINE-WO'],
         'acute C-spine trauma in an 81-year-old without deficit: CT first; MRI is not an alternative'),
        ('ONC-0209', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         '23-year-old with Crohn disease, referrer explicitly asks for non-ionising imaging'),
        ('ONC-0219', 'acceptable', ['MR-PROSTATE', 'NM-BONE'], ['MR-PROSTATE'],
         'the question is local staging by mpMRI; a bone scan does not answer it'),
        ('ONC-0528', 'acceptable', ['US-APPENDIX', 'CT-ABD-PEL-W'], ['US-APPENDIX'],
         '11-year-old, ?appendicitis, paeds pathway US first (matches ONC-0257, CF-0284, CF-0525)'),
    ],
    'copyforward.jsonl': [
        ('CF-0060', 'acceptable', ['CTA-CHEST-PE', 'NM-VQ'], ['CTA-CHEST-PE'],
         'established HD -> protocol unchanged; CXR shows vascular congestion, so V/Q is a poor substitute'),
        ('CF-0084', 'acceptable', ['CT-ABD-PEL-W', 'US-PELVIS-TV'], ['CT-ABD-PEL-W'],
         '?appendicitis, hCG negative, no adnexal findings: pelvic TV US does not answer the question'),
        ('CF-0111', 'acceptable', ['MR-ABD-RENAL', 'CT-ADRENAL'], ['MR-ABD-RENAL'],
         'throat swelling + stridor to iodinated contrast; the adrenal protocol is an IV contrast washout study'),
        ('CF-0117', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         '19-year-old with Crohn disease, 3 prior CTs, referrer asks for radiation-free enterography'),
        ('CF-0227', 'acceptable', ['MR-ENTERO', 'US-APPENDIX'], ['MR-ENTERO'],
         'known Crohn flare in a 14-year-old; the RLQ appendix US protocol is not an enterography substitute'),
        ('CF-0233', 'acceptable', ['MR-PELVIS-FEMALE', 'PET-FDG'], ['MR-PELVIS-FEMALE'],
         'question is local staging (parametrial invasion); PET does not answer it'),
        ('CF-0240', 'acceptable', ['MR-RECTUM', 'CT-CAP-W'], ['MR-RECTUM'],
         'CT CAP already done last week; surgeon asks for local pelvic staging = rectal MRI'),
        ('CF-0291', 'acceptable', ['NM-VQ', 'CTA-CHEST-PE'], ['NM-VQ'],
         'pregnant with a normal CXR: site rule is V/Q (CTA only if the film is abnormal)'),
        ('CF-0479', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         '25-year-old, suspected Crohn disease, note asks for radiation-free small-bowel imaging'),
        ('CF-0540', 'acceptable', ['NM-VQ', 'CTA-CHEST-PE'], ['NM-VQ'],
         'pregnant with a normal CXR: site rule is V/Q (CTA only if the film is abnormal)'),
        ('CF-0547', 'acceptable', ['PET-FDG', 'CT-CAP-W'], ['PET-FDG'],
         'eGFR 18, not on dialysis: contrast CT CAP contradicts the renal rule the label applies'),
    ],
}


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
            assert r['expected'] in (new if field == 'acceptable' else r['acceptable'])
            r[field] = new
            total += 1
        with open(path, 'w', encoding='utf-8') as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + '\n')
    print(f'applied {total} edits')


if __name__ == '__main__':
    main()
