"""Deterministic synthetic training data: imaging orders labelled with a protocol code.

Orders are composed from a hand-curated knowledge table (clinical scenarios, findings,
history, questions, ordered-exam strings, demographics and priority for each catalog
protocol), then roughened the way real referral notes are: clinician shorthand,
mixed case, typos, distractor comorbidities, negated or normal safety values, empty notes.
Contraindication scenarios change the label (contrast allergy / eGFR < 30 -> non-contrast
CT or another modality, pregnancy -> US, MRI-unsafe implant -> CT, gadolinium
contraindication -> MRI without contrast). A protocol missing from the table gets generic
orders built from its catalog row, so site-added protocols still get training data.

    python -m radassist.synthetic --out FILE --per-protocol N --seed S [--catalog CSV]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from radassist.domain import LabelledOrder, Order, Protocol

__all__ = ["generate", "write_jsonl", "read_labelled_jsonl", "load_catalog", "main", "KNOWLEDGE"]

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "resources" / "protocols.csv"

# ----------------------------------------------------------------------------------------
# Slot values ({name} in the tables)
# ----------------------------------------------------------------------------------------


def _f(lo: float, hi: float, nd: int = 1) -> Callable[[random.Random], str]:
    return lambda r: f"{r.uniform(lo, hi):.{nd}f}"


def _i(lo: int, hi: int) -> Callable[[random.Random], str]:
    return lambda r: str(r.randint(lo, hi))


def _c(*opts: str) -> Callable[[random.Random], str]:
    return lambda r: r.choice(opts)


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "side": _c("R", "L", "right", "left", "rt", "lt"),
    "n": _i(2, 9),
    "days": _i(2, 14),
    "wks": _i(2, 12),
    "mos": _i(2, 18),
    "hr": _i(101, 138),
    "spo2": _i(84, 93),
    "temp": _c("38.2", "38.6", "38.9", "39.3", "39.8", "101.2F", "100.9", "102.4"),
    "wbc": _f(12.0, 24.5),
    "hgb": _f(5.9, 8.8),
    "cr": _f(0.6, 1.1),
    "crhi": _f(2.6, 7.4),
    "egfrlo": _i(7, 28),
    "egfrok": _i(61, 112),
    "psa": _f(4.2, 26.0),
    "ddimer": _c("1.8", "2.4", "3.9", "0.9", "1250", "2870", "4.6", "elevated", "positive"),
    "lkw": _c("40 min", "1h", "90 min", "2 hrs", "2.5h", "3 hours", "30 minutes", "1 hr 15 min"),
    "latelkw": _c("7h", "9 hours", "11 hrs", "14h", "16 hours", "20h", "unknown, >8h"),
    "nihss": _i(5, 24),
    "ga": _i(13, 35),
    "lmp": _i(5, 11),
    "bhcg": _c("850", "1450", "2300", "3100", "5600", "1900"),
    "mm": _i(4, 14),
    "cm": _f(1.2, 6.5),
    "py": _i(20, 65),
    "alp": _i(190, 560),
    "inr": _f(2.0, 3.8),
    "bili": _f(2.3, 11.5),
    "prl": _i(45, 240),
    "year": _i(2006, 2023),
    "gcs": _i(13, 15),
    "bp": _c("84/50", "88/56", "79/44", "92/60", "86/52"),
    "pirads": _c("3", "4", "5"),
    "gleason": _c("3+3", "3+4", "4+3", "4+4"),
    "wells": _c("5", "6", "6.5", "7", "4.5"),
    "afp": _i(18, 900),
    "lipase": _i(400, 3200),
    "ca199": _i(90, 2400),
    "ascvd": _c("7.5", "8", "9.2", "11", "12.5", "14"),
    "cancer": _c("lung adenocarcinoma", "small cell lung ca", "melanoma", "breast ca",
                 "renal cell ca", "NSCLC", "metastatic breast cancer", "colon ca"),
    "ef": _i(20, 40),
    "lactate": _f(2.4, 7.5),
    "esr": _i(55, 120),
    "crp": _i(40, 260),
}

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _fill(text: str, r: random.Random) -> str:
    return _SLOT_RE.sub(lambda m: SLOTS[m.group(1)](r) if m.group(1) in SLOTS else m.group(0), text)


# ----------------------------------------------------------------------------------------
# Knowledge table
# ----------------------------------------------------------------------------------------

_PRI = {
    "S": (0.75, 0.2, 0.05),
    "SU": (0.45, 0.45, 0.10),
    "U": (0.15, 0.6, 0.25),
    "UR": (0.05, 0.4, 0.55),
    "R": (0.01, 0.12, 0.87),
}


@dataclass(frozen=True)
class Knowledge:
    """What a referrer writes when this protocol is the right one."""

    exams: tuple[str, ...]  # specific ordered_exam strings
    vague: tuple[str, ...]  # vague or mismatched ordered_exam strings
    scenarios: tuple[str, ...]  # presentations; "F:"/"M:" prefix fixes sex, "~A,B" suffix adds acceptable
    findings: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()
    age: tuple[int, int] = (18, 85)
    sex: str = ""  # "", "F" or "M"
    priority: tuple[float, float, float] = _PRI["R"]
    acceptable: tuple[str, ...] = ()


def _split(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split("|") if x.strip())


def _lines(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.strip().splitlines() if x.strip())


KNOWLEDGE: dict[str, Knowledge] = {}


def _k(code: str, ex: str, vague: str, sc: str | tuple[str, ...], fx: str = "", hx: str = "",
       q: str = "", age: tuple[int, int] = (18, 85), sex: str = "", pri: str = "R",
       acc: str = "") -> None:
    KNOWLEDGE[code] = Knowledge(
        exams=_split(ex), vague=_split(vague),
        scenarios=sc if isinstance(sc, tuple) else _lines(sc),
        findings=_split(fx), history=_split(hx), questions=_split(q), age=age, sex=sex,
        priority=_PRI[pri], acceptable=_split(acc.replace(",", "|")))


# Scenario pools shared by a protocol and the contraindication switches built on it.
PE_SC = _lines("""
acute pleuritic chest pain and dyspnea, HR {hr}
POD 3 after knee arthroplasty, new hypoxia to {spo2}% on RA
d-dimer {ddimer}, dyspnea and tachycardia
sudden onset shortness of breath, on OCPs, returned from long-haul flight yesterday
active cancer on chemo with unexplained hypoxia
DVT confirmed on duplex last week, now chest pain and SOB
syncope with persistent tachycardia, RV dilation on bedside echo
hemoptysis with pleuritic pain, Wells {wells}
post-op day 2 colectomy, tachycardic and desaturating
dyspnea on exertion worsening over {days} days, immobile after hip fracture
new O2 requirement, tachycardia {hr}, recent hospitalization
chest pain worse with inspiration, calf tenderness, recent travel
acute SOB, SpO2 {spo2}%, clear lungs, unexplained
pleuritic CP, HR {hr}, on estrogen therapy
suspected pulmonary embolism
concern for PE, hypoxic
high clinical suspicion for PE
r/o PE, tachycardic and short of breath
acute dyspnea, ?PE
right heart strain on echo, ?PE
""")

APPY_SC = _lines("""
RLQ pain since last night with anorexia and nausea
periumbilical pain that moved to the RLQ, WBC {wbc}
RLQ tenderness with rebound and guarding, temp {temp}
Alvarado score 7, RLQ pain and vomiting
right lower quadrant pain x {n} days, fever, ?appendicitis
McBurney point tenderness, leukocytosis
focal RLQ pain, pain with walking, low grade fever
abdominal pain localizing to right lower quadrant, elevated CRP
""")

ABD_SC = _lines("""
LLQ pain and fever, known diverticulosis
diffuse abd pain with distension, vomiting, no BM x {n} days
prior laparotomy, obstipation and bilious emesis
post-op day 5 fever and abdominal pain, ?collection
known pancreatitis, worsening pain and fever, ?necrosis or pseudocyst
s/p liver biopsy yesterday, Hgb drop and RUQ pain
MVC with seatbelt sign, abdominal tenderness
epigastric pain radiating to back, lipase {lipase}, ?complications
LLQ tenderness with peritoneal signs, WBC {wbc}
generalized abdominal pain, fever {temp}, leukocytosis
crampy abd pain, distended, high-pitched bowel sounds
fever and abd pain after recent bowel surgery, ?anastomotic leak
""")

CHEST_MASS_SC = _lines("""
{cm} cm RLL mass on CXR, long-time smoker
hilar fullness on chest x-ray, ?adenopathy
widened mediastinum on CXR, ?mediastinal mass
newly diagnosed NSCLC, staging
loculated pleural effusion with fever, ?empyema
recurrent unexplained R pleural effusion, cytology pending
hemoptysis and weight loss, heavy smoker
persistent RUL consolidation despite 2 courses of abx, ?obstructing lesion
anterior mediastinal mass, ?thymoma vs lymphoma
enlarging spiculated lung mass, pre-biopsy planning
""")

RENAL_MASS_SC = _lines("""
indeterminate {cm} cm L renal lesion on US
complex cystic renal lesion, needs Bosniak classification
incidental solid-appearing R renal mass on outside imaging
small renal mass on active surveillance
hyperdense renal lesion on noncontrast CT, characterize
enhancing renal lesion?, possible RCC
s/p partial nephrectomy for RCC, surveillance
renal cyst with septations and calcification on US
""")

LIVER_SC = _lines("""
HCV cirrhosis, AFP rising to {afp}, ?HCC~MR-ABD-LIVER
NASH cirrhosis, new {cm} cm lesion on screening US~MR-ABD-LIVER
indeterminate liver lesion on US, characterize~MR-ABD-LIVER
alcoholic cirrhosis, HCC surveillance, US nondiagnostic~MR-ABD-LIVER
pre-transplant liver evaluation, cirrhosis
neuroendocrine tumor, ?hypervascular liver mets~MR-ABD-LIVER
known HCC s/p TACE, treatment response~MR-ABD-LIVER
hep B carrier, new hypoechoic liver lesion~MR-ABD-LIVER
LI-RADS 4 observation, characterize~MR-ABD-LIVER
""")

STONE_SC = _lines("""
colicky {side} flank pain radiating to groin, microscopic hematuria
sudden {side} flank pain, writhing, UA with RBCs
known nephrolithiasis, recurrent colic
flank pain with hematuria, ?obstructing stone
renal colic, prior stones, ?passage
{side} flank pain, nausea, CVA tenderness, afebrile
intermittent severe {side} flank pain since this morning, blood in urine
""")

BRAIN_MASS_SC = _lines("""
known {cancer}, new headaches, r/o brain mets
{cancer} staging, brain
new onset seizure, ?underlying mass
progressive L sided weakness over weeks, ?mass lesion
enhancing lesion on outside CT head, characterize
h/o glioblastoma s/p resection, post treatment follow-up
fever, headache and focal deficit, ?brain abscess
new ataxia with morning vomiting, ?posterior fossa lesion
{cancer}, new confusion and word-finding difficulty
ring-enhancing lesion on prior imaging, follow-up
known brain mets s/p SRS, restaging
personality change and headaches, ?frontal mass
""")

MS_SC = _lines("""
optic neuritis last year, now limb paresthesias, ?demyelination
known MS on ocrelizumab, annual surveillance
new R CN VI palsy, ?cranial neuropathy
atypical trigeminal neuralgia in young pt, ?lesion
bacterial meningitis with persistent fever, ?complication
multiple T2 lesions on outside MRI, ?MS, needs contrast
relapsing numbness and vertigo episodes, r/o MS
""")

LBP_SC = _lines("""
L5 radiculopathy, pain down L leg to dorsum of foot x {wks} wks
R sciatica failing 6 wks conservative therapy
low back pain, failed PT, ?disc herniation
bilateral leg pain and numbness with standing, better bending forward, ?stenosis
low back pain with new foot drop
chronic LBP, red flags: night pain and weight loss
positive straight leg raise, S1 numbness, worsening
back pain radiating to buttock and thigh, progressive weakness
lumbar radicular pain, ?nerve root compression
""")

# --- neuro -------------------------------------------------------------------------------
_k("CT-HEAD-WO", "CT HEAD WO|CT HEAD NON CONTRAST|CT BRAIN WO|CT HEAD W/O CONTRAST|CT HEAD NONCON",
   "CT HEAD|CT BRAIN|CT HEAD ROUTINE|CT HEAD W WO", """
