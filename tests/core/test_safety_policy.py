"""The site's safety policy is data: loaded, validated with clear errors, used by the ranking."""
import json
import shutil

import numpy as np
import pytest

from radassist.catalog import default_catalog
from radassist.domain import Order, Protocol, SafetyFlag
from radassist.paths import RESOURCES_DIR
from radassist.ranking import steer, suggestions
from radassist.safety_policy import PolicyError, load_policy


@pytest.fixture(scope="module")
def catalog():
    return default_catalog()


@pytest.fixture(scope="module")
def policy(catalog):
    return load_policy(catalog)


class SiteKnowledge:
    """A site's own copy of the policy files, to edit in a test."""

    def __init__(self, folder):
        shutil.copytree(RESOURCES_DIR / "knowledge", folder)
        self.folder = folder
        self.path = folder / "safety_policy.json"
        self.data = json.loads(self.path.read_text())

    def save(self):
        self.path.write_text(json.dumps(self.data))
        return self

    def load(self):
        return load_policy(folder=self.folder)


@pytest.fixture
def site(tmp_path):
    return SiteKnowledge(tmp_path / "k")


def test_shipped_policy_validates_against_the_shipped_catalog(policy):
    assert policy.warnings == []
    assert policy.alternatives[("CTA-CHEST-PE", "renal-impairment")] == ("NM-VQ",)


def test_malformed_policy_names_file_and_field(site):
    site.data["renal"]["egfr_impaired_below"] = "thirty"
    with pytest.raises(PolicyError, match="safety_policy.json.*number"):
        site.save().load()
    site.data["renal"]["egfr_impaired_below"] = 30
    site.data["steering"]["made-up-flag"] = {"severities": [], "statuses": []}
    with pytest.raises(PolicyError, match="unknown flag type 'made-up-flag'"):
        site.save().load()


def test_bad_alternatives_row_names_the_line(site):
    alt = site.folder / "safe_alternatives.csv"
    alt.write_text(alt.read_text() + "CT-HEAD-W,not-a-flag,CT-HEAD-WO,,,\n")
    with pytest.raises(PolicyError, match=r"safe_alternatives.csv:\d+: flag"):
        site.load()


def test_rows_for_codes_a_site_removed_are_reported_not_fatal(catalog):
    small = [p for p in catalog if p.code != "NM-VQ"]
    policy = load_policy(small)
    assert any("NM-VQ" in w for w in policy.warnings)
    assert ("CTA-CHEST-PE", "renal-impairment") not in policy.alternatives


def test_a_site_can_change_the_egfr_cut_off(site):
    from radassist.flag_assessment import assess_order

    site.data["renal"]["egfr_impaired_below"] = 40
    site.data["renal"]["egfr_caution_below"] = 50
    strict = site.save().load()
    f = assess_order(Order("A", "CT", "eGFR 35"), strict)[0]
    assert f.severity == "impaired" and strict.steers(f)


def _probs(catalog, weights):
    p = np.full(len(catalog), 1e-4)
    for code, w in weights.items():
        p[[c.code for c in catalog].index(code)] = w
    return p / p.sum()


def test_renal_flag_moves_pe_to_vq(catalog, policy):
    order = Order("A", "CT CHEST", "suspected PE", 70, "F")
    flag = SafetyFlag("renal-impairment", "eGFR 19", 0, 7, "impaired", "active")
    out = suggestions(order, _probs(catalog, {"CTA-CHEST-PE": 0.9, "CT-CHEST-WO": 0.05}), catalog, [flag], policy)
    assert out[0].code == "NM-VQ"
    pe = next(s for s in out if s.code == "CTA-CHEST-PE")
    assert pe.conflicts == ("renal-impairment",)


def test_handled_flag_does_not_steer(catalog, policy):
    order = Order("A", "CT ABD", "SBO", 50, "M")
    flag = SafetyFlag("contrast-allergy", "hives", 0, 5, "mild", "active", "iodinated", "premedicate")
    out = suggestions(order, _probs(catalog, {"CT-ABD-PEL-W": 0.9}), catalog, [flag], policy)
    assert out[0].code == "CT-ABD-PEL-W" and out[0].conflicts == ()


def test_no_safe_alternative_keeps_the_ranking_and_marks_the_conflict(catalog, policy):
    order = Order("A", "CTA", "tearing chest pain, dissection", 60, "M")
    flag = SafetyFlag("contrast-allergy", "anaphylaxis", 0, 5, "severe", "active", "iodinated")
    out = suggestions(order, _probs(catalog, {"CTA-AORTA": 0.95}), catalog, [flag], policy)
    assert out[0].code == "CTA-AORTA" and out[0].conflicts == ("contrast-allergy",)


def test_pregnancy_only_conflicts_where_an_alternative_exists(catalog, policy):
    order = Order("A", "CT HEAD", "head strike, ?bleed", 30, "F")
    flag = SafetyFlag("pregnancy", "22 weeks pregnant", 0, 5)
    out = suggestions(order, _probs(catalog, {"CT-HEAD-WO": 0.95}), catalog, [flag], policy)
    assert out[0].code == "CT-HEAD-WO" and out[0].conflicts == ()
    stone = suggestions(Order("B", "CT", "flank pain", 30, "F"),
                        _probs(catalog, {"CT-ABD-PEL-STONE": 0.9}), catalog, [flag], policy)
    assert stone[0].code == "US-RENAL"
    assert "CT-ABD-PEL-STONE" in [s.code for s in stone[:3]]


