"""Hugging Face sequence classifiers for the engine: teachers from uploaded archives, students
built from a config or cut from the teacher, and the student's artifacts.

The upload-time detector (app/files/formats/hf.py) already refuses pickles and remote code, but
the archive is untrusted and the worker may see files the API never checked, so this module
checks again: it extracts member by member itself, and loads with ``local_files_only=True`` and
``trust_remote_code=False`` only.

Models take the packed text tensor of ``worker.engine.text`` (``(B, 2, L)``: ids and mask).
"""

import copy
import json
import re
import shutil
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from file_rules.archives import ArchiveListing, ArchiveRefused, check_model_file, data_filtered
from file_rules.remote_code import CONFIG_FILES, remote_code_keys
from file_rules.remote_code import REMOTE_CODE_KEYS as _BANNED_KEYS
from worker.engine import jit
from worker.engine.artifacts import atomic_write
from worker.engine.errors import (
    OutOfMemory,
    TeacherLoadError,
    UnsupportedInput,
    is_out_of_memory,
    last_line,
)
from worker.engine.features import Features
from worker.engine.text import unpack

_SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
_EXAMPLE_TYPES = "bert, distilbert, roberta, electra, albert, deberta-v2"
_CHUNK = 1 << 20


# --- the model ---------------------------------------------------------------------------------


class HFClassifier(nn.Module):
    """A transformers sequence classifier behind the engine's interface: packed ``x`` in,
    float ``(B, K)`` logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = unpack(x)
        return self.model(input_ids=ids, attention_mask=mask).logits.float()

    def forward_features(self, x: torch.Tensor) -> Features:
        ids, mask = unpack(x)
        out = self.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
        # hidden_states[0] is the embeddings; layer i's output is hidden_states[i + 1].
        return Features(
            logits=out.logits.float(),
            hidden=list(out.hidden_states[1:]),
            attentions=list(out.attentions),
            mask=mask,
        )

    def layer_list(self) -> nn.ModuleList:
        return _layers(self.model)[1]


def _layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's layers, found by shape rather than by name, which differs by family
    (bert.encoder.layer, distilbert.transformer.layer, ...)."""
    config: Any = model.config
    count = config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise UnsupportedInput(
        f"Could not find the {count} transformer layers of this {config.model_type} model; "
        f"layer-wise distillation supports models with one list of layers ({_EXAMPLE_TYPES}).",
        code="unsupported_arch",
    )


# --- teachers from archives --------------------------------------------------------------------


@dataclass
class HFTeacherBundle:
    model: HFClassifier
    tokenizer: Any
    model_dir: Path


def load_hf_archive(
    path: Path, work_dir: Path, device: torch.device, max_unpacked_bytes: int = 4 * 2**30
) -> HFTeacherBundle:
    """Extract ``path`` under ``work_dir`` and load the classifier and tokenizer in it, in eval
    mode on ``device``."""
    quiet_transformers()
    dest = work_dir / "hf_teacher"
    # A resumed job finds the previous attempt's copy; extract afresh rather than trust it.
    shutil.rmtree(dest, ignore_errors=True)
    model_dir = extract_archive(path, dest, max_unpacked_bytes)
    tokenizer = _load_tokenizer(model_dir)
    model = _load_classifier(model_dir)
    return HFTeacherBundle(HFClassifier(model).to(device).eval(), tokenizer, model_dir)