mechanical fall at nursing home, struck back of head, on apixaban
slipped on ice, hit head, brief LOC
syncopal episode with head strike, forehead laceration
MVC, restrained driver, head hit the window, GCS {gcs}
worst headache of life, sudden onset while lifting weights
acute confusion since this morning, new AMS
VP shunt, increasing somnolence and vomiting, ?shunt malfunction
elderly on warfarin, unwitnessed fall, INR {inr}
assaulted, punched multiple times, vomited x2
new R sided weakness started {lkw} ago, exclude bleed before lytics~CTA-HEAD-NECK
intoxicated, found on sidewalk with scalp hematoma
thunderclap headache with neck stiffness, r/o SAH
found down in bathroom by family, lethargic
seizure after falling off bike, no helmet
sudden severe headache and vomiting, BP 210/115
fell down {n} stairs, confused, amnestic to event
dementia pt with acutely worse mental status after fall
""", fx="GCS {gcs}|INR {inr}|vomited twice|pupils equal|occipital scalp hematoma|neuro exam nonfocal|amnesia to event|+LOC|no LOC|BP 190/100",
   hx="on warfarin for afib|on eliquis|on plavix and ASA|h/o dementia|VP shunt placed as child|h/o frequent falls|on xarelto",
   q="r/o ICH|eval for bleed|?SDH|r/o SAH|?intracranial hemorrhage|eval acute intracranial abnormality|r/o skull fx|?shunt malfunction|r/o bleed",
   age=(18, 96), pri="S")

_k("CTA-HEAD-NECK", "CTA HEAD AND NECK|CTA HEAD NECK|CT ANGIO HEAD/NECK|CTA BRAIN AND NECK|CTA HEAD & NECK",
   "CT HEAD|CT HEAD STROKE|CT BRAIN|CT STROKE PROTOCOL", """
code stroke, R hemiparesis and aphasia, LKW {lkw}~CT-HEAD-WO
acute L facial droop and arm drift, NIHSS {nihss}, LKW {lkw}~CT-HEAD-WO
sudden global aphasia with R gaze preference, ?LVO~CT-HEAD-WO
stroke alert: dysarthria and R arm weakness, onset {lkw} ago~CT-HEAD-WO
neck pain after chiropractic manipulation, now vertigo and diplopia, ?vertebral dissection
Horner syndrome with ipsilateral neck pain, r/o carotid dissection
TIA x2 this week with transient R hand weakness, carotid workup
strong family history of ruptured aneurysm, screening
acute vertigo, ataxia and diplopia, LKW {lkw}, ?basilar occlusion~CT-HEAD-WO
tPA candidate, evaluate for large vessel occlusion~CT-HEAD-WO
L hemiplegia and neglect, NIHSS {nihss}, thrombectomy candidate?~CT-HEAD-WO
transient aphasia resolved, known carotid plaque, ?stenosis
acute R homonymous hemianopia and confusion, within window~CT-HEAD-WO
""", fx="NIHSS {nihss}|BP 188/102|glucose 132|LKW {lkw}|L hemineglect|R hemianopia|not on anticoagulation|mRS 0 at baseline",
   hx="afib off anticoagulation|prior TIA|h/o carotid stenosis",
   q="r/o LVO|eval for thrombectomy|?M1 occlusion|?dissection|stroke protocol|eval vessels|?ICA occlusion",
   age=(30, 92), pri="S")

_k("CT-PERF-HEAD", "CT PERFUSION HEAD|CTP BRAIN|CT PERFUSION|CT HEAD PERFUSION STROKE|CT PERFUSION BRAIN",
   "CT HEAD|CTA HEAD|CT HEAD STROKE|CTA HEAD AND NECK", """
wake-up stroke, went to bed normal, woke with L hemiplegia
LKW {latelkw} ago, R MCA syndrome, penumbra assessment for late thrombectomy~CTA-HEAD-NECK
stroke symptoms of unknown onset, last seen well last evening, aphasia
extended window stroke, LKW {latelkw}, NIHSS {nihss}, ?salvageable tissue~CTA-HEAD-NECK
outside 6h window, suspected L ICA terminus occlusion, DAWN criteria eval~CTA-HEAD-NECK
woke with R weakness and aphasia, LKW > 8 hrs, thrombectomy candidate?
transfer for late window thrombectomy evaluation, NIHSS {nihss}~CTA-HEAD-NECK
found with L sided weakness this morning, last normal {latelkw} ago
""", fx="NIHSS {nihss}|LKW {latelkw}|mRS 0 baseline|ASPECTS 8 on outside CT|BP 176/94",
   q="core/penumbra mismatch?|eval penumbra|perfusion for late window|?mismatch|core infarct volume",
   age=(40, 92), pri="S")

_k("CT-HEAD-W", "CT HEAD W CONTRAST|CT BRAIN WITH CONTRAST|CT HEAD WITH IV CONTRAST|CT HEAD W",
   "CT HEAD|MRI BRAIN|MRI BRAIN W WO", """
ring-enhancing lesion on prior study, follow-up, no MRI access
known brain abscess on IV abx, follow-up, MRI unavailable
brain metastases follow-up, pt cannot have MRI~CT-HEAD-WWO
headache in known cancer pt, MRI contraindicated, r/o mets~CT-HEAD-WWO
abscess workup, cannot go in MRI~CT-HEAD-WWO
toxoplasmosis follow-up in HIV pt, MRI not available
surveillance of treated brain mets, implant precludes MRI~CT-HEAD-WWO
""", q="r/o mets|eval enhancing lesion|?abscess|contrast enhanced CT pls", age=(35, 88), pri="UR",
   acc="CT-HEAD-WWO")

_k("CT-HEAD-WWO", "CT HEAD WO/W CONTRAST|CT HEAD W WO|CT BRAIN W/WO|CT HEAD WITH AND WITHOUT",
   "CT HEAD|MRI BRAIN|MRI BRAIN W WO", """
known meningioma, characterize, unable to undergo MRI~CT-HEAD-W
indeterminate intracranial mass on noncon CT, pre and post contrast requested
brain mass characterization, MRI contraindicated~CT-HEAD-W
hyperdense lesion on noncontrast head CT, ?tumor vs hemorrhage, no MRI possible
known glioma, progression?, MRI not tolerated~CT-HEAD-W
new mass effect on noncon CT in cancer pt, MRI not an option~CT-HEAD-W
""", q="characterize mass|pre and post contrast|?mets|eval lesion", age=(35, 88), pri="UR",
   acc="CT-HEAD-W")

_k("MR-BRAIN-WWO", "MRI BRAIN W WO|MRI BRAIN WITH AND WITHOUT CONTRAST|MR BRAIN W/WO|MRI BRAIN WWO|MRI BRAIN W/ + W/O",
   "MRI BRAIN|MRI HEAD|CT HEAD|MRI BRAIN W", BRAIN_MASS_SC * 2 + MS_SC,
   fx="papilledema on fundoscopy|new R pronator drift|CT showed vasogenic edema|focal seizure|CSF pleocytosis|oligoclonal bands positive",
   hx="h/o {cancer}|s/p craniotomy|on keppra",
   q="r/o mets|eval mass|?tumor|eval demyelination|?abscess|r/o metastatic disease|assess enhancement",
   age=(18, 85), pri="UR")

_k("MR-BRAIN-WO", "MRI BRAIN WO|MRI BRAIN WITHOUT CONTRAST|MR BRAIN NON CONTRAST|MRI BRAIN W/O",
   "MRI BRAIN|MRI HEAD|MRI BRAIN W WO", """
progressive memory loss over 2 yrs, MoCA 21, dementia workup
word-finding difficulty and getting lost while driving, ?neurodegenerative
chronic daily headaches, nonfocal neuro exam, no red flags
migraines with slightly changed pattern, neuro intact
first unprovoked seizure in adult, no known malignancy
concussion {wks} wks ago, persistent dizziness and poor concentration
transient aphasia resolved, CT head neg, confirm acute infarct
CT negative, persistent L arm numbness, r/o small infarct
cognitive decline, family concerned, ?NPH vs Alzheimer
vertigo and imbalance, CT unremarkable, ?posterior circulation infarct
acute stroke on CT, confirm extent with DWI
headaches for months, normal exam, pt worried
mild cognitive impairment, baseline imaging
""", fx="MoCA 22|normal neuro exam|CT head negative|no papilledema|EEG normal",
   q="r/o structural lesion|?infarct|eval atrophy|DWI pls|r/o stroke|eval dementia",
   age=(18, 90), pri="R")

_k("MR-PITUITARY", "MRI PITUITARY|MRI SELLA W WO|MRI PITUITARY W/WO|MR SELLA PROTOCOL|MRI PITUITARY DYNAMIC",
   "MRI BRAIN|MRI BRAIN W WO|MRI HEAD", """
F:prolactin {prl}, galactorrhea and amenorrhea
bitemporal field cut on formal visual fields
elevated late-night salivary cortisol, ACTH-dependent Cushing
coarse facial features, shoe size increasing, high IGF-1, ?acromegaly
known pituitary microadenoma on cabergoline, follow-up
incidental sellar mass on CT, characterize
M:low libido, low testosterone with low LH/FSH, ?pituitary lesion
central hypothyroidism, ?hypophysitis
M:erectile dysfunction, prolactin {prl}
F:oligomenorrhea and headaches, prolactin {prl}
diabetes insipidus, ?stalk lesion
macroadenoma s/p transsphenoidal resection, postop f/u
""", fx="prolactin {prl}|IGF-1 2x ULN|visual fields abnl|TSH low, free T4 low|cortisol not suppressed on dex test",
   q="r/o pituitary adenoma|eval sella|?macroadenoma|?microadenoma|pituitary protocol pls",
   age=(18, 72), pri="R")

_k("MR-IAC", "MRI IAC|MRI INTERNAL AUDITORY CANALS W WO|MRI IAC W/WO|MR IAC|MRI IACS",
   "MRI BRAIN|MRI BRAIN W WO|MRI HEAD|CT TEMPORAL BONES", """
asymmetric SNHL on audiogram, {side} worse by 25 dB
unilateral {side} tinnitus x {mos} months, asymmetric audiogram
known vestibular schwannoma 6 mm, interval follow-up
sudden sensorineural hearing loss {side} ear
acoustic neuroma surveillance
unilateral hearing loss with imbalance, ?CPA lesion
hemifacial spasm and ipsilateral hearing loss
""", fx="audiogram asymmetric|word recognition reduced {side}|Weber lateralizes",
   q="r/o vestibular schwannoma|?acoustic neuroma|eval CPA/IAC|r/o retrocochlear lesion",
   age=(25, 82), pri="R")

_k("MR-ORBITS", "MRI ORBITS W WO|MRI ORBITS|MR ORBIT W/WO|MRI ORBITS WITH AND WITHOUT",
   "MRI BRAIN|CT ORBITS|MRI BRAIN W WO", """
painful vision loss {side} eye x {n} days, pain with eye movement, ?optic neuritis
RAPD {side} eye, reduced color vision
proptosis of the {side} eye, ?orbital mass
thyroid eye disease, progressive proptosis and diplopia
orbital cellulitis on CT, ?posterior extension
painless progressive vision loss one eye, ?optic nerve sheath meningioma
unilateral optic disc swelling with pain, ophthalmology referral
""", q="?optic neuritis|eval orbit|r/o orbital mass|eval optic nerve", age=(16, 75), pri="UR")

_k("MRA-HEAD", "MRA HEAD|MRA BRAIN WO|MR ANGIOGRAM HEAD|MRA CIRCLE OF WILLIS|MRA HEAD WO",
   "MRI BRAIN|CTA HEAD|MRA HEAD AND NECK", """
two first-degree relatives with ruptured aneurysm, screening
ADPKD, intracranial aneurysm screening
known {mm} mm AComm aneurysm, surveillance
?AVM on prior MRI, characterize vasculature
intracranial atherosclerosis, recurrent posterior circulation TIAs, ?basilar stenosis
moyamoya follow-up
pulsatile tinnitus, ?vascular malformation
""", q="r/o aneurysm|eval intracranial vessels|?stenosis|?AVM", age=(25, 78), pri="R")

_k("MRA-NECK", "MRA NECK|MRA NECK W WO|MRA CAROTIDS|MR ANGIOGRAM NECK",
   "MRI NECK|US CAROTID|CTA NECK", """
