"""Causal-LM teachers and students: depth pruning on three families, the vocabulary check, and
the real SmolLM2 GGUF turned into an ordinary model folder (plus the GGUF files it refuses)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.worker.engine.lm.conftest import tiny_causal_lm
from worker.engine.errors import ShapeMismatch, TeacherLoadError, UnsupportedInput
from worker.engine.lm.gguf import gguf_to_hf, inspect_gguf
from worker.engine.lm.models import (
    CausalLM,
    check_vocabularies,
    layer_prefix,
    load_causal_lm,
    save_causal_lm,
    student_from_teacher,
    vocabulary_difference,
)

FAMILIES = ["llama", "qwen2", "gpt2"]
PROMPT = torch.tensor([[5, 17, 42, 8, 63, 11]])


def _layer(model: Any, i: int) -> torch.nn.Module:
    return model.get_submodule(layer_prefix(model) + str(i))


# --- depth pruning -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_student_with_every_layer_gives_the_teachers_logits(family: str) -> None:
    teacher = tiny_causal_lm(family)
    student = student_from_teacher(teacher, [0, 1, 2, 3]).eval()
    with torch.no_grad():
        assert torch.equal(student(PROMPT).logits, teacher(PROMPT).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_student_layers_start_as_the_chosen_teacher_layers(family: str) -> None:
    teacher = tiny_causal_lm(family)
    student = student_from_teacher(teacher, [1, 3])
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2
    for i, source in enumerate([1, 3]):
        kept, original = _layer(student, i).state_dict(), _layer(teacher, source).state_dict()
        assert kept.keys() == original.keys()
        for name in kept:
            assert torch.equal(kept[name], original[name]), name
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert student.training


@pytest.mark.parametrize("family", FAMILIES)
def test_tied_embeddings_stay_tied_and_untied_stay_apart(family: str) -> None:
    teacher = tiny_causal_lm(family)
    student = student_from_teacher(teacher, [0, 2])
    teacher_ties = teacher.lm_head.weight is teacher.get_input_embeddings().weight
    assert teacher_ties == (family != "qwen2")  # the fixture ties llama and gpt2 only
    assert (student.lm_head.weight is student.get_input_embeddings().weight) == teacher_ties


@pytest.mark.parametrize("family", FAMILIES)
def test_a_half_depth_student_generates_with_its_own_cache_slots(family: str) -> None:
    teacher = tiny_causal_lm(family)
    student = student_from_teacher(teacher, [0, 3]).eval()
    attention = "attn" if family == "gpt2" else "self_attn"
    assert [getattr(_layer(student, i), attention).layer_idx for i in range(2)] == [0, 1]
    with torch.no_grad():
        out = student.generate(PROMPT, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, PROMPT.shape[1] + 4)
    assert torch.equal(out[:, : PROMPT.shape[1]], PROMPT)


def test_per_layer_config_lists_keep_the_kept_layers_entries() -> None:
    kinds = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    teacher = tiny_causal_lm("qwen2", layer_types=kinds, use_sliding_window=True, sliding_window=4)
    student = student_from_teacher(teacher, [0, 1, 3])
    assert student.config.layer_types == [
        "full_attention",
        "sliding_attention",
        "sliding_attention",
    ]
    with torch.no_grad():
        student.eval()(PROMPT)


# --- loading from a folder ---------------------------------------------------------------------


def test_a_saved_student_loads_back_as_an_ordinary_model(tmp_path: Path, smollm2_tokenizer) -> None:
    model = tiny_causal_lm("llama", vocab_size=len(smollm2_tokenizer))
    save_causal_lm(CausalLM(model, smollm2_tokenizer), tmp_path)
    loaded = load_causal_lm(tmp_path)
    assert loaded.num_layers == 4 and not loaded.model.training
    assert loaded.tokenizer.chat_template == smollm2_tokenizer.chat_template
    with torch.no_grad():
        assert torch.equal(loaded.model(PROMPT).logits, model(PROMPT).logits)


def test_a_classifier_folder_is_not_a_causal_lm(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path)
    with pytest.raises(TeacherLoadError, match="not a causal language model"):
        load_causal_lm(tmp_path)


def test_a_folder_asking_for_remote_code_is_refused(tmp_path: Path) -> None:
    tiny_causal_lm("llama").config.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(TeacherLoadError, match="auto_map"):
        load_causal_lm(tmp_path)


# --- vocabularies ------------------------------------------------------------------------------


def test_vocabulary_difference_counts_changed_and_missing_ids() -> None:
    assert vocabulary_difference(["a", "b", "c"], ["a", "b", "c"]) is None
    difference = vocabulary_difference(["a", "b", "c", "d"], ["a", "x", "c"])
    assert difference is not None
    assert (difference.differing, difference.positions) == (2, (1, 3))
    assert "2 token ids differ, at ids 1, 3." in difference.message
    many = vocabulary_difference([str(i) for i in range(20)], ["?"] * 20, shown=3)
    assert many is not None and many.positions == (0, 1, 2) and "0, 1, 2, ..." in many.message


def test_padding_rows_past_the_tokenizer_do_not_count(smollm2_tokenizer) -> None:
    tokenizer = smollm2_tokenizer
    exact = CausalLM(tiny_causal_lm("llama", vocab_size=len(tokenizer)), tokenizer)
    padded = CausalLM(tiny_causal_lm("qwen2", vocab_size=len(tokenizer) + 64), tokenizer)
    check_vocabularies(exact, padded)
    check_vocabularies(padded, exact)


def test_an_embedding_shorter_than_its_tokenizer_is_a_mismatch(smollm2_tokenizer) -> None:
    tokenizer = smollm2_tokenizer
    exact = CausalLM(tiny_causal_lm("llama", vocab_size=len(tokenizer)), tokenizer)
    short = CausalLM(tiny_causal_lm("llama", vocab_size=len(tokenizer) - 8), tokenizer)
    with pytest.raises(ShapeMismatch, match="student's embedding has 49,144 rows") as raised:
        check_vocabularies(exact, short)
    assert raised.value.code == "vocabulary_mismatch"


def test_tokens_at_other_ids_are_a_mismatch_saying_where(
    smollm2_tokenizer, swapped_tokenizer
) -> None:
    other = swapped_tokenizer([(500, 501), (7000, 9000), (40000, 49151)])
    model = tiny_causal_lm("llama", vocab_size=len(smollm2_tokenizer))
    with pytest.raises(ShapeMismatch) as raised:
        check_vocabularies(CausalLM(model, smollm2_tokenizer), CausalLM(model, other))
    assert raised.value.code == "vocabulary_mismatch"
    assert "6 token ids differ, at ids 500, 501, 7000, 9000, 40000, ..." in raised.value.message


# --- the real SmolLM2 GGUF ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_gguf_becomes_an_ordinary_float_folder(
    smollm2_gguf: Path, smollm2_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    facts = inspect_gguf(smollm2_gguf)
    assert facts.architecture == "llama" and "Q4_1" in facts.quantizations
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["vocab_size"]) == (30, 49152)

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False
    )
    dequantized = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, dequantized(ids).logits)

    student = student_from_teacher(model, list(range(0, 30, 2))).eval()
    assert student.config.num_hidden_layers == 15
    with torch.no_grad():
        out = student.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


def _copy_with(source: Path, dest: Path, *, keep: int | None = None) -> Path:
    with source.open("rb") as src, dest.open("wb") as dst:
        if keep is None:
            shutil.copyfileobj(src, dst)
        else:
            dst.write(src.read(keep))
    return dest


@pytest.mark.parametrize("fraction", [0.001, 0.6])
def test_a_truncated_gguf_is_a_load_error_and_writes_nothing(
    smollm2_gguf: Path, tmp_path: Path, fraction: float
) -> None:
    cut = _copy_with(
        smollm2_gguf, tmp_path / "cut.gguf", keep=int(smollm2_gguf.stat().st_size * fraction)
    )
    with pytest.raises(TeacherLoadError, match="not a complete GGUF file") as raised:
        gguf_to_hf(cut, tmp_path / "model")
    assert raised.value.code == "teacher_load_failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


def test_a_file_that_is_not_gguf_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(TeacherLoadError, match="not a GGUF file"):
        inspect_gguf(path)


@pytest.mark.parametrize(("type_id", "name"), [(9, "Q8_1"), (99, "id 99")])
def test_an_unknown_quantization_is_unsupported(
    smollm2_gguf: Path, tmp_path: Path, type_id: int, name: str
) -> None:
    """Q8_1 is a type gguf knows but cannot dequantize; 99 is no type at all."""
    import gguf

    field = gguf.GGUFReader(smollm2_gguf).tensors[0].field
    # A tensor's info: name length, name, dimension count, dimensions, type, data offset.
    type_offset = field.offset + sum(int(part.nbytes) for part in field.parts[:4])
    path = _copy_with(smollm2_gguf, tmp_path / "odd.gguf")
    with path.open("r+b") as f:
        f.seek(type_offset)
        f.write(type_id.to_bytes(4, "little"))
    with pytest.raises(UnsupportedInput, match=f"quantization type {name},") as raised:
        inspect_gguf(path)
    assert raised.value.code == "unsupported_teacher"