def quiet_transformers() -> None:
    """No progress bars or info lines from transformers in a worker's log: the job's events say
    what happens."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load_classifier(model_dir: Path) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    config = read_config(model_dir)
    _require_classifier(config)
    try:
        # float32: the engine computes in float32, and half-precision CPU inference is slow or
        # missing; eager attention: the sdpa kernels do not return attention probabilities.
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
            attn_implementation="eager",
            output_loading_info=True,
        )
    except Exception as e:
        raise TeacherLoadError(
            f"Could not load the Hugging Face model in the archive: {last_line(e)}"
        ) from e
    if info.get("missing_keys"):
        # A base model loaded as a classifier gets a random head: its logits would mean nothing.
        raise TeacherLoadError(
            "The archive's weights lack "
            f"{_names(info['missing_keys'])}, so the classifier would be randomly initialised; "
            "save the fine-tuned AutoModelForSequenceClassification model itself."
        )
    return model


def _require_classifier(config: Any) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise TeacherLoadError(
            f"The archive holds a {', '.join(architectures)}, not a sequence-classification "
            "model; distillation needs a model that outputs class logits "
            "(AutoModelForSequenceClassification)."
        )
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise TeacherLoadError(
            f"transformers has no sequence-classification model for model_type "
            f"{config.model_type!r}; supported types include {_EXAMPLE_TYPES}."
        )


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise TeacherLoadError(
            "The archive has no tokenizer; text teachers must carry their tokenizer: save it "
            "with tokenizer.save_pretrained into the same folder."
        )
    try:
        return AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except Exception as e:
        raise TeacherLoadError(
            f"Could not load the tokenizer in the archive: {last_line(e)}"
        ) from e


# --- safe extraction ---------------------------------------------------------------------------


@dataclass
class _Member:
    name: str  # normalised relative posix path
    size: int  # as declared in the archive
    is_dir: bool
    open: Callable[[], IO[bytes]]


def extract_archive(path: Path, dest: Path, max_unpacked_bytes: int) -> Path:
    """Extract a zip or tar(.gz) of a model directory into ``dest``; return the folder holding
    config.json. Every member is checked before any byte is written; on failure ``dest`` is
    removed if this call created it."""
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _members(path, max_unpacked_bytes) as members:
            _check_members(members)
            _write_members(members, dest, max_unpacked_bytes)
        model_dir = _model_dir(dest, [m.name for m in members])
        refuse_remote_code(model_dir)
        return model_dir
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


@contextmanager
def _members(path: Path, max_unpacked_bytes: int) -> Iterator[list[_Member]]:
    listing = ArchiveListing(max_unpacked_bytes)
    try:
        if zipfile.is_zipfile(path):
            zip_errors = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError)
            with _damaged(path, "zip", *zip_errors), zipfile.ZipFile(path) as zf:
                yield [_zip_member(zf, info, listing) for info in zf.infolist()]
        elif tarfile.is_tarfile(path):
            tar_errors = (tarfile.TarError, EOFError, OSError)
            with _damaged(path, "tar", *tar_errors), tarfile.open(path, "r:*") as tar:
                yield [_tar_member(tar, member, listing) for member in tar.getmembers()]
        else:
            raise TeacherLoadError(
                f"{path.name} is neither a zip nor a tar archive; zip or tar the folder written "
                "by model.save_pretrained and tokenizer.save_pretrained."
            )
    except ArchiveRefused as e:
        raise TeacherLoadError(str(e)) from e


@contextmanager
def _damaged(path: Path, kind: str, *errors: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except errors as e:
        raise TeacherLoadError(f"{path.name} is a damaged {kind} archive: {e}.") from e


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, listing: ArchiveListing) -> _Member:
    link = stat.S_ISLNK(info.external_attr >> 16)
    name = listing.admit(info.filename, info.file_size, is_dir=info.is_dir(), link=link)
    return _Member(name, info.file_size, info.is_dir(), lambda: zf.open(info))


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, listing: ArchiveListing) -> _Member:
    link = member.issym() or member.islnk()
    special = not (member.isreg() or member.isdir() or link)
    name = listing.admit(
        member.name, member.size, is_dir=member.isdir(), link=link, special=special
    )

    def open_member() -> IO[bytes]:
        stream = tar.extractfile(data_filtered(member))
        if stream is None:
            raise TeacherLoadError(f"Could not read '{member.name}' from the archive.")
        return stream

    return _Member(name, member.size, member.isdir(), open_member)


def _check_members(members: list[_Member]) -> None:
    for member in members:
        if not member.is_dir:
            try:
                check_model_file(member.name)
            except ArchiveRefused as e:
                raise TeacherLoadError(str(e)) from e


def _write_members(members: list[_Member], dest: Path, limit: int) -> None:
    root = dest.resolve()
    budget = [limit]  # bytes left; headers can lie, so count what actually comes out
    for member in members:
        target = (root / member.name).resolve()
        if not target.is_relative_to(root):
            raise TeacherLoadError(f"The archive member '{member.name}' escapes its folder.")
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # The parent may have been resolved through a link made by an earlier member; recheck.
        if not target.parent.resolve().is_relative_to(root):
            raise TeacherLoadError(f"The archive member '{member.name}' escapes its folder.")
        with member.open() as src, open(target, "xb") as dst:
            copy_limited(src, dst, budget, limit)


def copy_limited(src: IO[bytes], dst: IO[bytes], budget: list[int], limit: int) -> None:
    """Copy ``src`` to ``dst`` while ``budget[0]`` bytes remain; refuse once it runs out."""
    while chunk := src.read(_CHUNK):
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise TeacherLoadError(
                f"The archive unpacks to more than the {limit} bytes allowed (its headers "
                "understate the sizes of its files)."
            )
        dst.write(chunk)


def _model_dir(dest: Path, names: list[str]) -> Path:
    if "config.json" in names:
        model_dir = dest
    else:
        roots = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/config.json")}
        if len(roots) != 1:
            raise TeacherLoadError(
                "The archive has no config.json at its root or in exactly one top-level folder, "
                "so it is not a Hugging Face model folder (model.save_pretrained writes one)."
            )
        model_dir = dest / roots.pop()
    if not any(_SAFETENSORS.fullmatch(p.name) for p in model_dir.iterdir()):
        raise TeacherLoadError(
            "The archive's model folder has no model.safetensors; only safetensors weights are "
            "accepted: re-save the model with model.save_pretrained(folder, "
            "safe_serialization=True)."
        )
    return model_dir


def read_config(model_dir: Path) -> Any:
    """The model folder's config, read by transformers without running anything of the folder's."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise TeacherLoadError(f"Could not read the model's config.json: {last_line(e)}") from e