carotid duplex shows 70-79% {side} ICA stenosis, confirm before CEA
{side} ICA stenosis on duplex, vascular surgery planning
neck pain after minor trauma, ?dissection, prefers no radiation
dizziness with head turning, ?vertebrobasilar insufficiency
known vertebral artery dissection, follow-up
carotid bruit, duplex limited by calcified plaque
recurrent vertebrobasilar TIAs
""", q="eval carotid stenosis|?dissection|assess vertebrals", age=(40, 85), pri="UR")

_k("MRV-HEAD", "MRV HEAD|MRV BRAIN|MR VENOGRAM HEAD|MRV HEAD WO",
   "MRI BRAIN|MRI HEAD|CT HEAD", """
F:headache x 1 wk, papilledema, on OCPs, ?CVST
F:obese, daily headaches, transient visual obscurations, papilledema, ?IIH
F:postpartum severe headache and seizure, r/o venous sinus thrombosis
pulsatile tinnitus and headache, ?IIH
factor V Leiden, progressive headache, ?sinus thrombosis
dense transverse sinus on noncon CT, ?thrombosis
mastoiditis with headache, r/o sigmoid sinus thrombosis
""", q="r/o CVST|?venous sinus thrombosis|eval venous sinuses", age=(16, 60), pri="U")

# --- head and neck, spine CT ---------------------------------------------------------------
_k("CT-SINUS-WO", "CT SINUS WO|CT SINUSES|CT PARANASAL SINUSES|CT SINUS NONCON|CT SINUS STEALTH",
   "CT FACE|CT HEAD|CT SINUS W", """
chronic rhinosinusitis > 12 weeks despite abx and nasal steroids
recurrent sinus infections, {n} courses of abx this year
nasal polyposis and anosmia, pre-op FESS planning
ENT referral, persistent facial pressure and purulent drainage
image guidance protocol for endoscopic sinus surgery
chronic nasal obstruction, ?septal deviation and polyps
frontal pressure and congestion x {mos} months
""", q="eval sinuses|?chronic sinusitis|pre FESS", age=(16, 80), pri="R")

_k("CT-FACE-WO", "CT MAXILLOFACIAL WO|CT FACE WO|CT FACIAL BONES|CT MAXILLOFACIAL|CT FACE NONCON",
   "CT HEAD|CT ORBITS|CT FACE W|CT SINUS", """
assaulted, punched in face, nasal deformity and epistaxis
fall off bicycle, chin strike, jaw pain and malocclusion
elbow to the eye playing basketball, diplopia on upgaze, ?orbital floor blowout
MVC with facial lacerations and midface mobility
kicked by horse, facial swelling, ?LeFort
flattening of {side} cheek after punch, infraorbital numbness
jaw pain and trismus after fight, ?mandible fracture
facial trauma, periorbital ecchymosis, step-off at orbital rim
""", q="r/o facial fx|eval orbital floor|?mandible fracture|?ZMC fx|?nasal bone fx|r/o fracture",
   age=(14, 80), pri="SU")

_k("CT-TBONE-WO", "CT TEMPORAL BONES|CT TEMPORAL BONE WO|CT IAC WO|CT TEMPORAL BONES WO|CT MASTOIDS",
   "CT HEAD|MRI IAC|CT SINUS", """
conductive hearing loss {side} ear, normal TM, ?otosclerosis
chronic otorrhea and retraction pocket, ?cholesteatoma
cochlear implant candidate, bilateral profound SNHL, pre-op
head trauma with hemotympanum and CSF otorrhea, ?temporal bone fracture
facial nerve palsy after head injury
mixed hearing loss, air-bone gap 30 dB
recurrent cholesteatoma after mastoidectomy, surgical planning
""", q="eval ossicles|?cholesteatoma|r/o temporal bone fx|eval otic capsule", age=(4, 80), pri="R")

_k("CT-NECK-W", "CT NECK W CONTRAST|CT SOFT TISSUE NECK W|CT NECK WITH IV CONTRAST|CT NECK SOFT TISSUE W",
   "CT NECK|CT NECK SOFT TISSUE|MRI NECK", """
sore throat, trismus, uvular deviation, ?peritonsillar abscess
fever, neck stiffness and dysphagia, ?retropharyngeal abscess
firm painless {side} neck mass x {mos} months, smoker
biopsy-proven laryngeal SCC, staging~PET-FDG
HPV+ oropharyngeal cancer, pretreatment staging~PET-FDG
enlarging cervical lymph nodes, night sweats
dental infection with submandibular swelling, ?Ludwig angina
hoarseness x 2 months, ?laryngeal mass
neck swelling after dental extraction, ?deep neck infection
""", q="r/o abscess|eval neck mass|staging|?lymphadenopathy", age=(16, 85), pri="U")

_k("CT-CSPINE-WO", "CT CERVICAL SPINE WO|CT C-SPINE|CT CSPINE NONCON|CT C SPINE W/O",
   "CT NECK|XR CSPINE|CT SPINE|CT HEAD AND C SPINE", """
MVC rollover, midline neck tenderness
elderly pt fell down stairs, neck pain
diving accident, neck pain and tingling hands
rear-ended at highway speed, neck pain, NEXUS positive
fall from ladder ~10 ft, c-collar in place
ground level fall, posterior neck tenderness, on anticoagulation
trauma activation, intoxicated, unable to clinically clear c-spine
motorcycle crash, neck pain, paresthesias
""", q="r/o c-spine fx|clear c-spine|?fracture|eval cervical fx", age=(16, 95), pri="S")

_k("CT-TSPINE-WO", "CT THORACIC SPINE WO|CT T-SPINE|CT TSPINE|CT THORACIC SPINE NONCON",
   "CT SPINE|XR THORACIC SPINE|MRI THORACIC SPINE", """
fall from roof, midthoracic back pain and step-off
high-speed MVC, thoracic tenderness
osteoporosis, acute mid back pain after lifting, ?compression fx
wedge deformity of T8 on CXR, characterize
ejected from vehicle, upper back pain
thoracolumbar junction pain after fall from horse
known myeloma, new thoracic pain, ?compression fracture
""", q="r/o fracture|?compression fx|eval thoracic spine", age=(25, 92), pri="SU")

_k("CT-LSPINE-WO", "CT LUMBAR SPINE WO|CT L-SPINE|CT LSPINE NONCON|CT LUMBAR SPINE W/O",
   "CT SPINE|XR LUMBAR SPINE|MRI LUMBAR SPINE", """
fall from height landing on feet, low back pain, ?burst fracture
MVC, lumbar tenderness, ?L1 fracture
s/p L4-5 fusion, ?hardware loosening
pedicle screws, new pain, evaluate hardware position
L2 compression deformity on XR, further characterize
lap belt injury, ?Chance fracture
""", q="r/o fracture|eval hardware|?fx", age=(20, 90), pri="U")

# --- chest and cardiac ---------------------------------------------------------------------
_k("CT-CHEST-WO", "CT CHEST WO|CT CHEST NONCON|CT CHEST WITHOUT CONTRAST|CT THORAX WO",
   "CT CHEST|CT THORAX|CT CHEST W", """
{mm} mm RUL nodule on prior CT, 12 month follow-up per Fleischner
incidental {mm} mm pulmonary nodule, follow-up
chronic cough > 8 weeks, CXR unremarkable
COPD with emphysema, assess progression
stable ground glass nodule, interval follow-up
known pulmonary nodules, surveillance
emphysema on prior imaging, worsening dyspnea, no contrast needed
follow-up of part-solid nodule, noncontrast
chronic cough and wheeze, never smoker, CXR normal
""", q="nodule f/u|eval lung parenchyma|noncontrast pls", age=(35, 88), pri="R")

_k("CT-CHEST-W", "CT CHEST W CONTRAST|CT CHEST WITH IV CONTRAST|CT THORAX W|CT CHEST W IV",
   "CT CHEST|CT THORAX|CT CHEST WO", CHEST_MASS_SC,
   fx="CXR: {side} hilar mass|weight loss 8 kg|pleural fluid LDH high|thoracentesis exudative",
   hx="40 pack-year smoker|h/o asbestos exposure",
   q="eval mass|staging|?empyema|characterize effusion|r/o malignancy", age=(35, 90), pri="UR")

_k("CTA-CHEST-PE", "CTA CHEST PE|CT PE PROTOCOL|CTA PULMONARY|CT ANGIO CHEST PE|CTA CHEST PE PROTOCOL",
   "CT CHEST|CT CHEST W|CTA CHEST|CT CHEST W CONTRAST", PE_SC,
   fx="HR {hr}|SpO2 {spo2}% RA|D-dimer {ddimer}|Wells {wells}|troponin mildly elevated|CXR clear|sinus tach on ECG|RR 26",
   hx="prior DVT|recent surgery|h/o PE",
   q="?PE|r/o PE|eval pulmonary embolism|r/o PE pls|?saddle embolus|PE study",
   age=(18, 90), pri="S")

_k("CT-CHEST-HRCT", "CT CHEST HIGH RESOLUTION|HRCT CHEST|CT CHEST HRCT|CT CHEST ILD PROTOCOL|CT CHEST HI RES",
   "CT CHEST|CT CHEST WO|CT THORAX", """
bibasilar velcro crackles, progressive DOE, ?IPF
scleroderma, reduced DLCO, ILD screening
bird keeper with subacute dyspnea, ?hypersensitivity pneumonitis
known UIP pattern on antifibrotic, follow-up
recurrent infections and chronic productive cough, ?bronchiectasis
dermatomyositis, anti-Jo1 positive, eval ILD
on amiodarone with new dyspnea and low DLCO, ?drug toxicity
restrictive PFTs with fine crackles at bases
sarcoidosis, follow-up fibrosis
RA on methotrexate, worsening cough, ILD vs MTX pneumonitis
reticular opacities on CXR, clubbing
""", q="prone and expiratory imaging|eval ILD|?fibrosis|ILD protocol|r/o interstitial lung disease",
   age=(35, 85), pri="R")

_k("CT-CHEST-LDCT", "CT CHEST LOW DOSE SCREENING|LDCT LUNG CANCER SCREENING|CT LUNG SCREENING|CT CHEST LDCT|LOW DOSE CT CHEST",
   "CT CHEST|CT CHEST WO|CT CHEST SCREENING", """
current smoker, {py} pack-years, no symptoms, annual screening
quit smoking {n} years ago, {py} pk-yr history, shared decision making done
annual LDCT, prior Lung-RADS 2
baseline lung cancer screening, asymptomatic
{py} pack-year smoker, eligible per USPSTF
Lung-RADS 3 six months ago, follow-up screening
heavy smoker {py} pk yrs, no cough or weight loss, screening
""", q="lung cancer screening|annual screen|screening LDCT|LCS", age=(50, 80), pri="R")

_k("CTA-AORTA", "CTA AORTA|CTA CHEST ABDOMEN PELVIS|CTA DISSECTION PROTOCOL|CT ANGIO AORTA|CTA AORTA CAP",
   "CT CHEST|CTA CHEST|CT CHEST ABDOMEN PELVIS", """
abrupt tearing chest pain to the back, BP differential between arms
hypertensive emergency with interscapular pain, ?dissection
known {cm} cm AAA, interval sizing
s/p EVAR, surveillance for endoleak
severe aortic stenosis, pre-TAVR planning
Marfan syndrome, aortic root follow-up
chest pain with pulse deficit L arm, widened mediastinum
pulsatile abdominal mass and back pain, ?leaking aneurysm
""", q="r/o dissection|?aortic dissection|eval aneurysm|?endoleak|TAVR protocol", age=(40, 90), pri="SU")

_k("CT-CARDIAC-CAS", "CT CARDIAC CALCIUM SCORE|CT CORONARY CALCIUM SCORING|CALCIUM SCORE CT|CT HEART CALCIUM SCORE|CAC SCORE",
   "CT CHEST|CT CARDIAC|CT HEART", """
