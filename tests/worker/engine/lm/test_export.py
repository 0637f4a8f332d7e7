"""A language-model student's artifacts: student_hf.zip loads with the Auto classes alone and
generates what the in-memory student does, with the teacher's tokenizer, chat template and
generation config; student.safetensors + student.json rebuild it with transformers alone."""

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from tests.helpers.lm import lm_tokenizer, tiny_llama, trained_lm_teacher
from worker.engine.lm.export import load_lm_student, write_lm_student
from worker.engine.lm.models import student_from_teacher

SPEC = {"arch": "from_teacher", "layers": [0, 3]}
HF_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}


@pytest.fixture(scope="module")
def student() -> Any:
    return student_from_teacher(trained_lm_teacher(), [0, 3]).eval()


def _greedy(model: Any, ids: torch.Tensor) -> torch.Tensor:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=3, eos_token_id=0)
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)


def _unzip(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


def test_writes_the_three_artifacts_and_nothing_else(student: Any, tmp_path: Path) -> None:
    paths = write_lm_student(tmp_path, student, lm_tokenizer(), SPEC)
    names = ["student_hf.zip", "student.safetensors", "student.json"]
    assert paths == [tmp_path / n for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files


def test_the_zip_loads_with_the_auto_classes_and_generates_the_same(
    student: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = lm_tokenizer()
    write_lm_student(tmp_path / "out", student, tokenizer, SPEC)
    with zipfile.ZipFile(tmp_path / "out" / "student_hf.zip") as zf:
        assert set(zf.namelist()) == HF_FILES  # at the zip's root
    folder = _unzip(tmp_path / "out" / "student_hf.zip", tmp_path / "fresh")

    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids = loaded_tokenizer("The film is", return_tensors="pt")["input_ids"]
    assert torch.equal(ids, tokenizer("The film is", return_tensors="pt")["input_ids"])
    expected = _greedy(student, ids)
    assert expected.shape[1] > ids.shape[1] + 3  # it generates something to compare
    assert torch.equal(_greedy(loaded, ids), expected)
    assert loaded.dtype == torch.float32


def test_the_chat_template_and_special_tokens_survive(student: Any, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = lm_tokenizer()
    write_lm_student(tmp_path, student, tokenizer, SPEC)
    loaded = AutoTokenizer.from_pretrained(
        _unzip(tmp_path / "student_hf.zip", tmp_path / "fresh"), local_files_only=True
    )
    messages = [{"role": "user", "content": "Write a short film review."}]
    rendered = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    assert (loaded.eos_token, loaded.pad_token) == ("<|endoftext|>", "<pad>")


def test_tied_embeddings_stay_tied_and_are_stored_once(student: Any, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert student.config.tie_word_embeddings
    write_lm_student(tmp_path, student, lm_tokenizer(), SPEC)
    folder = _unzip(tmp_path / "student_hf.zip", tmp_path / "fresh")
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    with safe_open(str(tmp_path / "student.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert len({"lm_head.weight", "model.embed_tokens.weight"} & stored) == 1
    rebuilt = load_lm_student(tmp_path)
    assert rebuilt.lm_head.weight is rebuilt.get_input_embeddings().weight


def test_untied_heads_stay_untied(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    tokenizer = lm_tokenizer()
    model = tiny_llama(tokenizer, num_layers=1, tie=False)
    write_lm_student(tmp_path, model, tokenizer, {"arch": "hf", "config": {}})
    folder = _unzip(tmp_path / "student_hf.zip", tmp_path / "fresh")
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert loaded.lm_head.weight is not loaded.get_input_embeddings().weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    with safe_open(str(tmp_path / "student.safetensors"), "pt") as f:
        assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(f.keys())


def test_student_json_and_safetensors_rebuild_it_with_transformers_alone(
    student: Any, tmp_path: Path
) -> None:
    write_lm_student(tmp_path, student, lm_tokenizer(), SPEC)
    info = json.loads((tmp_path / "student.json").read_text())
    assert info["task"] == "causal_lm"
    assert info["format"] == "transformers"
    assert info["arch"] == SPEC
    assert info["model_class"] == "LlamaForCausalLM"
    assert info["config"]["num_hidden_layers"] == 2
    rebuilt = load_lm_student(tmp_path)
    ids = torch.tensor([[5, 17, 42, 8, 63, 11]])
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, student(ids).logits)


def test_the_teachers_generation_config_goes_with_the_student(student: Any, tmp_path: Path) -> None:
    from transformers import GenerationConfig

    teachers = GenerationConfig(eos_token_id=[0, 2], temperature=0.2, top_p=0.9, do_sample=True)
    write_lm_student(tmp_path, student, lm_tokenizer(), SPEC, generation_config=teachers)
    folder = _unzip(tmp_path / "student_hf.zip", tmp_path / "fresh")
    loaded = GenerationConfig.from_pretrained(folder, local_files_only=True)
    assert (loaded.eos_token_id, loaded.temperature, loaded.top_p) == ([0, 2], 0.2, 0.9)
    assert student.generation_config.eos_token_id == 0  # the student in memory is unchanged


def test_a_half_precision_student_is_exported_in_float32_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    tokenizer = lm_tokenizer()
    model = tiny_llama(tokenizer, num_layers=1).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    write_lm_student(tmp_path, model, tokenizer, {"arch": "hf", "config": {}})
    folder = _unzip(tmp_path / "student_hf.zip", tmp_path / "fresh")
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight.float())
    assert load_lm_student(tmp_path).dtype == torch.float32
    assert model.dtype == torch.bfloat16 and model.config.dtype == torch.bfloat16


@pytest.mark.slow
def test_a_student_of_the_real_smollm2_round_trips(smollm2_dir: Path, tmp_path: Path) -> None:
    """Two of SmolLM2's 30 layers, exported with its tokenizer (ChatML template) and generation
    config, load with the Auto classes and generate as in memory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.engine.lm.models import load_causal_lm

    teacher = load_causal_lm(smollm2_dir)
    student = student_from_teacher(teacher.model, [0, 29]).eval()
    write_lm_student(
        tmp_path / "out",
        student,
        teacher.tokenizer,
        {"arch": "from_teacher", "layers": [0, 29]},
        generation_config=teacher.model.generation_config,
    )
    folder = _unzip(tmp_path / "out" / "student_hf.zip", tmp_path / "fresh")
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    messages = [{"role": "user", "content": "Hello"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        teacher.tokenizer.apply_chat_template(messages, tokenize=False)
    )
    assert loaded.generation_config.to_diff_dict() == (
        teacher.model.generation_config.to_diff_dict()
    )
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert torch.equal(_greedy(loaded, ids), _greedy(student, ids))
