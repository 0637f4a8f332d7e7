"""Hugging Face archives of causal language models: recognised at upload with the facts a
language-model job is checked against, read from the configs and safetensors headers only."""

import json
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from app.files.formats import UnsafeFile, detect
from app.files.formats.causal_lm import OTHER_CAUSAL_LM_HEADS

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def _llama(**config: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    settings = {
        "vocab_size": 96,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
    }
    return LlamaForCausalLM(LlamaConfig(**(settings | config)))


def _archive(folder: Path, path: Path, container: str) -> Path:
    if container == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for f in sorted(folder.rglob("*")):
                zf.write(f, f"model/{f.relative_to(folder)}")
    else:
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, "model")
    return path


def _saved(model: torch.nn.Module, tmp_path: Path, **save: object) -> Path:
    folder = tmp_path / "saved"
    model.save_pretrained(folder, **save)  # type: ignore[operator]
    return folder


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_a_llama_archive_is_a_causal_lm(tmp_path: Path, container: str) -> None:
    model = _llama(torch_dtype="bfloat16").to(torch.bfloat16)
    folder = _saved(model, tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    meta = detect(_archive(folder, tmp_path / "m", container), "teacher").meta
    assert meta["task"] == "causal_lm"
    assert meta["architectures"] == ["LlamaForCausalLM"]
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert (meta["vocab_size"], meta["num_layers"], meta["max_positions"]) == (96, 3, 64)
    assert (meta["dtype"], meta["tied_embeddings"], meta["has_chat_template"]) == (
        "bfloat16",
        False,
        True,
    )


def test_shards_are_counted_together(tmp_path: Path) -> None:
    model = _llama(tie_word_embeddings=True)
    folder = _saved(model, tmp_path, max_shard_size="20KB")
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    meta = detect(_archive(folder, tmp_path / "m.zip", "zip"), "teacher").meta
    # A tied head is stored once, and counted once, as parameters() counts it.
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert (meta["tied_embeddings"], meta["has_chat_template"]) == (True, True)


def test_gpt2_names_its_head_differently(tmp_path: Path) -> None:
    config = GPT2Config(
        vocab_size=50,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    folder = _saved(GPT2LMHeadModel(config), tmp_path)
    config_json = json.loads((folder / "config.json").read_text())
    for key in ("dtype", "torch_dtype", "tie_word_embeddings"):  # the tensors then tell
        config_json.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config_json))
    meta = detect(_archive(folder, tmp_path / "m.zip", "zip"), "teacher").meta
    assert meta["task"] == "causal_lm"
    assert (meta["vocab_size"], meta["num_layers"], meta["max_positions"]) == (50, 2, 32)
    assert (meta["dtype"], meta["tied_embeddings"], meta["has_chat_template"]) == (
        "float32",
        True,
        False,
    )


def test_the_other_causal_lm_heads_are_transformers_own() -> None:
    heads = {
        h
        for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
        for h in ([v] if isinstance(v, str) else v)
    }
    assert OTHER_CAUSAL_LM_HEADS.issubset(heads)


def test_a_classifier_archive_stays_a_classifier(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    config = {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(2, 2)}, folder / "model.safetensors")
    meta = detect(_archive(folder, tmp_path / "m.zip", "zip"), "teacher").meta
    assert meta["task"] == "classification"
    assert "vocab_size" not in meta


def test_a_causal_lm_asking_for_remote_code_is_refused(tmp_path: Path) -> None:
    folder = _saved(_llama(), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.MyLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeFile, match="trust_remote_code"):
        detect(_archive(folder, tmp_path / "m.zip", "zip"), "teacher")
