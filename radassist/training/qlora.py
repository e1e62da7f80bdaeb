"""QLoRA fine-tuning of the LLM engine (4-bit NF4 base + LoRA adapters, paged 8-bit AdamW).

Each example is ``build_prompt(order, safety flags)`` followed by the protocol name and EOS,
exactly what ``LLMEngine`` scores; the loss covers the name and EOS tokens only. After
training, the candidate-scoring normalization (mean or sum log-prob) and the softmax
temperature are chosen on the validation split and saved as ``calibration.json``.

Output: ``<out>/llm-YYYYMMDD-HHMMSS-<hash>/`` with the peft adapter, ``calibration.json``,
``model_card.json`` and ``MODEL_CARD.md``. It is written into a hidden temporary folder and
renamed at the end, so a stopped or failed run never leaves a half-written adapter.

CPU trap (design, Models): the model is loaded fresh for training and never runs a no-grad
forward before it; after the first backward the LoRA gradient norm must be above zero.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radassist.domain import LabelledOrder, Protocol
from radassist.engines.llm import (
    MODEL_CARD_JSON,
    Calibration,
    LLMEngine,
    encode_candidate,
    encode_prompt,
    build_prompt,
    fit_temperature,
    normalize,
)
from radassist.paths import trained_models_dir

ProgressFn = Callable[[dict], None]
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class QLoRAConfig:
    """Hyperparameters. Defaults suit SmolLM2-135M on a 2-core CPU (3,000 orders in well
    under 30 minutes) and are reasonable starting points for a 7B model on a GPU."""

    base_model: str | None = None  # HF folder; None = models/meditron-7b if present, else SmolLM2
    quantization: str = "nf4"  # "nf4" (QLoRA) or "none"
    device: str = "auto"
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # scaling = alpha / r
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_TARGETS  # every linear layer of a Llama block
    learning_rate: float = 1e-3  # suits a 135M model and ~200 steps; use ~2e-4 for 7B
    warmup_fraction: float = 0.05  # linear warm-up, then linear decay to zero
    weight_decay: float = 0.0
    epochs: float = 1.0
    batch_size: int = 16
    max_length: int = 256  # tokens per example (prompt + name); longer prompts are cut
    seed: int = 0
    val_fraction: float = 0.05  # held out from the given examples when no val set is given
    val_max: int = 150  # validation examples scored against the whole catalog
    gradient_checkpointing: bool | None = None  # None: on for models above 1B parameters
    max_steps: int | None = None  # stop early (smoke tests, GPU check)
    optimizer: str = "paged_adamw_8bit"  # bitsandbytes PagedAdamW8bit; "adamw" = torch AdamW


@dataclass
class TrainResult:
    adapter_dir: Path | None  # None when stopped before the end
    stopped: bool
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    first_grad_norm: float = 0.0
    optimizer: str = ""


class ZeroGradientError(RuntimeError):
    """LoRA received no gradient: the CPU 4-bit trap or a frozen adapter."""


# --------------------------------------------------------------------------- data
def _safety():
    """Flags as the engine sees them at inference: detected once and assessed with the site policy."""
    from radassist.domain import Order
    from radassist.flag_assessment import assess

    from radassist.safety import check_notes

    def flags(notes: str, order: Order | None = None):
        if order is not None:
            return assess(notes, check_notes(notes), None, order.age, order.sex)
        return assess(notes, check_notes(notes))

    return flags


def _flags(safety, order):
    try:
        return safety(order.clinical_notes or "", order)
    except TypeError:  # a plain notes -> flags callable (tests pass check_notes)
        return safety(order.clinical_notes or "")


def encode_example(tokenizer, example: LabelledOrder, protocol: Protocol, flags, max_length: int):
    """(input_ids, labels): labels are -100 except on the protocol-name tokens and EOS."""
    prompt = encode_prompt(tokenizer, build_prompt(example.order, flags))
    target = encode_candidate(tokenizer, protocol)
    room = max_length - len(target)
    if len(prompt) > room:  # keep the start and the "...Safety/Protocol:" tail
        tail = min(24, room // 2)
        prompt = prompt[: room - tail] + prompt[-tail:]
    return prompt + target, [-100] * len(prompt) + target


def data_hash(examples: Sequence[LabelledOrder]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        o = ex.order
        digest.update(json.dumps([o.ordered_exam, o.clinical_notes, o.age, o.sex, o.priority, ex.code]).encode())
    return digest.hexdigest()


def split_examples(examples: Sequence[LabelledOrder], val_fraction: float, seed: int):
    items = list(examples)
    random.Random(seed).shuffle(items)
    n_val = int(round(len(items) * val_fraction)) if len(items) > 1 else 0
    return items[n_val:], items[:n_val]


def _collate(batch, pad_id: int):
    """Left-padded tensors; only the last ``keep`` positions need logits."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, (x, y) in enumerate(batch):
        ids[b, width - len(x):] = torch.tensor(x)
        labels[b, width - len(y):] = torch.tensor(y)
        mask[b, width - len(x):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    target_len = int((labels != -100).sum(1).max())
    return ids, mask, positions, labels, target_len


def batch_loss(model, batch, pad_id: int):
    """Mean cross-entropy on the label tokens, computing logits only where labels are."""
    import torch

    ids, mask, positions, labels, keep = _collate(batch, pad_id)
    device = next(model.parameters()).device
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=keep + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels[:, -keep:].reshape(-1).to(device), ignore_index=-100
    )


