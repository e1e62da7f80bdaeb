"""Apply radiologist review edits to incoming/nursing.jsonl and incoming/vignette.jsonl.

Explicit (accession, field, old value, new value, reason) edits. The script refuses to run
if a field holds neither its old nor its new value (re-running after success is a no-op).
Rewrites each file with json.dumps per line, keeping line order and all other fields.
"""
import json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
INCOMING = os.path.join(HERE, '..', 'incoming')

EDITS = {
    'nursing.jsonl': [
        ('NP-0328', 'acceptable', ['MR-ABD-RENAL', 'CT-RENAL-MASS'], ['MR-ABD-RENAL'],
         '26-year-old, urology asks for no radiation: the CT renal mass protocol is the study the request excludes'),
        ('NP-0333', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         '21-year-old Crohn patient, many prior CTs, radiation concern stated: young-Crohn / no-radiation rule '
         '(matches HOSP-0365, ONC-0209, CF-0117, CF-0479)'),
    ],
    'vignette.jsonl': [
        ('VIG-0118', 'acceptable', ['MRA-NECK', 'CTA-HEAD-NECK'], ['MRA-NECK'],
         'neurologist asks for a non-radiation study; CTA is the study the request excludes'),
        ('VIG-0216', 'acceptable', ['US-APPENDIX', 'MR-PELVIS-FEMALE'], ['US-APPENDIX'],
         '14 weeks pregnant, ?appendicitis: MR-PELVIS-FEMALE is the gadolinium gynae protocol (fibroids, adnexa, '
         'staging), not an appendix study, and gadolinium is avoided in pregnancy'),
        ('VIG-0128', 'acceptable', ['MR-TSPINE-WO', 'MR-LSPINE-WO'], ['MR-TSPINE-WO'],
         'sensory level at T10 puts the lesion at or above T10: a lumbar MRI does not cover it'),
        ('VIG-0237', 'category', 'ordinary', 'contraindication',
         'legacy non-conditional ICD is the reason for CT-HEAD-W instead of contrast MRI (convention HOSP-0014/0015)'),
        ('VIG-0007', 'category', 'ordinary', 'contraindication',
         'cochlear implant precluding MRI is the reason for CT-HEAD-WWO (convention HOSP-0014/0015)'),
        ('VIG-0239', 'category', 'ordinary', 'contraindication',
         'aneurysm clip of unknown type precluding MRI is the reason for CT-HEAD-WWO (convention HOSP-0014/0015)'),
    ],
}


def main():
    total = 0
    for fname, edits in EDITS.items():
        path = os.path.join(INCOMING, fname)
        lines = open(path, encoding='utf-8').read().splitlines()
        rows = [json.loads(l) for l in lines if l.strip()]
        assert len(rows) == len(lines), f'{fname}: blank lines present'
        idx = {r['accession']: i for i, r in enumerate(rows)}
        assert len(idx) == len(rows), f'{fname}: duplicate accession'
        for acc, field, old, new, _why in edits:
            r = rows[idx[acc]]
            if r[field] == new:
                continue
            if r[field] != old:
                sys.exit(f'{fname} {acc} {field}: expected {old!r}, found {r[field]!r}')
            r[field] = new
            total += 1
        for r in rows:
            assert r['expected'] in r['acceptable'], r['accession']
        with open(path, 'w', encoding='utf-8') as fh:
            fh.write(''.join(json.dumps(r) + '\n' for r in rows))
    print(f'applied {total} edits')


if __name__ == '__main__':
    main()
