"""Apply radiologist review edits to raw/hospitalist.jsonl and raw/paeds.jsonl.

Explicit (accession, field, old value, new value, reason) edits. The script refuses to run
if a field no longer holds its old value (re-running after success is a no-op).
Rewrites each file with json.dumps per line, keeping line order and all other fields.
"""
import json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, '..', 'raw')

EDITS = {
    'hospitalist.jsonl': [
        ('HOSP-0014', 'category', 'ordinary', 'contraindication',
         'non-MR-safe ICD is the reason for CT-HEAD-W instead of contrast MRI for mets screening'),
        ('HOSP-0015', 'category', 'ordinary', 'contraindication',
         'non-conditional ICD is the reason for CT-HEAD-W instead of MRI for abscess follow-up'),
        ('HOSP-0024', 'acceptable', ['CTA-HEAD-NECK', 'CT-PERF-HEAD'], ['CTA-HEAD-NECK'],
         'onset 1 h (standard window, perfusion is the 6-24 h study) and AKI Cr 3.2: extra contrast load not justified'),
        ('HOSP-0098', 'acceptable', ['CTA-CHEST-PE', 'NM-VQ'], ['CTA-CHEST-PE'],
         'pregnant with an abnormal CXR: site rule is CTA; the note itself says V/Q would be uninterpretable'),
        ('HOSP-0478', 'acceptable', ['NM-VQ', 'CTA-CHEST-PE'], ['NM-VQ'],
         'pregnant with a normal CXR: site rule is V/Q (CTA only if the film is abnormal); matches CF-0291/CF-0540'),
        ('HOSP-0429', 'acceptable', ['US-OB-EARLY', 'US-APPENDIX'], ['US-OB-EARLY'],
         'hCG+, no IUP, L adnexal pain: question is ectopic; RLQ appendix US does not answer it'),
        ('HOSP-0353', 'acceptable', ['MRCP', 'NM-HIDA'], ['MRCP'],
         'question is retained CBD stone: HIDA does not show duct stones'),
        ('HOSP-0026', 'acceptable', ['CTA-HEAD-NECK', 'US-CAROTID'], ['CTA-HEAD-NECK'],
         'note states carotid US alone cannot answer the intracranial question'),
        ('HOSP-0047', 'acceptable', ['CT-TBONE-WO', 'CT-HEAD-WO'], ['CT-TBONE-WO'],
         'ENT needs ossicle/tegmen detail before cholesteatoma surgery: routine head CT does not give it'),
        ('HOSP-0369', 'acceptable', ['MR-PELVIS-FEMALE', 'CT-CAP-W'], ['MR-PELVIS-FEMALE'],
         'question is local staging (myometrial invasion, cervical stroma): CT CAP does not answer it'),
        ('HOSP-0476', 'acceptable', ['NM-BONE', 'CT-CAP-W'], ['NM-BONE'],
         'AKI (Cr 1.9) not on dialysis: iodinated CT CAP contradicts the renal rule'),
        ('HOSP-0365', 'acceptable', ['MR-ENTERO', 'CT-ENTERO'], ['MR-ENTERO'],
         'young Crohn patient, note says avoid radiation; matches ONC-0209/CF-0117/CF-0479'),
        ('HOSP-0471', 'acceptable', ['NM-BONE', 'PET-FDG'], ['NM-BONE'],
         'FDG PET is a poor test for prostate bone metastases; matches NN-0293'),
        ('HOSP-0415', 'acceptable', ['US-RENAL', 'CT-ABD-PEL-STONE'], ['US-RENAL'],
         '15-year-old, ?stone, note asks US first given age: child rule (matches PED-0065, PED-0267)'),
    ],
    'paeds.jsonl': [
        ('PED-0294', 'acceptable', ['MR-BRAIN-WO', 'CT-TBONE-WO'], ['MR-BRAIN-WO'],
         'question is a CPA mass: non-contrast temporal bone CT cannot exclude it'),
        ('PED-0355', 'acceptable', ['US-APPENDIX', 'CT-ABD-PEL-W'], ['US-APPENDIX'],
         '16-year-old slim girl, ?appendicitis: child rule US first; matches ONC-0528 and paeds appendix lines'),
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
        changed = set()
        for acc, field, old, new, _why in edits:
            r = rows[idx[acc]]
            if r[field] == new:
                continue
            if r[field] != old:
                sys.exit(f'{fname} {acc} {field}: expected {old!r}, found {r[field]!r}')
            r[field] = new
            changed.add(idx[acc])
            total += 1
        for r in rows:
            assert r['expected'] in r['acceptable'], r['accession']
        out = [json.dumps(r) if i in changed else lines[i]
               for i, r in enumerate(rows)]
        with open(path, 'w', encoding='utf-8') as fh:
            fh.write('\n'.join(out) + '\n')
    print(f'applied {total} edits')


if __name__ == '__main__':
    main()
