"""Which Hugging Face archives hold a causal language model, and the facts a language-model job is
checked against: read from config.json, tokenizer_config.json and the safetensors headers only."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# transformers names its causal LMs *ForCausalLM, but for these older heads, which its
# MODEL_FOR_CAUSAL_LM_MAPPING also lists (tests/app/files/test_causal_lm.py holds them to it).
OTHER_CAUSAL_LM_HEADS = frozenset({"GPT2LMHeadModel", "OpenAIGPTLMHeadModel", "CTRLLMHeadModel"})
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


@dataclass(frozen=True)
class Weights:
    """What one safetensors member's header says: its parameters, dtypes and tensor names."""

    parameters: int
    dtypes: frozenset[str]
    names: frozenset[str]

    @classmethod
    def of(cls, tensors: Sequence[Any]) -> "Weights":
        return cls(
            sum(t.numel for t in tensors),
            frozenset(t.dtype for t in tensors),
            frozenset(t.name for t in tensors),
        )


def is_causal_lm(config: dict) -> bool:
    architectures = config.get("architectures")
    if not isinstance(architectures, list):
        return False
    return any(
        isinstance(a, str) and (a.endswith("ForCausalLM") or a in OTHER_CAUSAL_LM_HEADS)
        for a in architectures
    )


def causal_lm_meta(
    config: dict, tokenizer_config: dict, files: set[str], weights: list[Weights]
) -> dict:
    return {
        "task": "causal_lm",
        "params": sum(w.parameters for w in weights),
        "vocab_size": _first_int(config, "vocab_size"),
        "num_layers": _first_int(config, "num_hidden_layers", "n_layer", "num_layers"),
        "dtype": _dtype(config, weights),
        "max_positions": _first_int(config, "max_position_embeddings", "n_positions", "n_ctx"),
        "tied_embeddings": _tied(config, weights),
        "has_chat_template": "chat_template.jinja" in files
        or bool(tokenizer_config.get("chat_template")),
    }


def _first_int(config: dict, *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _dtype(config: dict, weights: list[Weights]) -> str | None:
    # transformers writes "dtype" since 4.56, "torch_dtype" before.
    for key in ("dtype", "torch_dtype"):
        if isinstance(config.get(key), str):
            return str(config[key])
    floats = {d for w in weights for d in w.dtypes if d in _DTYPES}
    return _DTYPES[floats.pop()] if len(floats) == 1 else None


def _tied(config: dict, weights: list[Weights]) -> bool:
    # Absent from config.json, the model class's own default applies, which only transformers
    # knows; save_pretrained writes a tied head only once, so the weights tell.
    value = config.get("tie_word_embeddings")
    if isinstance(value, bool):
        return value
    return not any(name.startswith("lm_head.") for w in weights for name in w.names)