asymptomatic, borderline 10-yr ASCVD risk {ascvd}%, statin decision
family history of premature CAD, no symptoms
LDL 168, intermediate risk, reclassification
cardiovascular risk stratification, no chest pain
10-year ASCVD {ascvd}%, considering statin
wants to know CV risk, asymptomatic
borderline LDL, diabetic, no angina, CAC to guide statin
strong FHx of MI, asymptomatic, risk reclassification
""", q="calcium score|risk stratification|CAC", age=(40, 76), pri="R")

_k("CTA-CORONARY", "CTA CORONARY|CCTA|CT CORONARY ANGIOGRAM|CTA HEART|CT CORONARY ANGIO",
   "CT CARDIAC|CT HEART|CT CHEST W", """
stable exertional chest pressure, intermediate pretest probability
atypical chest pain, equivocal stress test
?anomalous coronary origin on echo, exertional syncope in young athlete
chest pain, troponin negative x2, low-intermediate risk, r/o CAD
pre-op valve surgery, exclude obstructive CAD
exertional chest tightness, stress test nondiagnostic
recurrent chest pain, prior normal stress, ?non-obstructive CAD
chest pain with LBBB, unable to exercise, coronary anatomy
""", q="eval coronary stenosis|r/o CAD|?anomalous coronary", age=(30, 78), pri="UR")

# --- abdomen and pelvis CT -------------------------------------------------------------------
_k("CT-ABD-PEL-W", "CT ABDOMEN PELVIS W CONTRAST|CT A/P W|CT ABD PELVIS WITH IV CONTRAST|CT AP WITH CONTRAST|CT ABD/PELVIS W",
   "CT ABDOMEN PELVIS|CT ABD/PELVIS|CT ABDOMEN|CT A/P", APPY_SC * 2 + ABD_SC,
   fx="WBC {wbc}|temp {temp}|lactate {lactate}|lipase {lipase}|peritoneal signs|guarding|HR {hr}",
   hx="prior abdominal surgery|h/o diverticulitis|h/o SBO",
   q="r/o appendicitis|appy?|?appendicitis|?diverticulitis|r/o SBO|?abscess|eval abd pain|?perforation|r/o obstruction",
   age=(18, 88), pri="SU")

_k("CT-ABD-PEL-WO", "CT ABDOMEN PELVIS WO|CT A/P NONCON|CT ABD PELVIS WITHOUT CONTRAST|CT ABDOMEN PELVIS W/O",
   "CT ABDOMEN PELVIS|CT ABD/PELVIS|CT ABDOMEN PELVIS W", """
on heparin drip, sudden flank pain and Hgb drop, ?retroperitoneal hematoma
on anticoagulation, post-cath groin pain, falling Hgb, ?RP bleed
s/p femoral access, hypotension and back pain, ?RPH
?free air, peritonitis, noncontrast requested
on enoxaparin, Hgb {hgb}, flank ecchymosis
""", q="r/o RP hematoma|?free air|noncontrast study", age=(30, 92), pri="SU")

_k("CT-ABD-PEL-STONE", "CT ABDOMEN PELVIS STONE PROTOCOL|CT KUB|CT RENAL STONE|CT A/P WO STONE|CT STONE PROTOCOL",
   "CT ABDOMEN PELVIS|CT ABD PELVIS WO|CT ABDOMEN|CT A/P", STONE_SC + _lines("""
follow-up known 6 mm {side} UVJ stone
s/p ureteroscopy, residual stone burden
"""), fx="UA >50 RBC|no fever|Cr {cr}|mild hydro on bedside US",
   hx="h/o kidney stones|prior lithotripsy|recurrent calcium oxalate stones",
   q="?ureteral stone|r/o nephrolithiasis|low dose stone protocol|?obstructing calculus|r/o stone",
   age=(18, 80), pri="U")

_k("CT-CAP-W", "CT CHEST ABDOMEN PELVIS W|CT CAP WITH CONTRAST|CT C/A/P W IV|CT CHEST ABD PELVIS WITH CONTRAST",
   "CT CHEST ABDOMEN PELVIS|CT CAP|CT BODY|CT C/A/P", """
newly diagnosed colon adenocarcinoma, staging
metastatic breast cancer on chemo, restaging after {n} cycles
DLBCL, end of treatment restaging~PET-FDG
unintentional 15 lb weight loss and anemia, ?occult malignancy
fever of unknown origin x {wks} wks, cultures negative
polytrauma, high-speed MVC
esophageal adenocarcinoma, staging
stage III melanoma surveillance~PET-FDG
rising CEA after colectomy, recurrence?
ovarian ca on maintenance therapy, surveillance scan
renal cell ca s/p nephrectomy, surveillance
""", q="staging|restaging|r/o metastatic disease|eval for malignancy|?source", age=(25, 90), pri="R")

_k("CT-LIVER-MP", "CT LIVER MULTIPHASE|CT ABDOMEN LIVER PROTOCOL|CT ABD TRIPLE PHASE LIVER|CT LIVER 3 PHASE",
   "CT ABDOMEN|CT ABDOMEN W|CT ABDOMEN PELVIS", LIVER_SC,
   fx="AFP {afp}|MELD 12|Child-Pugh A|platelets 88",
   q="r/o HCC|LI-RADS|characterize lesion|HCC protocol", age=(35, 82), pri="R")

_k("CT-PANC-MP", "CT PANCREAS PROTOCOL|CT ABDOMEN PANCREAS MULTIPHASE|CT PANCREAS|CT PANCREAS MULTIPHASE",
   "CT ABDOMEN|CT ABDOMEN PELVIS|CT ABDOMEN W", """
painless jaundice and 10 kg weight loss, bili {bili}
pancreatic head mass on US, staging
CA 19-9 {ca199}, new onset diabetes and weight loss
IPMN with enhancing mural nodule, worrisome features
biopsy-proven pancreatic adenocarcinoma, resectability
double duct sign on US
pancreatic tail lesion on outside CT, characterize
""", q="eval pancreatic mass|resectability|pancreas protocol|?adenocarcinoma", age=(40, 88), pri="UR")

_k("CT-RENAL-MASS", "CT RENAL MASS PROTOCOL|CT KIDNEYS W WO|CT ABDOMEN RENAL|CT RENAL W WO",
   "CT ABDOMEN|CT ABDOMEN W|CT ABDOMEN PELVIS", RENAL_MASS_SC,
   q="characterize renal mass|Bosniak|?RCC|renal protocol", age=(30, 85), pri="R")

_k("CT-ADRENAL", "CT ADRENAL PROTOCOL|CT ADRENALS W WO|CT ABDOMEN ADRENAL|CT ADRENAL WASHOUT",
   "CT ABDOMEN|CT ABDOMEN W|MRI ABDOMEN", """
incidental {cm} cm {side} adrenal nodule on CT chest
adrenal incidentaloma, washout characterization
resistant HTN and hypokalemia, ?aldosteronoma
indeterminate adrenal nodule, ?adenoma
adrenal nodule in lung cancer pt, adenoma vs metastasis
enlarging adrenal nodule, {cm} cm, characterize
lipid-poor adrenal lesion on prior CT, washout study
""", q="adenoma?|washout|characterize adrenal", age=(35, 82), pri="R")

_k("CT-UROGRAM", "CT UROGRAM|CT IVP|CT ABDOMEN PELVIS UROGRAM|CTU|CT UROGRAPHY",
   "CT ABDOMEN PELVIS|CT ABD PELVIS W|CT KIDNEYS", """
painless gross hematuria, smoker
intermittent painless visible hematuria x {mos} months
h/o bladder TCC, upper tract surveillance
atypical cells on urine cytology
filling defect in {side} renal pelvis on US, ?urothelial tumor
microscopic hematuria, high risk (age > 60, smoker)
clots in urine, no pain
""", q="hematuria workup|eval upper tracts|r/o urothelial malignancy", age=(40, 88), pri="R")

_k("CT-ENTERO", "CT ENTEROGRAPHY|CTE|CT ABDOMEN PELVIS ENTEROGRAPHY|CT ENTERO",
   "CT ABDOMEN PELVIS|CT ABD PELVIS W|MR ENTEROGRAPHY", """
Crohn's on adalimumab, diarrhea and abd pain, ?active disease
known terminal ileitis, flare, eval extent
obscure GI bleeding, capsule shows jejunal lesion
iron deficiency with negative EGD and colonoscopy, ?small bowel source
Crohn disease, ?stricture, postprandial pain
suspected small bowel Crohn's, calprotectin elevated
Crohn disease with partial SBO symptoms, eval stricture vs active inflammation
chronic diarrhea, weight loss, ?ileal Crohn's
""", q="eval small bowel|Crohn activity|?stricture", age=(30, 78), pri="R")

_k("CTA-ABD-GIB", "CTA ABDOMEN PELVIS GI BLEED|CTA GI BLEED|CT ANGIO ABD/PELVIS BLEED|CTA A/P GIB",
   "CT ABDOMEN PELVIS|CT ABD PELVIS W|CTA ABDOMEN", """
brisk BRBPR, hypotensive {bp}, ?source
hematochezia, Hgb dropped from 11 to {hgb}, multiple units transfused
maroon stools and tachycardia, colonoscopy not feasible
melena, upper endoscopy unrevealing, still bleeding
pain out of proportion to exam, afib, lactate {lactate}, ?mesenteric ischemia
suspected diverticular bleed, active hematochezia
GI bleed, localize prior to IR embolization
""", fx="Hgb {hgb}|BP {bp}|HR {hr}|lactate {lactate}",
   q="localize bleed|?active extravasation|r/o mesenteric ischemia|GI bleed protocol", age=(40, 92), pri="S")

_k("CT-EXT-WO", "CT EXTREMITY WO|CT KNEE WO|CT ANKLE WO|CT FOOT WO|CT WRIST WO|CT ELBOW WO",
   "CT LOWER EXTREMITY|CT UPPER EXTREMITY|XR KNEE|CT LEG", """
tibial plateau fracture on XR, pre-op planning
comminuted calcaneal fracture after fall from ladder
intra-articular distal radius fracture, ortho planning
snuffbox tenderness, XR negative x2, ?occult scaphoid fx~MR-WRIST-WO
trimalleolar fracture, surgical planning
pilon fracture, ORIF planning
?Lisfranc injury, XR equivocal
""", q="characterize fracture|pre-op planning|?intra-articular extension", age=(16, 88), pri="U")

# --- spine and MSK MRI ---------------------------------------------------------------------
_k("MR-CSPINE-WO", "MRI CERVICAL SPINE WO|MRI C-SPINE|MRI CSPINE WITHOUT CONTRAST|MRI C SPINE WO",
   "MRI CERVICAL SPINE|MRI NECK|MRI C SPINE W WO", """
neck pain radiating to {side} arm with C6 numbness x {wks} wks
cervical radiculopathy, failed PT
hand clumsiness, unsteady gait, hyperreflexia, ?myelopathy
chronic neck pain, degenerative disc disease on XR
MVC, CT negative, persistent neck pain, ?ligamentous injury
{side} arm weakness and paresthesias, ?disc herniation
positive Spurling, radiating arm pain
""", q="r/o disc herniation|?cord compression|eval foraminal stenosis|?myelopathy",
   age=(25, 82), pri="R")

_k("MR-CSPINE-WWO", "MRI CERVICAL SPINE W WO|MRI C-SPINE W/WO|MRI CSPINE WITH AND WITHOUT",
   "MRI CERVICAL SPINE|MRI C-SPINE|MRI NECK", """
IVDU with fever and neck pain, ?epidural abscess
known MS, new arm paresthesias, ?cord plaque
intramedullary lesion on prior MRI, ?tumor
s/p ACDF with recurrent symptoms, postop evaluation
bacteremia with neck pain and arm weakness
new sensory level, ?transverse myelitis
RRMS with new leg weakness and bladder urgency, ?new cord plaque
demyelinating disease, electric sensation with neck flexion, eval cervical cord
MS on DMT, restaging spinal cord lesions
optic neuritis hx, now arm paresthesias, ?cord demyelination
vertebral osteomyelitis concern, fever and neck pain, ESR {esr}
""", q="r/o epidural abscess|eval cord lesion|?enhancement", age=(22, 82), pri="UR")

_k("MR-TSPINE-WO", "MRI THORACIC SPINE WO|MRI T-SPINE|MRI TSPINE WITHOUT CONTRAST",
   "MRI THORACIC SPINE|MRI SPINE|CT THORACIC SPINE", """