# --------------------------------------------------------------------------- model
def _lora_parameters(model):
    return [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]


def _grad_norm(params) -> float:
    total = sum(float(p.grad.detach().float().norm() ** 2) for p in params if p.grad is not None)
    return math.sqrt(total)


def _make_optimizer(params, config: QLoRAConfig):
    import torch

    if config.optimizer == "paged_adamw_8bit":
        try:
            import bitsandbytes as bnb

            optimizer = bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
            on_cpu = all(p.device.type == "cpu" for p in params)
            # bitsandbytes pages optimizer state only on CUDA; on CPU the 8-bit state stays in RAM
            return optimizer, "bitsandbytes PagedAdamW8bit" + (" (8-bit state, not paged on CPU)" if on_cpu else "")
        except Exception as exc:  # bitsandbytes without a backend for this device
            print(f"radassist: PagedAdamW8bit unavailable ({type(exc).__name__}: {exc}); using torch AdamW",
                  file=sys.stderr)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay), "torch AdamW"


def prepare_peft_model(loaded, config: QLoRAConfig):
    """prepare_model_for_kbit_training + LoRA on a freshly loaded model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    n_params = sum(p.numel() for p in model.parameters())
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = n_params > 1_000_000_000
    if config.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), checkpointing


# --------------------------------------------------------------------------- training
def train(
    config: QLoRAConfig,
    train_examples: Sequence[LabelledOrder],
    val_examples: Sequence[LabelledOrder],
    catalog: Sequence[Protocol],
    progress: ProgressFn | None = None,
    stop_event: threading.Event | None = None,
    out_dir: str | Path | None = None,
    command: str = "",
    safety=None,
    loaded=None,
    version: str | None = None,
) -> TrainResult:
    """Fine-tune, validate, calibrate and write a versioned adapter folder into ``out_dir``
    (default models/adapters). ``progress`` gets {"step","total","loss","lr","eta_s"} per
    step; setting ``stop_event`` stops after the current step and writes nothing.
    ``loaded``: a freshly loaded ``LoadedModel`` (tests); by default the base is loaded here.
    ``version``: the folder's (and the registry's) name; default ``llm-YYYYMMDD-HHMMSS-<hash>``."""
    import torch

    from radassist.engines.llm_model import load_base_model, weights_hash

    started = time.perf_counter()
    stop_event = stop_event or threading.Event()
    safety = safety or _safety()
    by_code = {p.code: p for p in catalog}
    train_examples = [ex for ex in train_examples if ex.code in by_code]
    val_examples = [ex for ex in val_examples if ex.code in by_code][: config.val_max]
    if not train_examples:
        raise ValueError("no training examples with a protocol code from the catalog")
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    loaded = loaded or load_base_model(config.base_model, config.quantization, config.device)
    tok = loaded.tokenizer
    model, checkpointing = prepare_peft_model(loaded, config)
    model.train()
    data = [encode_example(tok, ex, by_code[ex.code], _flags(safety, ex.order), config.max_length)
            for ex in train_examples]
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = max(1, math.ceil(steps_per_epoch * config.epochs))
    if config.max_steps:
        total = min(total, config.max_steps)
    params = _lora_parameters(model)
    optimizer, optimizer_name = _make_optimizer(params, config)
    warmup = max(1, int(total * config.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    rng = random.Random(config.seed)
    losses: list[float] = []
    first_norm = 0.0
    step = 0
    loop_started = time.perf_counter()
    while step < total and not stop_event.is_set():
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if step >= total or stop_event.is_set():
                break
            batch = [data[i] for i in order[start:start + config.batch_size]]
            loss = batch_loss(model, batch, tok.pad_token_id)
            loss.backward()
            if step == 0:
                first_norm = _grad_norm(params)
                if not first_norm > 0:
                    raise ZeroGradientError(
                        "LoRA gradient norm is zero after the first backward pass (4-bit CPU trap: "
                        "train on a freshly loaded model that has run no forward pass)"
                    )
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            elapsed = time.perf_counter() - loop_started
            if progress:
                progress({
                    "step": step,
                    "total": total,
                    "loss": round(losses[-1], 5),
                    "lr": scheduler.get_last_lr()[0],
                    "eta_s": round(elapsed / step * (total - step), 1),
                })
    train_seconds = time.perf_counter() - loop_started
    if stop_event.is_set():
        return TrainResult(None, True, step, time.perf_counter() - started, losses, {}, first_norm, optimizer_name)

    model.eval()
    metrics, calibration = evaluate_and_calibrate(model, loaded, val_examples, catalog, safety, config)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["seconds_per_step"] = round(train_seconds / max(step, 1), 3)
    metrics["final_train_loss"] = round(float(np.mean(losses[-10:])), 4) if losses else None
    if stop_event.is_set():
        return TrainResult(None, True, step, time.perf_counter() - started, losses, metrics, first_norm, optimizer_name)

    now = dt.datetime.now()
    d_hash = data_hash(train_examples)
    short = hashlib.sha256((d_hash + json.dumps(asdict(config), default=str)).encode()).hexdigest()[:7]
    version = version or f"llm-{now:%Y%m%d-%H%M%S}-{short}"
    out_dir = Path(out_dir or trained_models_dir() / "adapters")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=out_dir))
    try:
        model.save_pretrained(str(tmp))
        (tmp / "README.md").unlink(missing_ok=True)  # peft's template card; MODEL_CARD.md replaces it
        calibration.save(tmp)
        card = {
            "version": version,
            "engine": "llm",
            "date": now.isoformat(timespec="seconds"),
            "command": command,
            "base_model": {"id": loaded.base_id, "weights_sha256": weights_hash(loaded.path),
                           "quantization": config.quantization, "device": loaded.device},
            "data": {"train_examples": len(train_examples), "val_examples": len(val_examples),
                     "sha256": d_hash, "catalog_size": len(catalog)},
            "hyperparameters": {**asdict(config), "target_modules": list(config.target_modules),
                                "gradient_checkpointing": checkpointing, "optimizer": optimizer_name},
            "training": {"steps": step, "seconds": round(time.perf_counter() - started, 1),
                         "first_lora_grad_norm": round(first_norm, 6),
                         "loss_curve": [round(x, 4) for x in losses]},
            "validation": metrics,
            "calibration": asdict(calibration),
        }
        (tmp / MODEL_CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text(model_card_markdown(card))
        if stop_event.is_set():
            raise InterruptedError
        final = out_dir / version
        tmp.rename(final)
    except InterruptedError:
        shutil.rmtree(tmp, ignore_errors=True)
        return TrainResult(None, True, step, time.perf_counter() - started, losses, metrics, first_norm, optimizer_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainResult(final, False, step, time.perf_counter() - started, losses, metrics, first_norm, optimizer_name)


def evaluate_and_calibrate(model, loaded, val_examples, catalog, safety, config: QLoRAConfig):
    """Validation loss, top-1/top-3 over the whole catalog for both normalizations; the
    better one (top-1, then NLL) with its fitted temperature becomes the calibration."""
    import torch

    from radassist.engines.llm_model import LoadedModel

    if not val_examples:
        return {"val_examples": 0}, Calibration()
    by_code = {p.code: p for p in catalog}
    tok = loaded.tokenizer
    flags = [_flags(safety, ex.order) for ex in val_examples]
    enc = [encode_example(tok, ex, by_code[ex.code], f, config.max_length) for ex, f in zip(val_examples, flags)]
    with torch.inference_mode():
        losses = [float(batch_loss(model, enc[i:i + config.batch_size], tok.pad_token_id))
                  for i in range(0, len(enc), config.batch_size)]
    view = LoadedModel(model, tok, loaded.base_id, loaded.path, loaded.device, loaded.quantization,
                       loaded.load_seconds, loaded.peak_rss_mb, loaded.peak_vram_mb)
    engine = LLMEngine(catalog, adapter=None, loaded=view, safety=safety)
    codes = [p.code for p in catalog]
    scored = engine.raw_scores([ex.order for ex in val_examples], flags, [codes] * len(val_examples))
    gold = [codes.index(ex.code) for ex in val_examples]
    metrics: dict = {"val_examples": len(val_examples), "val_loss": round(float(np.mean(losses)), 4)}
    best = None
    for norm in ("mean", "sum"):
        scores = [normalize(s, n, norm) for s, n in scored]
        ranks = [int((s > s[g]).sum()) for s, g in zip(scores, gold)]
        temp = fit_temperature(scores, gold)
        cal = Calibration(temp, norm)
        nll = float(np.mean([-math.log(max(cal.probabilities(s, n)[g], 1e-12)) for (s, n), g in zip(scored, gold)]))
        m = {"top1": round(float(np.mean([r < 1 for r in ranks])), 4),
             "top3": round(float(np.mean([r < 3 for r in ranks])), 4),
             "nll": round(nll, 4), "temperature": round(temp, 4)}
        metrics[norm] = m
        if best is None or (m["top1"], -m["nll"]) > (best[1]["top1"], -best[1]["nll"]):
            best = (cal, m)
    assert best is not None  # two normalizations were scored
    metrics["normalization"] = best[0].normalization
    metrics["top1"], metrics["top3"] = best[1]["top1"], best[1]["top3"]
    return metrics, best[0]


def calibrate_prior_fusion(adapter: str | Path, catalog: Sequence[Protocol], examples: Sequence[LabelledOrder],
                           shortlist_engine, prior_weight: float = 1.0, shortlist_size: int = 10,
                           command: str = "") -> dict:
    """Enable the shortlist engine's probabilities as a prior in an adapter's calibration:
    fit the fused temperature on ``examples`` (fresh synthetic orders, never the dev set) and
    rewrite its calibration.json. Returns the fit's numbers."""
    engine = LLMEngine(catalog, adapter=adapter, shortlist_engine=shortlist_engine, shortlist_size=shortlist_size)
    orders = [ex.order for ex in examples]
    flags = engine.flags_for(orders)
    codes = engine.candidates_for(orders)
    scored = engine.raw_scores(orders, flags, codes)
    cal = engine.calibration
    cal.prior_weight = prior_weight
    priors = engine.prior_probabilities(orders, codes)
    fused = [cal.logits(s, n) + prior_weight * np.log(np.clip(p, 1e-9, 1.0)) for (s, n), p in zip(scored, priors)]
    gold = [cs.index(ex.code) if ex.code in cs else -1 for cs, ex in zip(codes, examples)]
    cal.fused_temperature = fit_temperature(fused, gold)
    ranks = [int((f > f[g]).sum()) if g >= 0 else len(f) for f, g in zip(fused, gold)]
    result: dict[str, Any] = {
              "examples": len(examples), "data_sha256": data_hash(examples), "shortlist_size": shortlist_size,
              "shortlist_recall": round(float(np.mean([g >= 0 for g in gold])), 4),
              "top1": round(float(np.mean([r < 1 for r in ranks])), 4),
              "top3": round(float(np.mean([r < 3 for r in ranks])), 4),
              "calibration": asdict(cal), "command": command or _command_line()}
    folder = engine._adapter_dir
    if folder is None:
        raise ValueError(f"{adapter}: no adapter folder to calibrate")
    card_path = folder / MODEL_CARD_JSON
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card["calibration"] = asdict(cal)
    card["prior_fusion"] = result
    cal.save(folder)
    tmp_card = card_path.with_suffix(".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    tmp_card.replace(card_path)
    with (folder / "MODEL_CARD.md").open("a") as md:
        md.write(
            "\n## Prior fusion (added after training)\n\n"
            f"- Command: `{result['command']}`\n"
            f"- The embedding engine's probabilities are a prior with weight {prior_weight}; fused temperature "
            f"{cal.fused_temperature:.4f} fitted on {len(examples)} fresh synthetic orders "
            f"(sha256 {result['data_sha256'][:16]}...).\n"
            f"- On those orders (shortlist k={shortlist_size}, recall {result['shortlist_recall']}): "
            f"top-1 {result['top1']}, top-3 {result['top3']}\n"
        )
    return result


def model_card_markdown(card: dict) -> str:
    hp, val, tr = card["hyperparameters"], card["validation"], card["training"]
    curve = tr["loss_curve"]
    sample = curve[:: max(1, len(curve) // 20)]
    lines = [
        f"# LLM adapter {card['version']}",
        "",
        f"- Date: {card['date']}",
        f"- Command: `{card['command'] or '(library call)'}`",
        f"- Base model: {card['base_model']['id']} (weights sha256 {card['base_model']['weights_sha256'][:16]}...), "
        f"quantization {card['base_model']['quantization']}, device {card['base_model']['device']}",
        f"- Data: {card['data']['train_examples']} training / {card['data']['val_examples']} validation orders, "
        f"sha256 {card['data']['sha256'][:16]}..., catalog of {card['data']['catalog_size']} protocols",
        f"- Optimizer: {hp['optimizer']}",
        f"- Training: {tr['steps']} steps in {tr['seconds']} s "
        f"({val.get('seconds_per_step', '?')} s/step), first LoRA gradient norm {tr['first_lora_grad_norm']}",
        "",
        "## Validation (whole catalog as candidates)",
        "",
        f"- top-1 {val.get('top1')}, top-3 {val.get('top3')}, loss {val.get('val_loss')}",
        f"- mean log-prob: {val.get('mean')}",
        f"- sum log-prob: {val.get('sum')}",
        f"- chosen: {card['calibration']['normalization']} with temperature {card['calibration']['temperature']:.4f}",
        "",
        "## Hyperparameters",
        "",
        *[f"- {k}: {v}" for k, v in hp.items()],
        "",
        "## Loss curve (every ~5% of steps)",
        "",
        " ".join(f"{x:.3f}" for x in sample),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line
def _command_line() -> str:
    """How this process was started, as a shell command."""
    if sys.argv and sys.argv[0].endswith("qlora.py"):
        return shlex.join(["python", "-m", "radassist.training.qlora", *sys.argv[1:]])
    return shlex.join(["radassist", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    """Fit the embedding-prior fusion of an adapter (training itself: `radassist train --engine llm`):
    ``python -m radassist.training.qlora --calibrate-fusion ADAPTER --data FILE [--catalog CSV]``."""
    import argparse

    from radassist.catalog import default_catalog, load_catalog_csv
    from radassist.synthetic import read_labelled_jsonl

    parser = argparse.ArgumentParser(prog="python -m radassist.training.qlora", description=main.__doc__)
    parser.add_argument("--calibrate-fusion", metavar="ADAPTER", required=True,
                        help="fit the embedding-prior fusion of ADAPTER on --data")
    parser.add_argument("--data", required=True, metavar="FILE", help="labelled orders (JSONL), never the dev set")
    parser.add_argument("--catalog", metavar="CSV", help="protocol catalog (default: the shipped one)")
    parser.add_argument("--prior-weight", type=float, default=1.0, help="default 1")
    args = parser.parse_args(argv)
    catalog = load_catalog_csv(args.catalog) if args.catalog else default_catalog()
    from radassist.engines import create_embedding_engine

    result = calibrate_prior_fusion(args.calibrate_fusion, catalog, read_labelled_jsonl(args.data),
                                    create_embedding_engine(catalog), args.prior_weight)
    print(json.dumps(result, indent=2))
    return 0


__all__ = [
    "QLoRAConfig", "TrainResult", "ZeroGradientError", "train", "split_examples", "encode_example",
    "calibrate_prior_fusion",
]

if __name__ == "__main__":
    sys.exit(main())