def refuse_remote_code(model_dir: Path) -> None:
    """A model folder whose configs would make transformers import code from it is refused
    (``file_rules.remote_code``: the same keys the upload check refuses)."""
    for name in CONFIG_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise TeacherLoadError(f"The model's {name} is not valid JSON: {e}.") from e
        if isinstance(config, dict) and (keys := remote_code_keys(config)):
            raise TeacherLoadError(
                f"The model's {name} has {', '.join(keys)}: loading it would need "
                "trust_remote_code and run the archive's Python code, which Distillery never "
                "enables; only models built into transformers are accepted."
            )


# --- students ----------------------------------------------------------------------------------


def build_hf_student(
    config: dict, tokenizer: Any, num_labels: int, teacher_config: Any = None
) -> HFClassifier:
    """The "hf" student arch: a randomly initialised classifier from a transformers config dict,
    e.g. ``{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 128, ...}``, sized for
    ``tokenizer`` (the teacher's) and ``num_labels`` classes."""
    if not isinstance(config, dict):
        raise UnsupportedInput(
            f"An hf student's config must be an object, got {type(config).__name__}.",
            code="unsupported_arch",
        )
    _check_config_dict(config)
    rest = {k: v for k, v in config.items() if k != "model_type"}
    rest |= {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "num_labels": num_labels,
    }
    teacher_positions = getattr(teacher_config, "max_position_embeddings", None)
    if teacher_positions is not None:
        # The student sees the teacher's inputs, so it needs at least as many positions.
        rest["max_position_embeddings"] = max(
            int(rest.get("max_position_embeddings", 0)), int(teacher_positions)
        )
    return _from_config(lambda: _auto_config(config["model_type"], rest))


def rebuild_hf(config_dict: dict) -> HFClassifier:
    """A randomly initialised classifier from ``hf_config_dict``'s output, for loading the
    student's state dict into."""
    _check_config_dict(config_dict)
    rest = {k: v for k, v in config_dict.items() if k != "model_type"}
    return _from_config(lambda: _auto_config(config_dict["model_type"], rest))


def hf_config_dict(model: HFClassifier) -> dict:
    """The model's full config as plain JSON (what ``rebuild_hf`` takes)."""
    config = json.loads(model.config.to_json_string(use_diff=False))
    # Loader settings, not architecture; rebuild_hf sets attention itself.
    for key in ("_attn_implementation", "_name_or_path", "transformers_version"):
        config.pop(key, None)
    return config


def _check_config_dict(config: dict) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    banned = [k for k in _BANNED_KEYS if k in config]
    if banned:
        raise UnsupportedInput(
            f"An hf student's config may not set {', '.join(banned)}: Distillery builds only "
            "models built into transformers and never runs remote code.",
            code="unsupported_arch",
        )
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise UnsupportedInput(
            f"An hf student's model_type must be a transformers model with a sequence "
            f"classification head, e.g. {_EXAMPLE_TYPES}; got {model_type!r}.",
            code="unsupported_arch",
        )


def _auto_config(model_type: str, kwargs: dict) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **kwargs)


def _from_config(make_config: Callable[[], Any]) -> HFClassifier:
    from transformers import AutoModelForSequenceClassification

    try:
        config = make_config()
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    except UnsupportedInput:
        raise
    except Exception as e:
        # A config transformers takes may still be too big to build: that is not a refusal.
        if is_out_of_memory(e) or isinstance(e, torch.cuda.OutOfMemoryError):
            raise OutOfMemory(
                "The hf student's config makes a model too big for this worker's memory; make "
                "it smaller (fewer or narrower layers, a smaller intermediate_size)."
            ) from e
        raise UnsupportedInput(
            f"transformers refused the hf student's config: {last_line(e)}",
            code="unsupported_arch",
        ) from e
    return HFClassifier(model)