band-like thoracic pain, ?disc herniation
spastic paraparesis, sensory level T8, ?cord compression
T12 compression fracture, acute vs chronic?
mid back pain wrapping around chest wall, dermatomal
progressive leg weakness and urinary retention, thoracic myelopathy
prostate cancer, new back pain and leg weakness, ?cord compression
""", q="r/o cord compression|eval thoracic disc|fracture age?", age=(30, 88), pri="U")

_k("MR-LSPINE-WO", "MRI LUMBAR SPINE WO|MRI L-SPINE|MRI LSPINE WITHOUT CONTRAST|MRI L SPINE WO",
   "MRI LUMBAR SPINE|MRI L SPINE|MRI LUMBAR SPINE W WO", LBP_SC + _lines("""
saddle anesthesia and urinary retention, ?cauda equina
"""), fx="decreased ankle reflex|EHL weakness 4/5|SLR positive at 40 degrees|no bowel/bladder sx",
   q="r/o disc herniation|?stenosis|?cauda equina|eval nerve root compression",
   age=(22, 86), pri="UR")

_k("MR-LSPINE-WWO", "MRI LUMBAR SPINE W WO|MRI L-SPINE W/WO|MRI LSPINE WITH AND WITHOUT",
   "MRI LUMBAR SPINE|MRI L-SPINE|MRI SPINE", """
s/p L4-5 discectomy, recurrent radicular pain, recurrent disc vs scar
failed back surgery syndrome, persistent pain after laminectomy
fever and back pain, ESR {esr}, CRP {crp}, ?discitis
IVDU with back pain and fever, ?epidural abscess
known breast ca, new radicular pain, ?leptomeningeal disease
MRSA bacteremia with low back pain
postop fusion, wound drainage and back pain, ?infection
""", q="r/o discitis|?epidural abscess|scar vs disc|?osteomyelitis", age=(25, 85), pri="U")

_k("MR-SHOULDER-WO", "MRI SHOULDER WO|MRI R SHOULDER|MRI L SHOULDER|MRI SHOULDER WITHOUT CONTRAST",
   "MRI SHOULDER|XR SHOULDER|MRI UPPER EXTREMITY", """
weakness with abduction, positive drop arm test, ?RC tear
shoulder pain with overhead activity, impingement signs
FOOSH, can't lift arm, ?full thickness supraspinatus tear
night pain and painful arc, failed steroid injection
popeye deformity, ?biceps tendon rupture
chronic shoulder pain with ER weakness
""", q="r/o rotator cuff tear|?impingement|eval cuff", age=(35, 82), pri="R")

_k("MR-ARTHRO-SHOULDER", "MR ARTHROGRAM SHOULDER|MRI SHOULDER ARTHROGRAM|MR ARTHRO SHOULDER",
   "MRI SHOULDER|MRI SHOULDER WO|MRI R SHOULDER", """
recurrent anterior dislocations, ?Bankart
overhead thrower with deep shoulder pain, ?SLAP
instability after dislocation playing rugby
clicking and catching, labral tear suspected
young athlete, {n} dislocations this season
volleyball player, posterior shoulder pain and instability, ?labrum
failed conservative management after subluxation, labral eval
""", q="?labral tear|r/o SLAP|eval labrum", age=(15, 40), pri="R")

_k("MR-KNEE-WO", "MRI KNEE WO|MRI R KNEE|MRI L KNEE|MRI KNEE WITHOUT CONTRAST",
   "MRI KNEE|XR KNEE|MRI LOWER EXTREMITY", """
twisting injury playing soccer, felt a pop, effusion, ?ACL
knee locking with medial joint line pain, ?meniscal tear
positive Lachman, giving way
valgus injury, MCL laxity
persistent pain after fall, XR negative, ?bone bruise
osteochondral defect in teen athlete
McMurray positive, lateral knee pain
""", q="?ACL tear|r/o meniscus tear|eval ligaments|?internal derangement", age=(14, 72), pri="R")

_k("MR-HIP-WO", "MRI HIP WO|MRI R HIP|MRI L HIP|MRI PELVIS HIPS WO",
   "MRI HIP|XR HIP|MRI PELVIS", """
fall, unable to bear weight, XR negative, ?occult femoral neck fracture
long-term steroids, groin pain, ?AVN
runner with groin pain, ?femoral neck stress fracture
sickle cell disease, hip pain, ?osteonecrosis
hip pain with normal radiographs x {mos} months
elderly fall, hip pain, plain films negative
""", q="r/o occult fx|?AVN|?stress fracture", age=(18, 95), pri="U")

_k("MR-ARTHRO-HIP", "MR ARTHROGRAM HIP|MRI HIP ARTHROGRAM|MR ARTHRO HIP",
   "MRI HIP|MRI HIP WO|MRI PELVIS", """
young dancer with clicking hip, ?labral tear
FAI with cam morphology on XR, pre-arthroscopy
groin pain, positive FADIR, ?acetabular labral tear
hockey player with mechanical hip symptoms
hip impingement, pain with flexion
soccer player with anterior hip pain and catching, ?labral tear
hip arthroscopy planning, suspected labral pathology
""", q="?labral tear|eval FAI|r/o labral tear", age=(15, 45), pri="R")

_k("MR-WRIST-WO", "MRI WRIST WO|MRI R WRIST|MRI L WRIST|MRI WRIST WITHOUT CONTRAST",
   "MRI WRIST|XR WRIST|MRI HAND", """
FOOSH, snuffbox tenderness, XR neg, ?occult scaphoid fracture~CT-EXT-WO
ulnar-sided wrist pain with clicking, ?TFCC tear
dorsal wrist pain, ?Kienbock
?scapholunate ligament injury, widening on XR
chronic wrist pain in gymnast
fall onto hand {wks} wks ago, persistent radial wrist pain, XR negative
wrist pain after twisting injury, ?ligament tear
""", q="?TFCC|r/o occult fx|eval ligaments", age=(14, 70), pri="R")

_k("MR-ANKLE-WO", "MRI ANKLE WO|MRI R ANKLE|MRI L ANKLE|MRI ANKLE WITHOUT CONTRAST",
   "MRI ANKLE|XR ANKLE|MRI FOOT", """
pop in heel playing tennis, positive Thompson, ?Achilles rupture
chronic lateral ankle instability after multiple sprains
persistent ankle pain after sprain, ?OCD of talus
lateral ankle pain behind fibula, ?peroneal tendon tear
chronic ankle pain, failed bracing
high ankle sprain, ?syndesmotic injury
""", q="?Achilles tear|eval ligaments|r/o osteochondral lesion", age=(16, 72), pri="R")

_k("MR-EXT-WWO", "MRI EXTREMITY W WO|MRI THIGH W WO|MRI FOOT W WO|MRI FOREARM W WO",
   "MRI LOWER EXTREMITY|MRI FOOT|MRI THIGH", """
enlarging soft tissue mass in thigh, ?sarcoma
diabetic foot ulcer probing to bone, ?osteomyelitis
firm deep forearm mass, growing
cellulitis not improving on abx, ?abscess
plantar ulcer with erythema, ESR {esr}
lipoma vs liposarcoma, {cm} cm
lump in calf deep to fascia
""", q="r/o osteomyelitis|characterize mass|?abscess|?sarcoma", age=(18, 88), pri="UR")

# --- body MRI ------------------------------------------------------------------------------
_k("MR-ABD-LIVER", "MRI LIVER W WO|MRI ABDOMEN LIVER|MRI LIVER WITH EOVIST|MRI LIVER",
   "MRI ABDOMEN|CT ABDOMEN|CT LIVER", """
F:FNH vs adenoma in young woman on OCP
colorectal liver mets, pre-resection planning
indeterminate lesion on CT, MRI for problem solving~CT-LIVER-MP
cirrhosis with LI-RADS 3 observation, follow-up~CT-LIVER-MP
hemangioma vs metastasis, atypical on US
incidental liver lesion, prior cancer, MRI with hepatobiliary agent
breast ca, new liver lesions on CT, characterize before resection
""", q="characterize liver lesion|LI-RADS|?FNH|?HCC", age=(25, 82), pri="R")

_k("MRCP", "MRCP|MRI ABDOMEN MRCP|MRI MRCP W WO|MRCP W WO",
   "MRI ABDOMEN|US RUQ|CT ABDOMEN", """
dilated CBD on US, ?choledocholithiasis
rising bili and ALP after cholecystectomy
IBD with persistently cholestatic labs, ?sclerosing cholangitis
UC with ALP {alp}, ?PSC
known PSC, annual surveillance of the biliary tree
Crohn's colitis with rising ALP and GGT, r/o sclerosing cholangitis
beaded ducts on outside imaging, ?PSC
cholestatic LFT pattern, ?biliary obstruction
elevated LFTs with dilated ducts on US
RUQ pain with dilated ducts, ?CBD stone
gallstone pancreatitis resolving, ?retained stone before lap chole
recurrent pancreatitis, ?pancreas divisum
pancreatic cyst follow-up, {cm} cm side-branch IPMN
obstructive jaundice, ?biliary stricture
""", fx="ALP {alp}|bili {bili}|CBD 9 mm on US", q="r/o CBD stone|eval biliary tree|?PSC|?stricture",
   age=(22, 88), pri="UR")

_k("MR-ABD-RENAL", "MRI ABDOMEN RENAL W WO|MRI KIDNEYS W WO|MRI RENAL MASS|MRI ABDOMEN KIDNEYS",
   "MRI ABDOMEN|CT ABDOMEN|CT RENAL MASS PROTOCOL", """
indeterminate renal lesion on CT, MRI for characterization
cystic renal mass, MRI requested for Bosniak
adrenal mass indeterminate on CT, chemical shift MRI
renal lesion too small to characterize on CT
young pt with renal lesion, radiation sparing MRI
indeterminate enhancing renal lesion, MRI requested by urology
""", q="characterize renal mass|?RCC|Bosniak", age=(30, 85), pri="R")

_k("MR-ENTERO", "MR ENTEROGRAPHY|MRE|MRI ABDOMEN PELVIS ENTEROGRAPHY|MRI ENTEROGRAPHY",
   "MRI ABDOMEN PELVIS|CT ENTEROGRAPHY|MRI ABDOMEN", """
teen with Crohn's, avoid radiation, ?disease activity
perianal fistula with Crohn's, eval tracts
young pt with suspected Crohn's, calprotectin elevated
Crohn's on biologic, response assessment, radiation sparing
recurrent perianal abscess and fistula
adolescent with growth failure and abdominal pain, ?IBD
20s with known ileal Crohn's, new pain, prefer MRI over CT
""", q="eval small bowel inflammation|Crohn activity|?fistula", age=(10, 35), pri="R")

_k("MR-PELVIS-FEMALE", "MRI PELVIS FEMALE W WO|MRI PELVIS W WO|MRI UTERUS|MRI FEMALE PELVIS",
   "MRI PELVIS|US PELVIS|CT PELVIS", """
symptomatic fibroids, pre-UFE planning
complex adnexal mass indeterminate on US
newly diagnosed endometrial cancer, staging
cervical cancer staging
deep infiltrating endometriosis, pre-op mapping
adenomyosis vs fibroid
F:ovarian lesion with solid component on US, O-RADS 4
F:fibroid uterus, pre-myomectomy mapping
""", q="characterize adnexal mass|staging|fibroid mapping", age=(22, 78), sex="F", pri="R")

_k("MR-PROSTATE", "MRI PROSTATE|MRI PROSTATE MULTIPARAMETRIC|MP MRI PROSTATE|MRI PROSTATE W WO",
   "MRI PELVIS|MRI PELVIS W WO|CT PELVIS", """
PSA {psa}, rising, pre-biopsy
elevated PSA {psa}, nodule on DRE
prior negative biopsy, PSA persistently {psa}
Gleason {gleason} on surveillance
PI-RADS {pirads} lesion on prior MRI, follow-up
PSA density 0.2, fusion biopsy planning
biopsy-proven prostate adenocarcinoma, local staging
""", fx="PSA {psa}|DRE: firm L lobe|free PSA 9%", q="PI-RADS|eval prostate|?csPCa|pre-biopsy",
   age=(48, 82), sex="M", pri="R")

_k("MR-RECTUM", "MRI PELVIS RECTAL CANCER|MRI RECTUM|MRI RECTAL STAGING|MRI RECTAL CANCER PROTOCOL",
   "MRI PELVIS|CT PELVIS|MRI PELVIS W WO", """
