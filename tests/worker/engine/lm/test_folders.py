"""Model folders for language models (worker/engine/lm/folders.py): a tiny Llama as an
hf_archive, and the same model written as a GGUF file with the ``gguf`` package's writer (float32
tensors, the tokenizer and its chat template in the header), converted once and reused."""

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.lm import lm_tokenizer, tiny_llama
from worker.engine.errors import TeacherLoadError, UnsupportedInput
from worker.engine.lm import folders
from worker.engine.teacher_cache import file_sha256

GIB = 2**30


def write_gguf(model: Any, tokenizer: Any, path: Path) -> Path:
    """``model`` (a Llama) and ``tokenizer`` (byte-level BPE) as a float32 GGUF, laid out as
    llama.cpp's converter writes it (its names, q and k rows permuted per head)."""
    import gguf

    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    special = set(tokenizer.all_special_ids)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
            for i in range(len(tokens))
        ]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    heads = {"q_proj": c.num_attention_heads, "k_proj": c.num_key_value_heads}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        projection = name.split(".")[-2]
        if projection in heads:  # llama.cpp's rotary layout; transformers undoes it on load
            n = heads[projection]
            data = data.reshape(n, 2, data.shape[0] // n // 2, -1).swapaxes(1, 2)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        writer.add_tensor(new_name, np.ascontiguousarray(data.reshape(tensor.shape)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-layer Llama over the test tokenizer, as a model, a zipped folder and a GGUF file."""
    tokenizer = lm_tokenizer()
    model = tiny_llama(tokenizer, num_layers=2, hidden_size=32, intermediate=64, max_positions=64)
    root = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(root / "saved")
    tokenizer.save_pretrained(root / "saved")
    archive = root / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted((root / "saved").iterdir()):
            zf.write(file, f"tiny/{file.name}")
    gguf_path = write_gguf(model, tokenizer, root / "tiny.gguf")
    return {"model": model, "tokenizer": tokenizer, "archive": archive, "gguf": gguf_path}


def assert_same_model(folder: Path, tiny: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids = tiny["tokenizer"]("a fine, moving film", return_tensors="pt").input_ids
    assert torch.equal(tokenizer("a fine, moving film", return_tensors="pt").input_ids, ids)
    assert tokenizer.chat_template == tiny["tokenizer"].chat_template
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, tiny["model"](ids).logits)


class Conversions:
    """A spy on gguf_to_hf: counts the conversions that really run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.real = folders.gguf.gguf_to_hf
        monkeypatch.setattr(folders.gguf, "gguf_to_hf", self)

    def __call__(self, path: Path, dest: Path) -> Path:
        self.count += 1
        return self.real(path, dest)


def test_an_hf_archive_is_unpacked_into_the_work_dir(tiny: dict[str, Any], tmp_path: Path) -> None:
    folder = folders.lm_folder(tiny["archive"], "hf_archive", tmp_path / "work", None, None, GIB)

    assert folder == tmp_path / "work" / "archive" / "tiny"
    assert_same_model(folder, tiny)


def test_an_hf_archive_is_unpacked_within_the_bound(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(TeacherLoadError, match="unpack"):
        folders.lm_folder(tiny["archive"], "hf_archive", tmp_path / "work", None, None, 10_000)

    assert not (tmp_path / "work" / "archive").exists()


def test_a_gguf_is_converted_once_into_the_cache_and_reused(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversions, logs = Conversions(monkeypatch), []
    cache, sha256 = tmp_path / "cache", file_sha256(tiny["gguf"])

    def lm_folder(work: str) -> Path:
        return folders.lm_folder(
            tiny["gguf"], "gguf", tmp_path / work, cache, sha256, GIB, logs.append
        )

    first = lm_folder("job-1")
    written = {p: p.stat().st_mtime_ns for p in first.iterdir()}
    second = lm_folder("job-2")

    assert first == second == cache / "gguf" / sha256
    assert conversions.count == 1
    assert {p: p.stat().st_mtime_ns for p in second.iterdir()} == written
    assert [p.name for p in (cache / "gguf").iterdir()] == [sha256]  # nothing half-written left
    assert "Converted tiny.gguf" in logs[0] and "Reused" in logs[1]
    assert not (tmp_path / "job-1").exists() and not (tmp_path / "job-2").exists()
    assert_same_model(second, tiny)


def test_without_a_cache_a_gguf_is_converted_into_the_work_dir(
    tiny: dict[str, Any], tmp_path: Path
) -> None:
    folder = folders.lm_folder(tiny["gguf"], "gguf", tmp_path / "work", None, None, GIB)

    assert folder == tmp_path / "work" / "gguf"
    assert (folder / "config.json").is_file()


def test_a_conversion_that_fails_leaves_nothing_a_later_job_would_use(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(path: Path, dest: Path) -> Path:
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(folders.gguf, "gguf_to_hf", half_written)
    with pytest.raises(OSError, match="No space"):
        folders.lm_folder(tiny["gguf"], "gguf", tmp_path / "work", tmp_path / "cache", None, GIB)

    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def test_a_gguf_too_large_once_dequantized_is_refused_before_converting(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversions = Conversions(monkeypatch)
    bound = tiny["gguf"].stat().st_size // 2  # the f32 folder is about as big as this file

    with pytest.raises(UnsupportedInput) as refused:
        folders.lm_folder(tiny["gguf"], "gguf", tmp_path / "work", tmp_path / "cache", None, bound)

    assert refused.value.code == "unsupported_teacher"
    assert (
        "dequantizes to" in refused.value.message
        and "max_unpacked" in refused.value.message.lower()
    )
    assert conversions.count == 0


def test_a_truncated_gguf_is_a_clear_error(tiny: dict[str, Any], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny["gguf"].read_bytes()[:5000])

    with pytest.raises(TeacherLoadError, match="truncated"):
        folders.lm_folder(truncated, "gguf", tmp_path / "work", tmp_path / "cache", None, GIB)


def test_another_format_is_refused(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput, match="hf_archive, gguf"):
        folders.lm_folder(tiny["archive"], "safetensors", tmp_path / "work", None, None, GIB)
