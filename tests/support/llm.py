"""A random tiny Llama with a word-level tokenizer: fast, real weights for LLM engine and QLoRA tests."""
from __future__ import annotations

from radassist.domain import LabelledOrder, Order, Protocol, SafetyFlag


PROTOCOLS = [
    Protocol("CT-HEAD-WO", "CT Head WO Contrast", "CT", "Head", "none", "head trauma; stroke"),
    Protocol("CTA-CHEST-PE", "CTA Chest Pulmonary Embolism", "CT", "Chest", "iv", "pulmonary embolism"),
    Protocol("MR-KNEE-WO", "MRI Knee WO Contrast", "MR", "Knee", "none", "meniscus tear"),
    Protocol("US-RUQ", "US Abdomen Right Upper Quadrant", "US", "Abdomen", "none", "gallstones"),
    Protocol("NM-VQ", "NM Lung Ventilation Perfusion", "NM", "Chest", "none", "PE with contrast allergy"),
]
TEXTS = {
    "CT-HEAD-WO": ("CT HEAD", ["fall on warfarin, head strike", "sudden confusion, eval bleed", "head trauma"]),
    "CTA-CHEST-PE": ("CT CHEST", ["SOB and tachycardia, r/o PE", "pleuritic pain, calf swelling", "?PE"]),
    "MR-KNEE-WO": ("MRI KNEE", ["knee pain with locking", "twisting injury, meniscus tear?", "medial joint pain"]),
    "US-RUQ": ("US ABDOMEN", ["RUQ pain after meals", "gallstones? vomiting", "elevated LFTs, RUQ pain"]),
    "NM-VQ": ("CT CHEST", ["PE suspected, anaphylaxis to contrast", "?PE, contrast allergy", "SOB, iodine allergy"]),
}


def no_flags(text: str) -> list[SafetyFlag]:
    return []


def examples(repeat: int = 2) -> list[LabelledOrder]:
    out = []
    for code, (exam, notes) in TEXTS.items():
        for r in range(repeat):
            for i, note in enumerate(notes):
                order = Order(f"{code}-{r}-{i}", exam, note, age=40 + i, sex="F" if i % 2 else "M")
                out.append(LabelledOrder(order, code))
    return out


def build_tiny_model(folder):
    """A random 2-layer Llama with a word-level tokenizer built from the test vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from radassist.engines.llm import build_prompt, candidate_text

    corpus = [build_prompt(ex.order, [SafetyFlag("contrast-allergy", "anaphylaxis")]) for ex in examples(1)]
    corpus += [candidate_text(p) for p in PROTOCOLS]
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    config = LlamaConfig(vocab_size=raw.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                         tie_word_embeddings=True)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
