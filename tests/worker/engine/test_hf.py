"""Hugging Face teachers and students: safe extraction of untrusted archives, loading, features,
students built or cut from the teacher, and their artifacts."""

import copy
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from jobspec import FromTeacherArch
from tests.helpers.text import save_hf_folder, write_hf_archive
from worker.engine import hf, text
from worker.engine.errors import TeacherLoadError, UnsupportedInput
from worker.engine.students import plan_student
from worker.engine.teacher import Teacher

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MB = 2**20


@pytest.fixture(scope="session")
def loaded(teacher_zip, tmp_path_factory) -> hf.HFTeacherBundle:
    return hf.load_hf_archive(teacher_zip, tmp_path_factory.mktemp("work"), torch.device("cpu"))


@pytest.fixture(scope="session")
def batch(trained) -> torch.Tensor:
    _, tokenizer, texts, _ = trained
    return text.tokenize(texts[:6], tokenizer, max_length=48)


def _reference_logits(model, x: torch.Tensor) -> torch.Tensor:
    ids, mask = text.unpack(x)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# --- crafted archives --------------------------------------------------------------------------


def _zip(path: Path, members: Mapping[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertForSequenceClassification"]})


def _extract_refused(archive: Path, tmp_path: Path, match: str, limit: int = 100 * MB):
    dest = tmp_path / "dest"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(TeacherLoadError, match=match) as info:
        hf.extract_archive(archive, dest, limit)
    assert info.value.code == "teacher_load_failed"
    # Nothing written anywhere: dest (created by the call) is gone and nothing else appeared.
    assert set(tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "evil").exists()
    return info.value


def test_zip_slip_is_refused(tmp_path: Path):
    archive = _zip(tmp_path / "a.zip", {"config.json": CONFIG, "../evil": b"x"})
    _extract_refused(archive, tmp_path, "points outside its folder")


def test_backslash_zip_slip_is_refused(tmp_path: Path):
    archive = _zip(tmp_path / "a.zip", {"config.json": CONFIG, "model\\..\\..\\evil": b"x"})
    _extract_refused(archive, tmp_path, "points outside its folder")


def test_absolute_paths_are_refused(tmp_path: Path):
    archive = _zip(tmp_path / "a.zip", {"config.json": CONFIG, "/tmp/evil": b"x"})
    _extract_refused(archive, tmp_path, "absolute path")
    info = tarfile.TarInfo("/tmp/evil")
    archive = _tar(tmp_path / "a.tar.gz", [info], {"/tmp/evil": b"x"})
    _extract_refused(archive, tmp_path, "absolute path")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_tar_links_and_devices_are_refused(tmp_path: Path, kind: bytes):
    config = tarfile.TarInfo("model/config.json")
    link = tarfile.TarInfo("model/model.safetensors")
    link.type, link.linkname = kind, "/etc/passwd"
    archive = _tar(tmp_path / "a.tar.gz", [config, link], {"model/config.json": CONFIG.encode()})
    _extract_refused(archive, tmp_path, "is a (link|device or special file)")


def test_zip_symlinks_are_refused(tmp_path: Path):
    info = zipfile.ZipInfo("model.safetensors")
    info.external_attr = (0o120777) << 16  # S_IFLNK
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("config.json", CONFIG)
        zf.writestr(info, "/etc/passwd")
    _extract_refused(tmp_path / "a.zip", tmp_path, "is a link")


def test_oversize_by_declared_size_is_refused(tmp_path: Path):
    archive = _zip(tmp_path / "a.zip", {"config.json": CONFIG, "model.safetensors": bytes(3 * MB)})
    _extract_refused(archive, tmp_path, "unpacks to 3145.* bytes, more than the 1048576", MB)


def test_oversize_by_actual_bytes_is_refused(tmp_path: Path):
    """A zip bomb that lies in its headers: 8 MB of zeros declared as 1 KB."""
    archive = _zip(tmp_path / "a.zip", {"config.json": CONFIG, "model.safetensors": bytes(8 * MB)})
    raw = bytearray(archive.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local header, central directory entry
        start = 0
        while (at := raw.find(header, start)) >= 0:
            size_at = at + (22 if header == b"PK\x03\x04" else 24)
            if int.from_bytes(raw[size_at : size_at + 4], "little") == 8 * MB:
                raw[size_at : size_at + 4] = (1024).to_bytes(4, "little")
            start = at + 4
    archive.write_bytes(bytes(raw))
    # zipfile stops at the declared size and then fails the CRC; either way nothing big lands.
    _extract_refused(archive, tmp_path, "damaged zip|more than the", 4 * MB)


def test_the_byte_counter_stops_a_stream_longer_than_declared():
    out = io.BytesIO()
    with pytest.raises(TeacherLoadError, match="headers understate"):
        hf.copy_limited(io.BytesIO(bytes(5 * MB)), out, [2 * MB], 2 * MB)
    assert out.tell() <= 2 * MB


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused(tmp_path: Path, name: str):
    config = {"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}}
    members: dict[str, str | bytes] = {
        "m/config.json": CONFIG,
        "m/model.safetensors": b"",
        f"m/{name}": json.dumps(config),
    }
    error = _extract_refused(_zip(tmp_path / "a.zip", members), tmp_path, "auto_map")
    assert "trust_remote_code" in error.message and "never enables" in error.message


def test_python_files_are_refused(tmp_path: Path):
    members: dict[str, str | bytes] = {
        "m/config.json": CONFIG,
        "m/model.safetensors": b"",
        "m/modeling_evil.py": b"1",
    }
    error = _extract_refused(_zip(tmp_path / "a.zip", members), tmp_path, "Python code")
    assert "trust_remote_code" in error.message


def test_pickled_weights_are_refused(tmp_path: Path):
    members: dict[str, str | bytes] = {"m/config.json": CONFIG, "m/pytorch_model.bin": b"\x80\x02."}
    error = _extract_refused(_zip(tmp_path / "a.zip", members), tmp_path, "pickled weights")
    assert "safe_serialization=True" in error.message


def test_folders_without_config_or_safetensors_are_refused(tmp_path: Path):
    _extract_refused(_zip(tmp_path / "a.zip", {"m/x.txt": b""}), tmp_path, "no config.json")
    two = {"a/config.json": CONFIG, "b/config.json": CONFIG}
    _extract_refused(_zip(tmp_path / "b.zip", two), tmp_path, "no config.json")
    bare = {"m/config.json": CONFIG}
    _extract_refused(_zip(tmp_path / "c.zip", bare), tmp_path, "no model.safetensors")
    (tmp_path / "d.zip").write_bytes(b"not an archive")
    _extract_refused(tmp_path / "d.zip", tmp_path, "neither a zip nor a tar")


# --- loading real archives ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "top"), [("zip", "model"), ("zip", None), ("tar", "model")])
def test_a_real_archive_loads_with_the_same_logits(trained, batch, tmp_path, kind, top):
    model, tokenizer, _, _ = trained
    archive = write_hf_archive(model, tokenizer, tmp_path / f"t.{kind}", kind=kind, top_folder=top)
    bundle = hf.load_hf_archive(archive, tmp_path / "work", torch.device("cpu"))
    assert bundle.model_dir == tmp_path / "work" / "hf_teacher" / (top or "")
    assert not bundle.model.training
    with torch.no_grad():
        got = bundle.model(batch)
    assert got.dtype == torch.float32 and got.shape == (6, 2)
    torch.testing.assert_close(got, _reference_logits(model, batch), atol=1e-5, rtol=1e-5)
    assert bundle.tokenizer(["a fine film"])["input_ids"] == tokenizer(["a fine film"])["input_ids"]
    # Loading again into the same work_dir (a resumed job) extracts afresh.
    again = hf.load_hf_archive(archive, tmp_path / "work", torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(again.model(batch), got)


def test_an_archive_without_a_tokenizer_is_refused(trained, tmp_path):
    model, _, _, _ = trained
    model.save_pretrained(tmp_path / "m")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        for file in (tmp_path / "m").iterdir():
            zf.write(file, f"m/{file.name}")
    with pytest.raises(TeacherLoadError, match="must carry their tokenizer"):
        hf.load_hf_archive(tmp_path / "a.zip", tmp_path / "work", torch.device("cpu"))


def test_a_model_that_is_not_a_classifier_is_refused(trained, tmp_path):
    from transformers import BertModel

    model, tokenizer, _, _ = trained
    base = BertModel(model.config)
    archive = write_hf_archive(base, tokenizer, tmp_path / "a.zip")
    with pytest.raises(TeacherLoadError, match="BertModel, not a sequence-classification"):
        hf.load_hf_archive(archive, tmp_path / "work", torch.device("cpu"))


def test_features_show_every_layer_and_attention(loaded, batch):
    model = loaded.model
    assert model.num_layers == 4 and len(model.layer_list()) == 4
    with torch.no_grad():
        features = model.forward_features(batch)
        logits = model(batch)
    torch.testing.assert_close(features.logits, logits)
    B, L = batch.shape[0], batch.shape[2]
    assert len(features.hidden) == 4
    assert all(h.shape == (B, L, 64) for h in features.hidden)
    assert features.attentions is not None and len(features.attentions) == 4
    for attention in features.attentions:
        assert attention.shape == (B, 2, L, L)
        torch.testing.assert_close(attention.sum(-1), torch.ones(B, 2, L))
    assert features.mask is not None and torch.equal(features.mask, text.unpack(batch)[1])
    # Padding gets no attention; the last hidden state is the last layer's output, not embeddings.
    padded = features.mask == 0
    assert padded.any()
    for attention in features.attentions:
        assert attention[padded[:, None, None, :].expand_as(attention)].abs().max() < 1e-6
    ids, mask = text.unpack(batch)
    with torch.no_grad():
        out = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(features.hidden[-1], out.hidden_states[-1])
    torch.testing.assert_close(features.hidden[0], out.hidden_states[1])


# --- students ----------------------------------------------------------------------------------


def test_student_from_teacher_copies_the_chosen_layers(loaded, batch):
    teacher = loaded.model
    student = hf.student_from_teacher(teacher, [0, 2])
    assert student.num_layers == 2 and teacher.num_layers == 4
    assert student.training and all(p.requires_grad for p in student.parameters())
    for i, source in enumerate([0, 2]):
        mine = student.layer_list()[i].state_dict()
        theirs = teacher.layer_list()[source].state_dict()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
    teacher_weights = teacher.state_dict()
    for key, value in student.state_dict().items():
        if ".encoder.layer." not in key:
            assert torch.equal(value, teacher_weights[key]), key
    with torch.no_grad():
        assert student.eval()(batch).shape == (6, 2)


def test_layers_the_teacher_lacks_are_refused(loaded):
    # Empty, negative and unordered lists are the spec's to refuse (tests/jobspec/test_layers.py).
    teacher = Teacher(copy.deepcopy(loaded.model), "hf_archive", tokenizer=loaded.tokenizer)
    arch = FromTeacherArch(arch="from_teacher", layers=[0, 4])
    with pytest.raises(UnsupportedInput, match=r"student\.layers names teacher layer 4") as info:
        plan_student(arch, teacher, (2, 48), 2)
    assert info.value.code == "unsupported_arch"
    assert "the teacher has 4 layers (0 to 3)" in info.value.message


SMALL = {
    "model_type": "bert",
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def test_build_hf_student_fits_the_tokenizer_and_teacher(loaded, batch):
    teacher = loaded.model
    student = hf.build_hf_student(
        SMALL | {"max_position_embeddings": 16}, loaded.tokenizer, 3, teacher.config
    )
    config = student.config
    assert config.vocab_size == len(loaded.tokenizer)
    assert config.pad_token_id == loaded.tokenizer.pad_token_id
    assert config.num_labels == 3 and config.num_hidden_layers == 2
    assert config.max_position_embeddings == teacher.config.max_position_embeddings
    with torch.no_grad():
        features = student.forward_features(batch)
    assert features.logits.shape == (6, 3) and len(features.hidden) == 2
    assert features.attentions is not None and len(features.attentions) == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SMALL | {"model_type": "not-a-model"}, "model_type must be a transformers model"),
        ({"num_hidden_layers": 2}, "got None"),
        (SMALL | {"model_type": "gpt2-but-no"}, "e.g. bert, distilbert"),
        (SMALL | {"auto_map": {"AutoModel": "x.Y"}}, "may not set auto_map"),
        (SMALL | {"trust_remote_code": True}, "may not set trust_remote_code"),
        (SMALL | {"hidden_size": 30, "num_attention_heads": 4}, "transformers refused"),
    ],
)
def test_build_hf_student_refuses_bad_configs(loaded, config, message):
    with pytest.raises(UnsupportedInput, match=message) as info:
        hf.build_hf_student(config, loaded.tokenizer, 2)
    assert info.value.code == "unsupported_arch"


# Builds a small student first (so every module is loaded), then bounds the address space to
# what the process holds plus 512 MiB, as the worker's RLIMIT_AS bounds a CPU job.
_BUILD_UNDER_A_MEMORY_BOUND = textwrap.dedent(
    """
    import json, resource, sys
    from tests.helpers.text import build_tokenizer
    from worker.engine import hf
    from worker.engine.errors import EngineError

    small, big = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    tokenizer = build_tokenizer(["a fine film", "a dull film"] * 20, vocab_size=100)
    hf.build_hf_student(small, tokenizer, 2)
    with open("/proc/self/statm") as f:
        held = int(f.read().split()[0]) * resource.getpagesize()
    bound = held + 512 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (bound, bound))
    try:
        hf.build_hf_student(big, tokenizer, 2)
    except EngineError as e:
        print(json.dumps({"code": e.code, "message": e.message}))
    """
)


def test_a_student_too_big_for_memory_is_out_of_memory_not_unsupported():
    # One feed-forward layer of 1024 x 2^22 float32 weights is 16 GiB.
    big = SMALL | {"hidden_size": 1024, "num_attention_heads": 8, "intermediate_size": 2**22}
    child = subprocess.run(
        [sys.executable, "-c", _BUILD_UNDER_A_MEMORY_BOUND, json.dumps(SMALL), json.dumps(big)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    error = json.loads(child.stdout.strip().splitlines()[-1])
    assert error["code"] == "out_of_memory", error
    assert "too big for this worker's memory" in error["message"]


def test_config_dict_and_state_dict_rebuild_the_student(loaded, batch):
    torch.manual_seed(0)
    student = hf.build_hf_student(SMALL, loaded.tokenizer, 2).eval()
    config = json.loads(json.dumps(hf.hf_config_dict(student)))  # plain JSON, as in student.json
    rebuilt = hf.rebuild_hf(config).eval()
    state = student.state_dict()
    assert all(key.startswith("model.") for key in state)
    rebuilt.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), student(batch))
    with pytest.raises(UnsupportedInput, match="auto_map"):
        hf.rebuild_hf(config | {"auto_map": {}})


# --- artifacts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(loaded, tmp_path_factory):
    torch.manual_seed(0)
    student = hf.student_from_teacher(loaded.model, [1, 3]).eval()
    out = tmp_path_factory.mktemp("out")
    paths = hf.write_hf_student(out, student, loaded.tokenizer)
    return student, out, paths


def test_write_hf_student_writes_both_files_and_no_temporaries(written):
    _, out, paths = written
    assert paths == [out / "student_hf.zip", out / "student.pt"]
    assert sorted(p.name for p in out.iterdir()) == ["student.pt", "student_hf.zip"]


def test_the_zip_loads_with_auto_classes(written, loaded, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    student, out, _ = written
    with zipfile.ZipFile(out / "student_hf.zip") as zf:
        assert not [n for n in zf.namelist() if n.endswith((".bin", ".py"))]
        zf.extractall(tmp_path)  # our own file, so extractall is fine here
    folder = tmp_path / "student_hf"
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    x = text.tokenize(
        ["a fine film", "the plot is a mess and so is everything else"], tokenizer, 32
    )
    assert torch.equal(
        x,
        text.tokenize(
            ["a fine film", "the plot is a mess and so is everything else"], loaded.tokenizer, 32
        ),
    )
    with torch.no_grad():
        torch.testing.assert_close(_reference_logits(model.eval(), x), student(x))
    # And the worker's own loader accepts it as a teacher.
    bundle = hf.load_hf_archive(out / "student_hf.zip", tmp_path / "work", torch.device("cpu"))
    assert bundle.model.num_layers == 2


def test_the_torchscript_runs_other_batch_sizes_and_lengths(written, trained):
    student, out, _ = written
    _, tokenizer, texts, _ = trained
    scripted = torch.jit.load(str(out / "student.pt"))
    for size, length in [(1, 5), (7, 40), (4, 64)]:
        x = text.tokenize(texts[10 : 10 + size], tokenizer, max_length=length)
        ids, mask = text.unpack(x)
        with torch.no_grad():
            torch.testing.assert_close(scripted(ids, mask), student(x), atol=1e-5, rtol=1e-5)


def test_write_hf_student_leaves_no_half_written_file(loaded, tmp_path, monkeypatch):
    student = hf.student_from_teacher(loaded.model, [0])

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf.jit, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        hf.write_hf_student(tmp_path, student, loaded.tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student_hf.zip"]


def test_save_hf_folder_writes_safetensors_only(trained, tmp_path):
    model, tokenizer, _, _ = trained
    folder = save_hf_folder(model, tokenizer, tmp_path / "m")
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt"))]


FAMILIES = {
    "distilbert": {"model_type": "distilbert", "n_layers": 3, "dim": 32, "n_heads": 2},
    "roberta": SMALL | {"model_type": "roberta", "num_hidden_layers": 3},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_other_families_build_cut_rebuild_and_trace(family, loaded, batch, tmp_path):
    """Layers are found by shape, not by bert's attribute names; the whole student path works."""
    torch.manual_seed(0)
    built = hf.build_hf_student(FAMILIES[family], loaded.tokenizer, 2).eval()
    assert built.num_layers == 3 and len(built.layer_list()) == 3
    cut = hf.student_from_teacher(built, [0, 2]).eval()
    for i, source in enumerate([0, 2]):
        for key, value in cut.layer_list()[i].state_dict().items():
            assert torch.equal(value, built.layer_list()[source].state_dict()[key])
    rebuilt = hf.rebuild_hf(json.loads(json.dumps(hf.hf_config_dict(cut)))).eval()
    rebuilt.load_state_dict(cut.state_dict(), strict=True)
    with torch.no_grad():
        features = cut.forward_features(batch)
        torch.testing.assert_close(rebuilt(batch), features.logits)
    assert len(features.hidden) == 2 and features.attentions is not None
    _, pt = hf.write_hf_student(tmp_path, cut, loaded.tokenizer)
    ids, mask = text.unpack(batch[:4, :, :30])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(pt))(ids, mask), cut(batch[:4, :, :30]))
