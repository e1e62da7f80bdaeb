"""Apply radiologist review edits to incoming/gp.jsonl and incoming/surgical.jsonl.

Explicit (accession, field, old value, new value, reason) edits. The script refuses to run
if a field no longer holds its old value (re-running after success is a no-op).
Rewrites each file with json.dumps per line, keeping line order and all other fields.
"""
import json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
INCOMING = os.path.join(HERE, '..', 'incoming')

EDITS = {
    'gp.jsonl': [
        ('GP-0137', 'acceptable', ['CT-ENTERO', 'MR-ENTERO'], ['CT-ENTERO'],
         'failed MRE twice from claustrophobia despite attempts: the claustrophobia rule excludes MR-ENTERO'),
        ('GP-0295', 'acceptable', ['US-RENAL', 'CT-ABD-PEL-STONE'], ['US-RENAL'],
         '9-year-old, ?stone: child rule is US first; stone CT is the excluded study'),
        ('GP-0425', 'acceptable', ['US-APPENDIX', 'CT-ABD-PEL-W'], ['US-APPENDIX'],
         '16-year-old, mother asks to avoid radiation, note says US first: child rule excludes CT'),
        ('GP-0229', 'acceptable', ['MR-ARTHRO-HIP', 'MR-HIP-WO'], ['MR-ARTHRO-HIP'],
         'ortho explicitly want an arthrogram for labrum/FAI: plain MRI hip is the wrongly ordered exam'),
        ('GP-0008', 'category', 'ordered-exam-mismatch', 'contraindication',
         'non-MR-safe ICD is what moves the order from MRI to CT-HEAD-W (same as GP-0007/GP-0050)'),
        ('GP-0048', 'category', 'ordinary', 'negated-risk',
         'pacemaker mentioned before a non-contrast CT spine: risk word present but irrelevant'),
        ('GP-0131', 'category', 'ordinary', 'negated-risk',
         'pacemaker mentioned before adrenal CT (the first-line study anyway): risk word irrelevant'),
    ],
    'surgical.jsonl': [
        ('SURG-0405', 'acceptable', ['US-APPENDIX', 'MR-PELVIS-FEMALE'], ['US-APPENDIX'],
         'pregnant 19 wks: MR-PELVIS-FEMALE is a gadolinium gynae protocol, not an appendix MRI; gad avoided in pregnancy'),
        ('SURG-0004', 'acceptable', ['CT-HEAD-WO', 'MR-BRAIN-WO'], ['CT-HEAD-WO'],
         'post burr-hole SDH, new drift, needs imaging now: MRI is the wrongly ordered exam'),
        ('SURG-0383', 'acceptable', ['US-THYROID', 'CT-NECK-W'], ['US-THYROID'],
         'note says ultrasound first; contrast CT neck is the wrongly ordered exam (iodine also unwelcome before thyroid work-up)'),
        ('SURG-0429', 'acceptable', ['NM-HIDA', 'MRCP'], ['NM-HIDA'],
         'note asks for a functional study of an ongoing bile leak; MRCP is the wrongly ordered exam'),
        ('SURG-0321', 'acceptable', ['MR-ABD-RENAL', 'CT-RENAL-MASS'], ['MR-ABD-RENAL'],
         'CT already equivocal (pseudoenhancement) and note asks to avoid further radiation'),
        ('SURG-0438', 'acceptable', ['CT-HEAD-WO', 'CT-CAP-W'], ['CT-HEAD-WO'],
         'order is "head first" with a dilating pupil: CT CAP does not image the head'),
        ('SURG-0444', 'acceptable', ['CTA-CHEST-PE', 'CT-ABD-PEL-W'], ['CTA-CHEST-PE'],
         'main question is PE: a portal-venous abdomen/pelvis CT does not answer it'),
        ('SURG-0058', 'acceptable', ['CT-CSPINE-WO', 'CT-CAP-W'], ['CT-CSPINE-WO'],
         'order is the C-spine component of a pan-scan: CT CAP does not cover the cervical spine'),
        ('SURG-0067', 'acceptable', ['CT-LSPINE-WO', 'CT-EXT-WO'], ['CT-LSPINE-WO'],
         'order is for L1 tenderness: extremity CT (calcaneus) does not answer the spine question'),
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
            fh.write('\n'.join(json.dumps(r) for r in rows) + '\n')
    print(f'applied {total} edits')


if __name__ == '__main__':
    main()
