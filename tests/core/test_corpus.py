"""The training corpus: complete, well-formed, and never a copy of the development sets."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from radassist.catalog import default_catalog
from radassist.paths import PROJECT_DIR
from radassist.training.style_folds import load_corpus

CORPUS = PROJECT_DIR / "data" / "corpus"
SHARED = PROJECT_DIR.parent / "shared"
CATEGORIES = {"ordinary", "ordered-exam-mismatch", "contraindication", "negated-risk", "noisy"}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(CORPUS)


def test_corpus_size_styles_and_coverage(corpus):
    assert len(corpus) >= 4000
    styles = Counter(e.style for e in corpus)
    assert len(styles) >= 6 and min(styles.values()) >= 300
    codes = {p.code for p in default_catalog()}
    per_code = Counter(e.code for e in corpus)
    assert set(per_code) == codes, codes - set(per_code)
    assert min(per_code.values()) >= 15
    assert {e.category for e in corpus} == CATEGORIES
    shares = Counter(e.category for e in corpus)
    assert 0.35 <= shares["ordinary"] / len(corpus) <= 0.55
    assert shares["contraindication"] / len(corpus) >= 0.1


def test_corpus_rows_are_well_formed(corpus):
    codes = {p.code for p in default_catalog()}
    assert len({e.order.accession for e in corpus}) == len(corpus)
    for e in corpus:
        assert e.code in codes and e.code in e.acceptable and set(e.acceptable) <= codes
        assert e.order.sex in ("F", "M") and e.order.age is not None and 0 <= e.order.age <= 110
        assert e.order.priority in ("STAT", "URGENT", "ROUTINE")
        assert e.order.clinical_notes.strip()


def test_corpus_notes_are_distinct(corpus):
    """Every note of five words or more is written once (a few very short ones may coincide)."""
    notes = Counter(e.order.clinical_notes.strip().lower() for e in corpus if len(_words(e.order.clinical_notes)) >= 5)
    assert notes.most_common(1)[0][1] == 1


def _words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def _shingles(text, n):
    w = _words(text)
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


@pytest.mark.skipif(not (SHARED / "dev_orders2.jsonl").exists(), reason="development sets not beside the checkout")
def test_no_dev_note_copied_or_paraphrased(corpus):
    dev = [json.loads(line)["clinical_notes"] for name in ("dev_orders.jsonl", "dev_orders2.jsonl")
           for line in (SHARED / name).read_text().splitlines() if line.strip()]
    corpus_8 = set().union(*(_shingles(e.order.clinical_notes, 8) for e in corpus))
    corpus_4 = [(_shingles(e.order.clinical_notes, 4), e.order.accession) for e in corpus]
    for note in dev:
        assert not (_shingles(note, 8) & corpus_8), note  # no 8-word run in common
        d4 = _shingles(note, 4)
        if len(d4) < 8:  # very short notes share stock phrases ("Gleason 3+4 on active surveillance")
            continue
        for s4, acc in corpus_4:
            # no close paraphrase: a corpus note holding half of a dev note's 4-word phrases
            assert len(d4 & s4) / len(d4) < 0.5, (acc, note)


@pytest.mark.slow
def test_flag_steering_never_moves_a_correct_label_away(corpus):
    """Oracle check of the site policy: if the model ranked each order's labelled protocol first,
    steering by the flags found in its notes keeps an acceptable protocol on top."""
    import numpy as np

    from radassist.flag_assessment import assess_order
    from radassist.ranking import steer
    from radassist.safety_policy import load_policy

    catalog = default_catalog()
    policy = load_policy(catalog)
    index = {p.code: i for i, p in enumerate(catalog)}
    steered = moved = 0
    wrong = []
    for e in corpus:
        flags = assess_order(e.order, policy)
        p = np.full(len(catalog), 1e-4)
        p[index[e.code]] = 0.9
        p /= p.sum()
        q, _ = steer(p, catalog, flags, e.order, policy)
        if int(q.argmax()) != index[e.code] or any(policy.steers(f) for f in flags):
            steered += 1
        if catalog[int(q.argmax())].code not in e.acceptable:
            wrong.append(e.order.accession)
    assert steered >= 300
    assert len(wrong) <= 0.005 * steered, wrong
