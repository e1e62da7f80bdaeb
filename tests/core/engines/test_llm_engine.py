"""LLM engine, 4-bit loading and QLoRA training on a random tiny Llama (fast), plus one
integration test on the bundled SmolLM2 (marked ``integration``)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from radassist.domain import LabelledOrder, Order, Protocol, SafetyFlag
from radassist.engines.base import EngineError

torch = pytest.importorskip("torch")
from support.llm import PROTOCOLS, TEXTS, examples, no_flags  # noqa: E402,F401

def load(folder, quantization="nf4"):
    from radassist.engines.llm_model import load_base_model

    return load_base_model(folder, quantization=quantization, device="cpu")


def test_nf4_load_reports_time_and_memory(tiny_model_dir):
    import bitsandbytes as bnb

    loaded = load(tiny_model_dir)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())
    assert loaded.quantization == "nf4" and loaded.device == "cpu"
    assert loaded.load_seconds > 0 and loaded.peak_rss_mb > 0
    assert loaded.summary()["base_model"] == tiny_model_dir.name


def test_missing_or_broken_model_folder_is_a_clear_error(tmp_path):
    from radassist.engines.llm_model import load_base_model

    with pytest.raises(EngineError, match="not found"):
        load_base_model(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{ not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(EngineError, match="could not load base model"):
        load_base_model(tmp_path, quantization="none", device="cpu")


def test_packed_scores_equal_one_sequence_per_candidate(tiny_model_dir):
    from radassist.engines.llm import CandidateScorer, encode_candidate, encode_prompt

    loaded = load(tiny_model_dir, quantization="none")
    tok, model = loaded.tokenizer, loaded.model.eval()
    prompts = [encode_prompt(tok, "Imaging order: CT HEAD head trauma\nSafety: none\nProtocol:"),
               encode_prompt(tok, "Imaging order: MRI KNEE\nProtocol:")]
    cands = [encode_candidate(tok, p) for p in PROTOCOLS]
    got = CandidateScorer(model, tok).score(prompts, [cands, cands[1:4]])
    for prompt, (sums, lengths), cs in zip(prompts, got, [cands, cands[1:4]]):
        for c, s, n in zip(cs, sums, lengths):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + c])).logits[0].float(), -1)
            ref = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(c))
            assert s == pytest.approx(ref, abs=1e-4) and n == len(c)


def test_engine_returns_catalog_codes_with_probabilities_and_flags(tiny_model_dir):
    from radassist.engines.llm import LLMEngine

    flag = SafetyFlag("contrast-allergy", "anaphylaxis to contrast")
    engine = LLMEngine(PROTOCOLS, adapter=None, loaded=load(tiny_model_dir), safety=lambda text: [flag])
    orders = [Order("A1", "CT CHEST", "?PE, anaphylaxis to contrast"), Order("A2", "MRI KNEE", "")]
    preds = engine.predict_batch(orders, top_k=len(PROTOCOLS))
    codes = {p.code for p in PROTOCOLS}
    for pred, order in zip(preds, orders):
        assert pred.accession == order.accession and pred.model == "llm/base"
        assert {s.code for s in pred.suggestions} == codes
        scores = [s.score for s in pred.suggestions]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-6)
        assert pred.flags == [flag]
    # a shortlist is filtered to the catalog; everything else gets no suggestion
    engine.shortlist_fn = lambda orders, k: [["MR-KNEE-WO", "NOT-IN-CATALOG", "US-RUQ"] for _ in orders]
    engine.shortlist_size = 2
    pred = engine.predict(orders[1], top_k=3)
    assert {s.code for s in pred.suggestions} == {"MR-KNEE-WO", "US-RUQ"}


def _config(**kw):
    from radassist.training.qlora import QLoRAConfig

    base = dict(batch_size=8, learning_rate=1e-2, epochs=10, max_steps=24, lora_r=8, lora_alpha=16,
                lora_dropout=0.0, val_max=10, warmup_fraction=0.0)
    base.update(kw)
    return QLoRAConfig(**base)


def test_qlora_steps_reduce_loss_and_write_a_complete_adapter(tiny_model_dir, tmp_path):
    from radassist.engines.llm import LLMEngine
    from radassist.training.qlora import train

    data = examples(2)
    progress = []
    result = train(_config(), data, data[:10], PROTOCOLS, progress=progress.append, out_dir=tmp_path,
                   command="pytest", safety=no_flags, loaded=load(tiny_model_dir))
    assert result.first_grad_norm > 0 and not result.stopped
    assert np.mean(result.losses[-3:]) < 0.85 * np.mean(result.losses[:3])
    assert [p["step"] for p in progress] == list(range(1, 25))
    assert set(progress[0]) == {"step", "total", "loss", "lr", "eta_s"}
    folder = result.adapter_dir
    assert folder.parent == tmp_path and folder.name.startswith("llm-")
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temp folder left
    for name in ("adapter_config.json", "adapter_model.safetensors", "calibration.json",
                 "model_card.json", "MODEL_CARD.md"):
        assert (folder / name).is_file(), name
    card = json.loads((folder / "model_card.json").read_text())
    assert card["base_model"]["id"] == tiny_model_dir.name and len(card["base_model"]["weights_sha256"]) == 64
    assert card["data"]["train_examples"] == len(data) and card["validation"]["top1"] is not None
    engine = LLMEngine(PROTOCOLS, adapter=folder, loaded=load(tiny_model_dir), safety=no_flags)
    assert engine.version == folder.name
    assert all(s.code in {p.code for p in PROTOCOLS} for s in engine.predict(data[0].order).suggestions)


def test_adapter_save_load_round_trip_gives_identical_scores(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from radassist.engines.llm import LLMEngine

    loaded = load(tiny_model_dir)
    torch.manual_seed(1)
    loaded.model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    before = LLMEngine(PROTOCOLS, adapter=None, loaded=loaded, safety=no_flags)
    orders = [ex.order for ex in examples(1)[::3]]
    scores_before = [[s.score for s in p.suggestions] for p in before.predict_batch(orders, top_k=5)]
    loaded.model.save_pretrained(tmp_path / "llm-test")
    after = LLMEngine(PROTOCOLS, adapter=tmp_path / "llm-test", loaded=load(tiny_model_dir), safety=no_flags)
    scores_after = [[s.score for s in p.suggestions] for p in after.predict_batch(orders, top_k=5)]
    base = LLMEngine(PROTOCOLS, adapter=None, loaded=load(tiny_model_dir), safety=no_flags)
    scores_base = [[s.score for s in p.suggestions] for p in base.predict_batch(orders, top_k=5)]
    assert scores_after == scores_before
    assert scores_base != scores_before  # the adapter does change the model


def test_stop_event_leaves_no_adapter_folder(tiny_model_dir, tmp_path):
    from radassist.training.qlora import train

    stop = threading.Event()
    result = train(_config(), examples(2), examples(1)[:5], PROTOCOLS,
                   progress=lambda p: stop.set() if p["step"] == 2 else None, stop_event=stop,
                   out_dir=tmp_path, safety=no_flags, loaded=load(tiny_model_dir))
    assert result.stopped and result.adapter_dir is None and result.steps == 2
    assert list(tmp_path.iterdir()) == []


def test_stop_during_a_training_run_ends_it_cancelled_with_nothing_written(tiny_model_dir, tmp_path, monkeypatch):
    """What SIGTERM does to `radassist train --engine llm` (the command sets the run's stop event)."""
    from radassist.training import qlora
    from radassist.training.run_service import CANCELLED_EXIT, TrainingRun, TrainingRunConfig

    monkeypatch.setattr(qlora, "_safety", lambda: no_flags)
    events = []
    stop = threading.Event()

    def progress(event):
        events.append(event)
        if event.get("step") == 2:
            stop.set()

    config = TrainingRunConfig(engine="llm", source="file", out_dir=tmp_path, qlora=qlora.QLoRAConfig(
        base_model=str(tiny_model_dir), quantization="nf4", device="cpu", max_steps=20, batch_size=4, epochs=5,
        val_fraction=0.1))
    outcome = TrainingRun(None, config, progress=progress, stop_event=stop, catalog=PROTOCOLS,
                          examples=examples(2)).execute()
    assert outcome.exit_code == CANCELLED_EXIT == 143 and outcome.status == "cancelled"
    assert [x["step"] for x in events if "step" in x] == [1, 2]
    assert events[-1]["event"] == "stopped"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_smollm2_with_shipped_adapter_predicts_dev_style_orders():
    from radassist.catalog import default_catalog
    from radassist.engines import create_embedding_engine
    from radassist.engines.llm import LLMEngine, resolve_adapter
    from radassist.paths import ADAPTERS_DIR

    has_adapter = (ADAPTERS_DIR / "DEFAULT").is_file()
    catalog = default_catalog()
    # as in production: the embedding engine shortlists, the LLM ranks the shortlist
    engine = LLMEngine(catalog, adapter="default" if has_adapter else None, device="cpu",
                       shortlist_engine=create_embedding_engine(catalog), shortlist_size=10)
    cases = [
        (Order("I1", "CT CHEST", "SOB, tachycardia 110, L calf swelling after a long flight. ?PE", 50, "M"),
         "CTA-CHEST-PE"),
        (Order("I2", "US ABDOMEN", "RUQ pain after fatty meals with vomiting. Gallstones?", 41, "F"), "US-RUQ"),
        (Order("I3", "MRI KNEE", "Twisting injury playing soccer, locking and medial joint line pain.", 28, "M"),
         "MR-KNEE-WO"),
        (Order("I4", "CT CHEST", "Suspected PE. Documented anaphylaxis to IV contrast.", 63, "F"), "NM-VQ"),
    ]
    preds = engine.predict_batch([o for o, _ in cases], top_k=3)
    codes = {p.code for p in catalog}
    for pred, (_, expected) in zip(preds, cases):
        assert all(s.code in codes for s in pred.suggestions)
        if has_adapter:
            assert expected in [s.code for s in pred.suggestions], (pred.accession, pred.suggestions)
    assert any(f.type == "contrast-allergy" for f in preds[3].flags)
    if has_adapter:
        assert engine.version == resolve_adapter("default").name


class _CountingShortlist:
    """A shortlist engine with fixed probabilities that counts how often the batch is encoded."""

    def __init__(self, codes, probs):
        self.codes, self.probs, self.calls, self.flags_seen = list(codes), np.asarray(probs), 0, []

    def probabilities(self, orders, flags=None):
        self.calls += 1
        self.flags_seen.append(flags)
        return np.tile(self.probs, (len(orders), 1)), flags

    def shortlist(self, orders, k):  # the per-call path the engine must not need any more
        raise AssertionError("shortlist() re-encodes the batch: probabilities() should be reused")


def test_one_encoding_per_batch_feeds_both_the_shortlist_and_the_prior(tiny_model_dir):
    from radassist.engines.llm import Calibration, LLMEngine

    codes = [p.code for p in PROTOCOLS]
    probs = [0.05, 0.6, 0.05, 0.2, 0.1]          # CTA-CHEST-PE, US-RUQ, NM-VQ are the top three
    shortlist = _CountingShortlist(codes, probs)
    engine = LLMEngine(PROTOCOLS, adapter=None, loaded=load(tiny_model_dir), shortlist_engine=shortlist,
                       shortlist_size=3)
    engine.calibration = Calibration(temperature=1.0, prior_weight=1.0)
    orders = [Order("A1", "CT CHEST", "?PE, tachycardic"), Order("A2", "US ABDOMEN", "RUQ pain after meals")]
    preds = engine.predict_batch(orders, top_k=3)
    assert shortlist.calls == 1
    assert shortlist.flags_seen[0] is not None and len(shortlist.flags_seen[0]) == 2  # the engine's own flags
    for pred in preds:
        assert {s.code for s in pred.suggestions} == {"CTA-CHEST-PE", "US-RUQ", "NM-VQ"}
