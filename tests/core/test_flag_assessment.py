"""Severity, status and kind of safety flags: written fresh, each positive with its near miss."""
import pytest

from radassist.domain import Order
from radassist.flag_assessment import assess_order, ckd_epi_2021
from radassist.safety_policy import load_policy


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def flags(text, policy, age=60, sex="F"):
    return {f.type: f for f in assess_order(Order("A1", "CT", text, age, sex), policy)}


@pytest.mark.parametrize("text, severity", [
    ("Prior anaphylaxis to IV contrast in 2019, needed adrenaline.", "severe"),
    ("contrast allergy - throat swelling after CT 2021", "severe"),
    ("Iodinated contrast reaction: hypotension and wheeze.", "severe"),
    ("contrast allergy: hives only, no airway involvement", "mild"),
    ("Mild rash after iodinated contrast years ago.", "mild"),
    ("itching with IV contrast last time", "mild"),
    ("Allergies: iodinated contrast", "unknown"),
])
def test_contrast_allergy_severity(policy, text, severity):
    assert flags(text, policy)["contrast-allergy"].severity == severity


def test_gadolinium_allergy_is_its_own_agent(policy):
    f = flags("Allergy: gadolinium (gadobutrol), anaphylaxis 2020.", policy)["contrast-allergy"]
    assert (f.kind, f.severity) == ("gadolinium", "severe")
    assert flags("anaphylaxis to CT contrast", policy)["contrast-allergy"].kind == "iodinated"


@pytest.mark.parametrize("text", [
    "Chart says iodine allergy, clarified: skin reaction to betadine only.",
    "listed allergy to iodine - was told it was the povidone swab; tolerated contrast CT since 2022",
])
def test_clarified_allergy_is_resolved_and_does_not_steer(policy, text):
    f = flags(text, policy)["contrast-allergy"]
    assert f.status == "resolved"
    assert not policy.steers(f)


def test_premedication_handles_a_mild_allergy(policy):
    f = flags("Prior hives with contrast, premedicate per protocol.", policy)["contrast-allergy"]
    assert f.severity == "mild" and f.handled
    assert not policy.steers(f)


def test_severe_allergy_steers(policy):
    f = flags("anaphylaxis to iodinated contrast 2018", policy)["contrast-allergy"]
    assert policy.steers(f)


@pytest.mark.parametrize("text, severity, steers", [
    ("eGFR 22 today", "impaired", True),
    ("eGFR 41, stable CKD3b", "caution", False),
    ("On HD MWF via fistula.", "dialysis", False),
    ("AKI this admission, creatinine climbing", "aki", True),
])
def test_renal_severity(policy, text, severity, steers):
    f = flags(text, policy)["renal-impairment"]
    assert f.severity == severity
    assert policy.steers(f) is steers


def test_normal_egfr_raises_nothing(policy):
    assert "renal-impairment" not in flags("eGFR 85, metformin held", policy)


def test_resolved_aki_does_not_steer(policy):
    f = flags("AKI on admission, now resolved, creatinine 0.9.", policy)["renal-impairment"]
    assert f.status == "resolved" and not policy.steers(f)


def test_creatinine_only_estimates_egfr_with_ckd_epi(policy):
    f = flags("creatinine 2.6 mg/dL", policy, age=79, sex="M")["renal-impairment"]
    assert f.severity == "impaired"
    assert "CKD-EPI 2021" in f.note
    # micromol/L detected from the unit
    g = flags("creatinine 230 umol/L", policy, age=79, sex="M")["renal-impairment"]
    assert g.severity == "impaired" and "umol/L" in g.note


def test_ckd_epi_2021_reference_values():
    # 50-year-old woman, creatinine 1.0 mg/dL: about 68 (published equation)
    assert ckd_epi_2021(1.0, 50, "F") == pytest.approx(68.5, abs=1.0)
    assert ckd_epi_2021(1.0, 50, "M") == pytest.approx(91.7, abs=1.5)


def test_young_man_with_modest_creatinine_is_only_a_caution(policy):
    f = flags("Cr 2.1", policy, age=25, sex="M")["renal-impairment"]
    assert f.severity in ("caution", "impaired")
    assert f.note


def test_non_conditional_device_is_mr_unsafe(policy):
    f = flags("ICD (2009, legacy device - not MR conditional per EP)", policy)["mri-unsafe-implant"]
    assert f.severity == "mr-unsafe" and f.status == "active" and not f.handled
    assert policy.steers(f)


@pytest.mark.parametrize("text", [
    "aneurysm clip from 1985, type unknown, no records",
    "MRI safety team declined: metal worker, orbits not cleared",
    "retained shrapnel in the left thigh",
])
def test_devices_of_unknown_status_are_uncertain_and_steer(policy, text):
    f = flags(text, policy)["mri-unsafe-implant"]
    assert f.status == "uncertain" and f.severity == "unknown"
    assert policy.steers(f)


def test_unknown_implant_without_a_named_device(policy):
    f = flags("unknown implant in the abdomen from surgery abroad, no documentation", policy)
    assert f["mri-unsafe-implant"].severity == "unknown"


def test_cleared_conditional_device_raises_nothing_that_steers(policy):
    got = flags("MR conditional pacemaker, cleared by MRI safety for 1.5T", policy)
    assert "mri-unsafe-implant" not in got or not policy.steers(got["mri-unsafe-implant"])


def test_anticoagulant_and_antiplatelet_kinds(policy):
    assert flags("on clopidogrel 75 mg", policy)["anticoagulation"].kind == "antiplatelet"
    assert flags("on Eliquis 5 bd", policy)["anticoagulation"].kind == "anticoagulant"
    assert flags("warfarin and aspirin", policy)["anticoagulation"].kind == "both"


def test_claustrophobia_severity(policy):
    assert flags("failed MRI twice despite lorazepam, claustrophobic", policy)["claustrophobia"].severity == "severe"
    assert flags("mildly claustrophobic, fine with an anxiolytic", policy)["claustrophobia"].severity == "mild"


def test_uncertain_pregnancy(policy):
    assert flags("?pregnant, awaiting hCG", policy)["pregnancy"].status == "uncertain"
    assert flags("22 weeks pregnant", policy)["pregnancy"].status == "active"


def test_flags_serialise_with_severity_and_status(policy):
    f = flags("anaphylaxis to IV contrast", policy)["contrast-allergy"]
    data = f.to_json()
    assert data["severity"] == "severe" and data["status"] == "active" and data["kind"] == "iodinated"
    from radassist.domain import SafetyFlag

    assert SafetyFlag.from_json(f.to_store()) == f


def test_plus_sign_pregnancy_test_is_active(policy):
    f = flags("G2P1, +UPT at home, spotting", policy)["pregnancy"]
    assert f.status == "active"
    assert "pregnancy" not in flags("UPT negative x2", policy)