newly diagnosed rectal adenocarcinoma {n} cm from anal verge, staging
rectal cancer after chemoradiation, restaging
low rectal mass on colonoscopy, biopsy adenocarcinoma
rectal cancer on total neoadjuvant therapy, response
watch and wait after complete clinical response
rectal adenocarcinoma, assess mesorectal fascia and nodes
rectal bleeding, mass on flex sig, biopsy cancer, local staging
""", q="rectal cancer staging|eval CRM|restaging", age=(35, 85), pri="R")

_k("MR-BREAST-WWO", "MRI BREAST BILATERAL W WO|MRI BREASTS|MRI BREAST W/WO|MRI BREAST BILATERAL",
   "MRI BREAST|MAMMOGRAM|US BREAST", """
BRCA1 carrier, annual high-risk screening
lifetime risk > 20% by Tyrer-Cuzick, screening
newly diagnosed invasive ductal carcinoma {side} breast, extent of disease
silicone implants, ?rupture
mantle radiation as a teen, high-risk screening
axillary adenopathy with adenocarcinoma, occult primary
invasive lobular carcinoma, eval contralateral breast
""", q="high risk screening|extent of disease|?implant rupture", age=(25, 75), sex="F", pri="R")

_k("MR-CARDIAC", "MRI CARDIAC W WO|CARDIAC MRI|MRI HEART|CMR",
   "MRI CHEST|ECHO|CT CARDIAC", """
new cardiomyopathy EF {ef}%, etiology
chest pain after viral illness, troponin up, clean cath, ?myocarditis
unexplained LVH, ?amyloid
sarcoidosis with palpitations, ?cardiac involvement
VT, ?ARVC
viability assessment prior to CABG, ischemic cardiomyopathy
family history of HCM, screening
""", q="eval cardiomyopathy|?myocarditis|viability|?infiltrative", age=(18, 82), pri="R")

# --- ultrasound, radiography, nuclear medicine -------------------------------------------
_k("US-ABD-COMPLETE", "US ABDOMEN COMPLETE|US ABD COMPLETE|ULTRASOUND ABDOMEN COMPLETE",
   "US ABDOMEN|US ABD|CT ABDOMEN", """
elevated ALT/AST, ?fatty liver
abnormal LFTs on routine labs
palpable spleen tip, ?splenomegaly
abdominal distension, ?ascites
hepatomegaly on exam
vague abdominal pain, unclear source
thrombocytopenia, ?cirrhosis with splenomegaly
""", fx="ALT {alp}|platelets 92|AST/ALT 2:1", q="eval liver|?ascites|eval spleen|survey abdomen",
   age=(18, 88), pri="R")

_k("US-RUQ", "US RUQ|US ABDOMEN RUQ|US GALLBLADDER|US RIGHT UPPER QUADRANT|US ABD LIMITED RUQ",
   "US ABDOMEN|US ABD LIMITED|CT ABDOMEN", """
RUQ pain after fatty meals, ?cholelithiasis
fever and RUQ pain, positive Murphy sign, ?cholecystitis
RUQ tenderness, WBC {wbc}, ?acute cholecystitis
new jaundice, ?biliary dilation
epigastric and RUQ pain, elevated ALP
known gallstones, worsening pain
intermittent RUQ colic after dinner
""", fx="WBC {wbc}|+Murphy|ALP {alp}|bili {bili}|temp {temp}",
   q="?cholecystitis|r/o gallstones|eval GB|?CBD dilation|r/o cholelithiasis",
   age=(18, 88), pri="U")

_k("US-RENAL", "US RENAL|US KIDNEYS BILATERAL|US RENAL COMPLETE|US KIDNEY AND BLADDER",
   "US ABDOMEN|CT ABDOMEN|US RETROPERITONEUM", """
AKI, Cr {crhi} from baseline 1.0, ?obstruction
?hydronephrosis
pyelonephritis with sepsis, r/o obstruction or abscess
CKD, assess renal size
rising creatinine, ?postrenal cause
recurrent UTIs in child
urinary retention, ?hydro
""", fx="Cr {crhi}|UOP low|PVR 600 mL", q="r/o hydronephrosis|eval kidneys|?obstruction",
   age=(2, 92), pri="U")

_k("US-PELVIS-TV", "US PELVIS TRANSVAGINAL|US PELVIS COMPLETE|US PELVIS TA/TV|TRANSVAGINAL US|US PELVIS TA AND TV",
   "US PELVIS|CT PELVIS|US ABDOMEN", """
postmenopausal bleeding, ?endometrial thickening
heavy menstrual bleeding, ?fibroids
acute {side} pelvic pain, ?ovarian torsion, hCG negative
palpable adnexal mass on exam
pelvic pain, ?ovarian cyst
irregular bleeding, ?polyp
oligomenorrhea and hirsutism, ?PCOS
""", q="eval endometrium|?torsion|r/o fibroids|eval adnexa", age=(16, 82), sex="F", pri="UR")

_k("US-OB-EARLY", "US OB FIRST TRIMESTER|US OB <14 WEEKS|US PELVIS OB EARLY|US OB TRANSVAGINAL",
   "US PELVIS|US PELVIS TV|US OB", """
LMP {lmp} weeks ago, positive UPT, vaginal bleeding
bhCG {bhcg}, LLQ pain, ?ectopic
dating scan, unsure of LMP
spotting at {lmp} weeks, viability?
positive pregnancy test with cramping
IVF pregnancy, confirm IUP
h/o ectopic, now positive hCG
""", fx="bhCG {bhcg}|LMP {lmp} wks|Rh negative", q="?IUP|r/o ectopic|viability|dating",
   age=(16, 44), sex="F", pri="U")

_k("US-THYROID", "US THYROID|US NECK THYROID|ULTRASOUND THYROID|US THYROID AND NECK",
   "US NECK|US SOFT TISSUE NECK|CT NECK", """
palpable thyroid nodule
incidental thyroid nodule on CT
goiter, enlarging
hyperthyroidism with palpable nodule
TSH low, nodule felt on exam
follow-up TI-RADS 3 nodule
FNA planning for thyroid nodule
""", q="eval thyroid nodule|TI-RADS|?goiter", age=(18, 85), pri="R")

_k("US-CAROTID", "US CAROTID DUPLEX|US CAROTID BILATERAL|CAROTID DOPPLER|US CAROTID DOPPLER",
   "US NECK|US CAROTID|CTA NECK", """
asymptomatic carotid bruit
TIA with transient R arm weakness, resolved
amaurosis fugax {side} eye
known 50-69% {side} ICA stenosis, annual follow-up
s/p CEA, surveillance
pre-CABG carotid screening
dizzy spells, ?carotid disease
""", q="eval carotid stenosis|r/o ICA stenosis|carotid duplex", age=(45, 92), pri="R")

_k("US-VENOUS-LE", "US VENOUS DUPLEX LE|US DVT LOWER EXTREMITY|US VENOUS DOPPLER LEG|US LE VENOUS DOPPLER",
   "US LOWER EXTREMITY|US LEG|US VENOUS", """
unilateral calf swelling and tenderness, ?DVT
{side} leg swelling after long flight
leg swelling after TKA
cancer pt, leg swelling, Wells {wells}
calf pain, positive d-dimer
pitting edema one leg with erythema, DVT vs cellulitis
{side} leg heaviness, on OCP
""", q="r/o DVT|?DVT|eval for clot", age=(18, 92), pri="U")

_k("US-SCROTUM", "US SCROTUM|US TESTICULAR|US SCROTAL DOPPLER|US TESTES",
   "US PELVIS|US GROIN|US ABDOMEN", """
acute testicular pain x 3h, absent cremasteric reflex, ?torsion
painless testicular mass
scrotal swelling and dysuria, ?epididymitis
bag of worms feel, ?varicocele
testicular pain after trauma
scrotal swelling, ?hydrocele
teen with sudden scrotal pain and vomiting, r/o torsion
increasing left scrotal fullness, ?varicocele
""", q="r/o torsion|eval mass|?epididymitis", age=(8, 80), sex="M", pri="U")

_k("US-APPENDIX", "US APPENDIX|US RLQ|US ABDOMEN APPENDIX|US APPENDICITIS",
   "US ABDOMEN|CT ABDOMEN PELVIS|US PELVIS", """
child with RLQ pain and vomiting since yesterday, low grade fever
child, pain began around umbilicus then shifted to RLQ
limping, RLQ tenderness, ?appy
peds pt with RLQ pain and anorexia
RLQ pain, WBC {wbc}, pediatric
abdominal pain worse with jumping, RLQ tenderness
""", q="r/o appendicitis|?appy|eval appendix", age=(3, 16), pri="SU")

_k("XR-CHEST-2V", "XR CHEST 2 VIEWS|CXR PA/LAT|XR CHEST PA AND LATERAL|CHEST XRAY 2V|CXR 2 VIEW",
   "XR CHEST|CXR|CT CHEST", """
cough and fever x {days} days, crackles R base, ?PNA
pre-op clearance
dyspnea, ?CHF exacerbation
PICC placed, confirm tip position
post NG tube placement
persistent cough x 3 weeks
fever, ?pneumonia
""", q="r/o pneumonia|?infiltrate|eval lungs|line placement", age=(18, 95), pri="U")

_k("NM-BONE", "NM BONE SCAN|NM BONE SCAN WHOLE BODY|BONE SCINTIGRAPHY|TC99 BONE SCAN|WHOLE BODY BONE SCAN",
   "NM BONE|BONE SCAN|CT CHEST ABDOMEN PELVIS", """
M:prostate ca Gleason {gleason}, PSA {psa}, staging
F:breast cancer with new back pain, ?osseous mets
ALP {alp} with diffuse bone pain
multifocal bone pain, known malignancy
M:rising PSA after prostatectomy, ?bone mets
F:breast ca, hip pain, alk phos up
""", q="r/o osseous mets|eval skeleton|?bone metastases", age=(40, 88), pri="R")

_k("NM-VQ", "NM VQ SCAN|NM LUNG VENTILATION PERFUSION|V/Q SCAN|NM VQ",
   "CT CHEST|CTA CHEST PE|CT PE PROTOCOL|NM LUNG", """
pulmonary hypertension, ?CTEPH
persistent dyspnea months after PE, ?chronic thromboembolic disease
exertional dyspnea, elevated PA pressure on echo, CTEPH workup
suspected PE, pregnant, CXR normal
PE suspected but contrast contraindicated
""", q="?PE|r/o PE|V/Q pls|eval perfusion", age=(18, 85), pri="U")

_k("NM-HIDA", "NM HIDA SCAN|HEPATOBILIARY SCAN|NM HEPATOBILIARY|HIDA|HIDA WITH CCK",
   "NM ABDOMEN|US RUQ|NM GALLBLADDER", """
RUQ pain, US equivocal for cholecystitis
biliary colic symptoms, no stones on US, ?biliary dyskinesia
s/p lap chole, RUQ fluid, ?bile leak
suspected acalculous cholecystitis in ICU pt
recurrent RUQ pain with normal US, GB ejection fraction
post-op bile leak suspected, drain output bilious
US shows stones but no wall thickening, ?acute cholecystitis
""", q="?cholecystitis|GB EF|r/o bile leak", age=(18, 85), pri="U")

_k("PET-FDG", "PET CT FDG|PET/CT SKULL BASE TO MID THIGH|PET CT WHOLE BODY|FDG PET|PET/CT",
   "PET|PET SCAN|CT CHEST ABDOMEN PELVIS", """
Hodgkin lymphoma, interim response after 2 cycles
DLBCL initial staging~CT-CAP-W
{mm} mm spiculated RUL nodule, ?malignancy
melanoma restaging, stage III
head and neck SCC, post-treatment response at 12 weeks
solitary pulmonary nodule 12 mm, characterize
NSCLC, pre-op staging
""", q="staging|restaging|response assessment|?FDG avid", age=(25, 88), pri="R")

# ----------------------------------------------------------------------------------------
# Contraindications that change the label, and safety mentions that do not
# ----------------------------------------------------------------------------------------

CONTRA: dict[str, tuple[str, ...]] = {
    "allergy": _lines("""