def student_from_teacher(teacher: HFClassifier, layers: list[int]) -> HFClassifier:
    """DistilBERT's initialisation: the teacher with only ``layers`` kept, in order; every other
    weight (embeddings, pooler, classifier) copied. Returned on the CPU, trainable. ``layers``
    are the teacher's, increasing (the spec and ``check_layer_indices`` have seen to that)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    with torch.device("cpu"):
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    student = HFClassifier(model).float()
    prefix, _ = _layers(teacher.model)
    shared = {k: v for k, v in teacher.model.state_dict().items() if not k.startswith(prefix + ".")}
    missing, unexpected = student.model.load_state_dict(shared, strict=False)
    if unexpected or any(not k.startswith(prefix + ".") for k in missing):
        raise UnsupportedInput(
            f"Could not copy the teacher's weights into its cut-down copy: missing "
            f"{_names(missing)}, unexpected {_names(unexpected)}.",
            code="unsupported_arch",
        )
    source = teacher.layer_list()
    for i, layer in enumerate(student.layer_list()):
        layer.load_state_dict(source[layers[i]].state_dict(), strict=True)
    return student.train()


# --- the student's artifacts -------------------------------------------------------------------


class IdsAndMask(nn.Module):
    """The exported student's signature: ``(input_ids, attention_mask) -> logits``, plain
    tensors only, so torch.jit.load alone can run it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[
            0
        ].float()


def write_hf_student(output_dir: Path, student: nn.Module, tokenizer: Any) -> list[Path]:
    """``student_hf.zip`` (a save_pretrained folder with the tokenizer, loadable by
    AutoModelForSequenceClassification / AutoTokenizer) and ``student.pt`` (TorchScript taking
    ``(input_ids, attention_mask)``). ``student`` is an HFClassifier (or the transformers model
    inside one)."""
    quiet_transformers()
    inner = student.model if isinstance(student, HFClassifier) else student
    if not callable(getattr(inner, "save_pretrained", None)):
        raise TypeError(f"write_hf_student needs an HFClassifier, got {type(student).__name__}")
    output_dir.mkdir(parents=True, exist_ok=True)
    model: Any = copy.deepcopy(inner).cpu().float().eval()
    traced = trace_student(model, tokenizer)
    return [
        atomic_write(output_dir / "student_hf.zip", lambda p: _write_zip(p, model, tokenizer)),
        atomic_write(output_dir / "student.pt", lambda p: jit.save(traced, p)),
    ]


def trace_student(model: Any, tokenizer: Any) -> torch.jit.ScriptModule:
    """Trace on a padded example; then check the trace on another batch size and length, since
    tracing records Python control flow for the example's shapes."""
    wrapper = IdsAndMask(model).eval()
    device = next(model.parameters()).device
    example = tuple(t.to(device) for t in _example(tokenizer, batch=2, length=8))
    with _quiet_trace(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        check = tuple(t.to(device) for t in _example(tokenizer, batch=3, length=13))
        expected, got = wrapper(*check), traced(*check)
    if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        raise UnsupportedInput(
            f"This {model.config.model_type} student does not trace to TorchScript faithfully "
            f"(its outputs change with the batch shape); max difference "
            f"{(expected - got).abs().max().item():.3g}.",
            code="unsupported_arch",
        )
    return traced


def _example(tokenizer: Any, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Ids below the vocab size, and padding in the last row, so the mask path is traced for real.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, length // 2 :] = 0
    if tokenizer.pad_token_id is not None:
        ids[-1, length // 2 :] = tokenizer.pad_token_id
    return ids, mask


@contextmanager
def _quiet_trace() -> Iterator[None]:
    # Tracing transformers warns about the deprecated jit, about tensor-to-bool conversions that
    # the shape check after tracing covers, and about transformers' own deprecations.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
        yield


def _write_zip(path: Path, model: Any, tokenizer: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "student_hf"
        model.save_pretrained(folder)  # safetensors: transformers 5 writes nothing else
        tokenizer.save_pretrained(folder)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    zf.write(file, str(file.relative_to(tmp)))


def _names(keys: Any) -> str:
    names = sorted(keys)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return (", ".join(names[:5]) or "none") + more