def test_impossible_protocols_for_sex_are_never_offered(catalog, policy):
    boy = Order("A", "US", "testicular pain, ?torsion", 16, "M")
    out = suggestions(boy, _probs(catalog, {"US-SCROTUM": 0.6, "US-OB-EARLY": 0.3, "US-PELVIS-TV": 0.1}),
                      catalog, [], policy, top_k=5)
    codes = [s.code for s in out]
    assert "US-OB-EARLY" not in codes and "US-PELVIS-TV" not in codes


def test_steering_keeps_a_probability_distribution(catalog, policy):
    order = Order("A", "MRI", "sciatica", 50, "M")
    flag = SafetyFlag("mri-unsafe-implant", "pacemaker", 0, 9, "mr-unsafe", "active")
    probs, conflicts = steer(_probs(catalog, {"MR-LSPINE-WO": 0.9}), catalog, [flag], order, policy)
    assert probs.sum() == pytest.approx(1.0)
    assert probs[[c.code for c in catalog].index("CT-LSPINE-WO")] > 0.8
    assert all(not c or c == ("mri-unsafe-implant",) for c in conflicts)


def test_protocol_added_to_the_catalog_gets_the_generic_alternative(catalog, policy):
    new = Protocol("MR-ELBOW-WO", "MRI Elbow WO Contrast", "MR", "Extremity", "none", "elbow ligament injury")
    cat = list(catalog) + [new]
    pol = load_policy(cat)
    order = Order("A", "MRI ELBOW", "UCL tear", 30, "M")
    flag = SafetyFlag("mri-unsafe-implant", "pacemaker", 0, 9, "mr-unsafe", "active")
    out = suggestions(order, _probs(cat, {"MR-ELBOW-WO": 0.9}), cat, [flag], pol)
    assert out[0].code == "CT-EXT-WO"


def test_a_site_adds_a_local_brand_and_device_name(site):
    from radassist.flag_assessment import assess_order

    site.data["lexicon"]["anticoagulant"].append("Warfant")
    site.data["lexicon"]["mri_unsafe_device"].append("NeuroPace RNS")
    site = site.save().load()
    f = assess_order(Order("A", "CT", "on warfant 5 mg for AF"), site)
    assert [(x.type, x.kind, x.evidence) for x in f] == [("anticoagulation", "anticoagulant", "warfant")]
    assert assess_order(Order("A", "CT", "warfant stopped last year"), site) == []
    g = assess_order(Order("A", "MRI", "epilepsy, NeuroPace RNS implanted 2021"), site)
    assert g and g[0].type == "mri-unsafe-implant" and site.steers(g[0])
    assert not [x for x in assess_order(Order("A", "CT", "on warfant"), load_policy()) if x.type == "anticoagulation"]


def test_lexicon_must_be_lists_of_strings(site):
    site.data["lexicon"]["antiplatelet"] = "plavix"
    with pytest.raises(PolicyError, match="lexicon.antiplatelet"):
        site.save().load()


def test_children_get_ultrasound_first_where_it_answers(catalog, policy):
    kid = Order("C1", "CT ABD/PELVIS", "RLQ pain since last night, anorexia, ?appendicitis", 9, "M")
    out = suggestions(kid, _probs(catalog, {"CT-ABD-PEL-W": 0.9}), catalog, [], policy)
    assert out[0].code == "US-APPENDIX" and "CT-ABD-PEL-W" in [s.code for s in out]
    # ... not for an adult, not for a child's abdominal trauma, not when the US was already non-diagnostic
    adult = Order("A1", "CT ABD/PELVIS", "RLQ pain, ?appendicitis", 30, "M")
    assert suggestions(adult, _probs(catalog, {"CT-ABD-PEL-W": 0.9}), catalog, [], policy)[0].code == "CT-ABD-PEL-W"
    trauma = Order("C2", "CT ABD/PELVIS", "handlebar injury, RLQ pain and bruising", 10, "M")
    assert suggestions(trauma, _probs(catalog, {"CT-ABD-PEL-W": 0.9}), catalog, [], policy)[0].code == "CT-ABD-PEL-W"
    done = Order("C3", "CT ABD/PELVIS", "RLQ pain, US this morning non-diagnostic, appendix not seen", 12, "F")
    assert suggestions(done, _probs(catalog, {"CT-ABD-PEL-W": 0.9}), catalog, [], policy)[0].code == "CT-ABD-PEL-W"


def test_vq_is_not_the_alternative_when_the_chest_film_is_abnormal(catalog, policy):
    flag = SafetyFlag("pregnancy", "30 weeks pregnant", 0, 5)
    clear = Order("P1", "CT CHEST", "30 weeks pregnant, ?PE, CXR clear, no effusion", 30, "F")
    assert suggestions(clear, _probs(catalog, {"CTA-CHEST-PE": 0.9}), catalog, [flag], policy)[0].code == "NM-VQ"
    abnormal = Order("P2", "CT CHEST", "30 weeks pregnant, ?PE, CXR: L lower lobe consolidation", 30, "F")
    top = suggestions(abnormal, _probs(catalog, {"CTA-CHEST-PE": 0.9}), catalog, [flag], policy)[0]
    assert top.code == "CTA-CHEST-PE" and top.conflicts == ("pregnancy",)


def test_site_reaction_words_set_allergy_severity(site):
    from radassist.flag_assessment import assess_order

    site.data["lexicon"]["severe_reaction"].append("blue-lighted to hospital")
    site = site.save().load()
    text = "contrast allergy - blue-lighted to hospital after CT in 2019"
    assert assess_order(Order("A", "CT", text), site)[0].severity == "severe"
    assert assess_order(Order("A", "CT", text), load_policy())[0].severity == "unknown"