documented anaphylaxis to iodinated contrast
contrast allergy (hives and throat swelling)
severe reaction to IV contrast in {year}
ALLERGIES: iodinated contrast - anaphylaxis
hx laryngeal edema with CT dye
prior severe contrast reaction, no IV contrast
hives and wheezing after prior CT contrast
allergic to IV contrast (anaphylactic)
iodine contrast allergy - intubated after last CT
"""),
    "renal": _lines("""
eGFR {egfrlo}
Cr {crhi}, eGFR {egfrlo}
ESRD on HD
on hemodialysis MWF
AKI, Cr up to {crhi} from baseline 0.9
CKD stage 4, eGFR {egfrlo}
on peritoneal dialysis
renal transplant with AKI, eGFR {egfrlo}
acute renal failure, Cr {crhi}
"""),
    "pregnancy": _lines("""
{ga} weeks pregnant
G2P1 at {ga} wks
pregnant, {ga}w by LMP
IUP at {ga} weeks
currently pregnant ({ga} wk)
pregnant, second trimester
{ga} wk gestation
"""),
    "mri": _lines("""
non-MRI-conditional pacemaker
legacy pacemaker, not MR compatible
cochlear implant, MRI not possible
metallic foreign body in orbit (welder)
severe claustrophobia, unable to tolerate MRI even with sedation
MRI contraindicated: non-conditional ICD
shrapnel fragments near spine, MRI unsafe
aneurysm clip of unknown type, MRI contraindicated
failed MRI x2 due to claustrophobia
pacemaker (not MRI safe)
"""),
    "gad": _lines("""
eGFR {egfrlo}, no gadolinium
ESRD on dialysis, avoid gad
CKD4, eGFR {egfrlo}
prior anaphylaxis to gadolinium
on HD, nephrology recommends no gadolinium
eGFR {egfrlo}
"""),
}

CONTRA_TAIL: dict[str, tuple[str, ...]] = {
    "allergy": ("no contrast", "pls adjust protocol", "cannot get contrast", ""),
    "renal": ("no IV contrast", "avoid contrast", "not on dialysis", ""),
    "pregnancy": ("avoid radiation", "no CT please", ""),
    "mri": ("MRI not possible", "needs alternative to MRI", ""),
    "gad": ("noncontrast only", ""),
}


@dataclass(frozen=True)
class Switch:
    """Borrow a source protocol's scenarios, add a contraindication, and relabel."""

    pool: tuple[str, ...]
    source: str  # knowledge entry giving exams, findings, questions and priority
    kinds: tuple[str, ...]
    share: float
    acceptable: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()  # findings typical of the relabelled protocol


SWITCHES: dict[str, Switch] = {
    "NM-VQ": Switch(PE_SC, "CTA-CHEST-PE", ("allergy", "renal", "pregnancy"), 0.75, (),
                    ("normal CXR", "CXR clear", "clear chest x-ray", "CXR unremarkable", "V/Q ok?")),
    "CT-CHEST-WO": Switch(CHEST_MASS_SC, "CT-CHEST-W", ("allergy", "renal"), 0.4),
    "CT-ABD-PEL-WO": Switch(ABD_SC + APPY_SC, "CT-ABD-PEL-W", ("allergy", "renal"), 0.7),
    "US-RENAL": Switch(STONE_SC, "CT-ABD-PEL-STONE", ("pregnancy",), 0.2),
    "MR-ABD-RENAL": Switch(RENAL_MASS_SC, "CT-RENAL-MASS", ("allergy",), 0.5),
    "MR-ABD-LIVER": Switch(LIVER_SC, "CT-LIVER-MP", ("allergy",), 0.35),
    "US-APPENDIX": Switch(APPY_SC, "CT-ABD-PEL-W", ("pregnancy",), 0.5),
    "CT-LSPINE-WO": Switch(LBP_SC, "MR-LSPINE-WO", ("mri",), 0.45),
    "MR-BRAIN-WO": Switch(BRAIN_MASS_SC + MS_SC, "MR-BRAIN-WWO", ("gad",), 0.25),
    "CT-HEAD-WWO": Switch(BRAIN_MASS_SC, "MR-BRAIN-WWO", ("mri",), 0.5, ("CT-HEAD-W",)),
    "CT-HEAD-W": Switch(BRAIN_MASS_SC, "MR-BRAIN-WWO", ("mri",), 0.35, ("CT-HEAD-WWO",)),
}
# Protocols whose orders should often carry normal or negated safety values, so a model
# learns that only a real contraindication moves the label.
_SWITCH_SOURCES = {s.source for s in SWITCHES.values()}

OK_IODINATED = _lines("""
no contrast allergy
NKDA
no known drug allergies
eGFR {egfrok}
Cr {cr}
Cr {cr}, eGFR {egfrok}
renal function normal
on metformin
takes metformin, Cr normal
PCN allergy (rash)
sulfa allergy
allergic to codeine
no prior contrast reaction
tolerated IV contrast previously
eGFR >60
""")
OK_MR = _lines("""
MRI-conditional pacemaker, device clinic notified
no implants
MRI screening form cleared, no metal
no pacemaker
eGFR {egfrok}
mild claustrophobia, oral anxiolytic ok
prior MRI tolerated well
MR-conditional ICD
no contraindication to MRI
""")
OK_ANY = _lines("""
on warfarin
on apixaban
INR {inr} on coumadin
on ASA 81
on clopidogrel
NKDA
""")
OK_FEMALE = _lines("""
hCG negative
urine pregnancy test neg
not pregnant
LMP 2 wks ago, upreg neg
serum hCG <5
""")
OK_NONIODINATED = _lines("""
contrast allergy
allergic to iodinated contrast
h/o contrast reaction
""")
OK_NONCONTRAST_CT = _lines("""
ESRD on HD
eGFR {egfrlo}
has pacemaker
CKD4
""")

DISTRACTORS = ("HTN", "DM2", "HLD", "CAD s/p PCI", "GERD", "hypothyroidism", "OSA on CPAP",
               "COPD", "obesity", "OA", "depression", "anxiety", "asthma", "gout", "CKD 3a",
               "afib on apixaban", "migraine", "former smoker", "prior CVA", "PAD",
               "hyperlipidemia", "T2DM on insulin", "iron deficiency anemia", "HIV on ART",
               "CHF", "BMI 38", "hep C treated", "psoriasis", "RA", "seizure disorder")
DISTRACTOR_M = ("BPH",)
DISTRACTOR_FMT = ("PMH: {0}", "hx {0}", "h/o {0}", "{0}", "also {0}", "PMHx significant for {0}",
                  "comorbidities {0}", "background of {0}", "known {0}", "Hx: {0}")

# ----------------------------------------------------------------------------------------
# Surface style: abbreviation, case, typos
# ----------------------------------------------------------------------------------------

_TERSE = [(re.compile(p, re.I), reps) for p, reps in (
    (r"\bhistory of\b", ("h/o", "hx of", "hx")), (r"\bstatus post\b", ("s/p",)),
    (r"\brule out\b", ("r/o",)), (r"\bevaluat(e|ion)\b", ("eval",)), (r"\bwith\b", ("w/", "w")),
    (r"\bwithout\b", ("w/o",)), (r"\bpatient\b", ("pt",)), (r"\bshortness of breath\b", ("SOB",)),
    (r"\bfracture\b", ("fx",)), (r"\byears\b", ("yrs", "y")), (r"\bright(?= [a-z])", ("R", "rt")),
    (r"\bleft(?= [a-z])", ("L", "lt")), (r"\bbilateral\b", ("b/l", "bilat")),
    (r"\bweeks\b", ("wks", "w")), (r"\bnegative\b", ("neg", "-ve")), (r"\bpositive\b", ("pos", "+")),
    (r"\bfollow[- ]up\b", ("f/u",)), (r"\band\b", ("&", "+", "and")), (r"\bpneumonia\b", ("PNA",)),
    (r"\bhypertension\b", ("HTN",)), (r"\bsuspected\b", ("susp", "?")), (r"\bmonths\b", ("mos", "mo")),
    (r"\bhours\b", ("hrs", "h")), (r"\bdays\b", ("d",)), (r"\bpregnant\b", ("preg",)),
    (r"\bdyspnea\b", ("SOB", "DOE")), (r"\bdiagnosed\b", ("dx",)), (r"\bcancer\b", ("ca",)),
    (r"\bprevious\b|\bprior\b", ("prev", "prior")), (r"\bhemoglobin\b", ("Hgb",)),
    (r"\bsymptoms\b", ("sx",)), (r"\btreatment\b", ("tx",)), (r"\bpain\b", ("pain", "pn")),
)]
_VERBOSE = [(re.compile(p), reps) for p, reps in (
    (r"\bh/o\b", ("history of",)), (r"\bs/p\b", ("status post",)), (r"\br/o\b", ("rule out",)),
    (r"\beval\b", ("evaluate", "evaluation for")), (r"\bw/ ?", ("with ",)), (r"\bpt\b", ("patient",)),
    (r"\bSOB\b", ("shortness of breath",)), (r"\bfx\b", ("fracture",)), (r"\bhx\b", ("history",)),
    (r"\bR(?= [a-z])", ("right",)), (r"\bL(?= [a-z])", ("left",)), (r"\bf/u\b", ("follow-up",)),
    (r"\bpt\b", ("patient",)), (r"\bca\b", ("cancer",)), (r"\bwks\b", ("weeks",)),
    (r"\bPNA\b", ("pneumonia",)), (r"\bAMS\b", ("altered mental status",)),
)]

_KEYS = "qwertyuiopasdfghjklzxcvbnm"
_NEAR = {c: (_KEYS[i - 1] if i else "") + (_KEYS[i + 1] if i + 1 < len(_KEYS) else "")
         for i, c in enumerate(_KEYS)}


def _abbrev(text: str, r: random.Random, table, p: float) -> str:
    for pat, reps in table:
        text = pat.sub(lambda m: r.choice(reps) if r.random() < p else m.group(0), text)
    return text


def _typo(text: str, r: random.Random) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not idx:
        return text
    i = r.choice(idx)
    w = words[i]
    j = r.randrange(1, len(w) - 1)
    op = r.random()
    if op < 0.35:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif op < 0.65:
        w = w[:j] + w[j + 1:]
    elif op < 0.8:
        w = w[:j] + w[j] + w[j:]
    else:
        near = _NEAR.get(w[j].lower(), "")
        if near:
            w = w[:j] + r.choice(near) + w[j + 1:]
    words[i] = w
    return " ".join(words)


def _style(text: str, r: random.Random) -> str:
    u = r.random()
    if u < 0.45:
        text = _abbrev(text, r, _TERSE, 0.55)
    elif u < 0.7:
        text = _abbrev(text, r, _VERBOSE, 0.7)
    n_typos = 0
    v = r.random()
    if v < 0.03:
        n_typos = 2
    elif v < 0.2:
        n_typos = 1
    for _ in range(n_typos):
        text = _typo(text, r)
    c = r.random()
    if c < 0.07:
        text = text.lower()
    elif c < 0.10:
        text = text.upper()
    elif c < 0.75 and text:
        text = text[0].upper() + text[1:]
    return text

# ----------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------

_SEXWORDS = {"M": ("M", "male", "man", "M", "gentleman"), "F": ("F", "female", "woman", "F", "lady")}
_CHILDWORDS = {"M": ("boy", "male", "M"), "F": ("girl", "female", "F")}
_GENERIC_WRAP = ("{0}", "?{0}", "eval {0}", "known {0}, follow-up", "pt with {0}", "concern for {0}",
                 "clinical suspicion of {0}", "{0}, please evaluate", "r/o {0}", "{0} - imaging requested")


def _demo(r: random.Random, age: int, sex: str) -> str:
    child = age < 16
    words = (_CHILDWORDS if child else _SEXWORDS).get(sex)
    if not words:
        return r.choice((f"{age} yo", f"{age}y", f"pt {age}y"))
    w = r.choice(words)
    short = sex
    return r.choice((
        f"{age}{short}", f"{age} yo {w}", f"{age}y/o {w}", f"{age} year old {w} with",
        f"{age}-year-old {w} presenting with", f"Pt is a {age} yo {w} w/", f"{age}{short} -",
        f"{age} {short},"))


def _pick_sex(r: random.Random, kn: Knowledge, scenario: str) -> tuple[str, str]:
    if scenario[:2] in ("F:", "M:"):
        return scenario[0], scenario[2:]
    if kn.sex:
        return kn.sex, scenario
    u = r.random()
    return ("F" if u < 0.49 else "M" if u < 0.98 else "O" if u < 0.99 else "U"), scenario


def _split_acc(scenario: str) -> tuple[str, tuple[str, ...]]:
    if "~" in scenario:
        text, codes = scenario.rsplit("~", 1)
        return text, tuple(c.strip() for c in codes.split(",") if c.strip())
    return scenario, ()


def _priority(r: random.Random, weights: tuple[float, float, float]) -> str:
    return r.choices(("STAT", "URGENT", "ROUTINE"), weights=weights)[0]


def _exam_case(r: random.Random, exam: str) -> str:
    u = r.random()
    if u < 0.08:
        return exam.title().replace("Wo", "WO").replace("Ct ", "CT ").replace("Mri", "MRI")
    if u < 0.12:
        return exam.lower()
    return exam


def _benign_pool(p: Protocol, age: int, sex: str) -> list[str]:
    pool = list(OK_ANY)
    if p.uses_iodinated_contrast:
        pool += OK_IODINATED * 2
    else:
        pool += OK_NONIODINATED
    if p.modality == "MR":
        pool += OK_MR * 2
    elif p.modality == "CT" and not p.uses_iodinated_contrast:
        pool += OK_NONCONTRAST_CT
    elif p.modality in ("US", "XR", "NM"):
        pool += ("has pacemaker", "ESRD on HD", "cochlear implant")
    if sex == "F" and 15 <= age <= 50 and p.modality in ("CT", "NM", "PET", "XR"):
        pool += OK_FEMALE * 3
    return pool


def _compose(r: random.Random, kn: Knowledge, lead: str, extras: list[str], age: int, sex: str,
             force_demo: bool = False, allow_short: bool = True) -> str:
    lead = _fill(lead, r)
    if force_demo or r.random() < 0.28:
        d = _demo(r, age, sex)
        lead = f"{d} {lead}" if d[-1] in ",-" or d.endswith(("with", "w/")) else r.choice(
            (f"{d} {lead}", f"{d}, {lead}", f"{d}. {lead}"))
    if allow_short and r.random() < 0.07:  # terse one-liner
        if kn.questions and r.random() < 0.5:
            body = [_fill(r.choice(kn.questions), r)] + extras
        else:
            body = [lead] + extras
        return _style((", " if r.random() < 0.5 else ". ").join(body), r)
    body = [lead]
    if kn.findings and r.random() < 0.4:
        body.append(_fill(r.choice(kn.findings), r))
        if len(kn.findings) > 3 and r.random() < 0.25:
            body.append(_fill(r.choice(kn.findings), r))
    if kn.history and r.random() < 0.25:
        body.insert(r.randint(0, len(body)), _fill(r.choice(kn.history), r))
    for e in extras:
        body.insert(0 if r.random() < 0.12 else r.randint(1, len(body)), e)
    if r.random() < 0.35:
        pool = DISTRACTORS + (DISTRACTOR_M if sex == "M" else ())
        items = r.sample(pool, r.randint(1, 3))
        joiner = r.choice((", ", "/", " and ", ", "))
        dis = r.choice(DISTRACTOR_FMT).format(joiner.join(items))
        body.insert(0 if r.random() < 0.3 else len(body), dis)
    if kn.questions and r.random() < 0.5:
        q = _fill(r.choice(kn.questions), r)
        if r.random() < 0.85:
            body.append(q)
        else:
            body.insert(0, q)
    sep = r.choice((". ", ". ", ", ", "; ", " - ", ". ", ", "))
    text = sep.join(b for b in body if b)
    if r.random() < 0.45:
        text += "."
    return _style(text, r)


def _generic_knowledge(p: Protocol) -> Knowledge:
    inds = p.indication_list or [p.name]
    region = p.body_region.split("/")[0]
    scen = tuple(w.format(i) for i in inds for w in _GENERIC_WRAP)
    return Knowledge(
        exams=(p.name.upper(), p.code.replace("-", " "), f"{p.modality} {p.body_region}".upper()),
        vague=(f"{p.modality} {region}".upper(), f"{p.modality} {p.body_region}".upper()),
        scenarios=scen, questions=tuple(f"r/o {i}" for i in inds) + tuple(f"eval {i}" for i in inds),
        age=(18, 85), sex="", priority=_PRI["UR"])


def _one(r: random.Random, p: Protocol, kn: Knowledge, codes: set[str]) -> tuple[str, str, int, str, str, tuple[str, ...]]:
    """One example for protocol p: (ordered_exam, notes, age, sex, priority, acceptable)."""
    sw = SWITCHES.get(p.code)
    if sw is not None and r.random() < sw.share:
        src = KNOWLEDGE[sw.source]
        kind = r.choice(sw.kinds)
        scenario, _ = _split_acc(r.choice(sw.pool))
        sex, scenario = _pick_sex(r, src, scenario)
        lo, hi = src.age
        if kind == "pregnancy":
            sex, lo, hi = "F", 18, 42
        age = r.randint(lo, hi)
        extra = _fill(r.choice(CONTRA[kind]), r)
        tail = r.choice(CONTRA_TAIL[kind])
        if tail and r.random() < 0.3:
            extra = f"{extra}, {tail}"
        extras: list[str] = [extra]
        if sw.extras and r.random() < 0.35:
            extras.append(r.choice(sw.extras))
        notes = _compose(r, src, scenario, extras, age, sex)
        u = r.random()  # referrers usually order what they would have without the contraindication
        if u < 0.45:
            pool = src.vague or src.exams
        elif u < 0.6:
            pool = src.exams
        else:
            pool = kn.vague if (u < 0.85 and kn.vague) else kn.exams
        return (_exam_case(r, r.choice(pool)), notes, age, sex, _priority(r, src.priority),
                sw.acceptable)

    if p.code == "US-APPENDIX" and r.random() < 0.25:  # adult-style appendicitis text, child patient
        scenario, _ = _split_acc(r.choice(APPY_SC))
        sex = r.choice("FM")
        age = r.randint(3, 15)
        notes = _compose(r, kn, scenario, [], age, sex, force_demo=True, allow_short=False)
        pool = kn.vague if r.random() < 0.5 else kn.exams
        return (_exam_case(r, r.choice(pool)), notes, age, sex, _priority(r, kn.priority), ())

    if p.code in KNOWLEDGE and p.indication_list and r.random() < 0.08:
        scenario = r.choice(_GENERIC_WRAP).format(r.choice(p.indication_list))
        marker: tuple[str, ...] = ()
    else:
        scenario, marker = _split_acc(r.choice(kn.scenarios))
    sex, scenario = _pick_sex(r, kn, scenario)
    age = r.randint(*kn.age)
    if r.random() < 0.035:  # empty note: the ordered exam carries the information
        return (_exam_case(r, r.choice(kn.exams)), "", age, sex, _priority(r, kn.priority),
                kn.acceptable + marker)
    extras = []
    if r.random() < (0.3 if p.code in _SWITCH_SOURCES else 0.15):
        extras.append(_fill(r.choice(_benign_pool(p, age, sex)), r))
    notes = _compose(r, kn, scenario, extras, age, sex)
    pool = kn.exams if (r.random() < 0.55 or not kn.vague) else kn.vague
    return (_exam_case(r, r.choice(pool)), notes, age, sex, _priority(r, kn.priority),
            kn.acceptable + marker)


def generate(protocols: Sequence[Protocol], per_protocol: int = 40, seed: int = 0) -> list[LabelledOrder]:
    """Labelled synthetic orders, ``per_protocol`` for each catalog protocol, deterministic in ``seed``.

    Each protocol draws from its own generator seeded by (seed, code), so adding a protocol to the
    catalog does not change the orders of the others.
    """
    codes = {p.code for p in protocols}
    rows: list[tuple[str, str, str, int, str, str, tuple[str, ...]]] = []
    for p in protocols:
        r = random.Random(f"radassist-synthetic:{seed}:{p.code}")
        kn = KNOWLEDGE.get(p.code) or _generic_knowledge(p)
        for _ in range(per_protocol):
            exam, notes, age, sex, pri, acc = _one(r, p, kn, codes)
            acceptable = (p.code,) + tuple(sorted({c for c in acc if c in codes and c != p.code}))
            rows.append((p.code, exam, notes, max(0, min(100, age)), sex, pri, acceptable))
    random.Random(f"radassist-synthetic:{seed}:order").shuffle(rows)
    out = []
    for n, (code, exam, notes, age, sex, pri, acc) in enumerate(rows, start=1):
        order = Order(accession=f"SYN-{n:06d}", ordered_exam=exam, clinical_notes=notes,
                      age=age, sex=sex, priority=pri)
        out.append(LabelledOrder(order=order, code=code, acceptable=acc))
    return out


# ----------------------------------------------------------------------------------------
# Files and command line
# ----------------------------------------------------------------------------------------

def write_jsonl(examples: Iterable[LabelledOrder], path) -> int:
    """Write one JSON object per line (order fields + expected + acceptable); returns the count."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            o = ex.order
            acc = list(ex.acceptable) or [ex.code]
            if ex.code not in acc:
                acc.insert(0, ex.code)
            fh.write(json.dumps({
                "accession": o.accession, "ordered_exam": o.ordered_exam,
                "clinical_notes": o.clinical_notes, "age": o.age, "sex": o.sex,
                "priority": o.priority, "expected": ex.code, "acceptable": acc,
            }, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_labelled_jsonl(path) -> list[LabelledOrder]:
    """Read labelled orders (this module's format or the dev set's: "expected", optional "acceptable")."""
    from datetime import datetime

    out: list[LabelledOrder] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            code = obj.get("expected") or obj.get("code")
            if not code:
                raise ValueError(f"{path}:{lineno}: missing 'expected'")
            acc = [str(c) for c in (obj.get("acceptable") or [])]
            if code not in acc:
                acc.insert(0, code)
            age = obj.get("age")
            ordered_at = None
            if obj.get("ordered_at"):
                try:
                    ordered_at = datetime.fromisoformat(str(obj["ordered_at"]))
                except ValueError:
                    ordered_at = None
            order = Order(
                accession=str(obj.get("accession") or f"L{lineno:06d}"),
                ordered_exam=str(obj.get("ordered_exam") or ""),
                clinical_notes=str(obj.get("clinical_notes") or ""),
                age=int(age) if age not in (None, "") else None,
                sex=str(obj.get("sex") or "U"),
                priority=str(obj.get("priority") or "ROUTINE"),
                mrn=obj.get("mrn"), patient_name=obj.get("patient_name"),
                ordering_provider=obj.get("ordering_provider"), ordered_at=ordered_at)
            out.append(LabelledOrder(order=order, code=str(code), acceptable=tuple(acc),
                                     category=str(obj.get("category") or ""), style=str(obj.get("style") or "")))
    return out


def load_catalog(path=DEFAULT_CATALOG) -> list[Protocol]:
    """Protocols from a catalog CSV (code,name,modality,body_region,contrast,indications)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [Protocol(code=row["code"].strip(), name=(row.get("name") or "").strip(),
                         modality=(row.get("modality") or "").strip(),
                         body_region=(row.get("body_region") or "").strip(),
                         contrast=(row.get("contrast") or "").strip(),
                         indications=(row.get("indications") or "").strip())
                for row in csv.DictReader(fh) if (row.get("code") or "").strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m radassist.synthetic",
                                 description="Write synthetic labelled imaging orders as JSONL.")
    ap.add_argument("--out", required=True, help="output JSONL file")
    ap.add_argument("--per-protocol", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="protocol catalog CSV")
    args = ap.parse_args(argv)
    if args.per_protocol < 0:
        ap.error("--per-protocol must be >= 0")
    try:
        catalog = load_catalog(args.catalog)
    except (OSError, KeyError) as exc:
        print(f"error: cannot read catalog {args.catalog}: {exc}", file=sys.stderr)
        return 2
    n = write_jsonl(generate(catalog, per_protocol=args.per_protocol, seed=args.seed), args.out)
    print(f"wrote {n} orders for {len(catalog)} protocols to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
