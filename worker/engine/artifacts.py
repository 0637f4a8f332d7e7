"""The job's artifacts, each written to a temporary name and renamed, so none is ever half there.

``student.json`` + ``student.safetensors`` rebuild the student with ``build_model``
(``load_student``); ``student.pt`` is the same student as TorchScript, for torch.jit.load alone.
A text student's ``student.pt`` and ``student_hf.zip`` come from ``worker.engine.hf``.
"""

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from worker.engine import jit
from worker.engine.models import build_model

FORMAT_VERSION = 1


def write_student(
    output_dir: Path,
    student: nn.Module,
    arch: dict,
    input_shape: tuple[int, ...],
    num_outputs: int,
    class_names: list[str] | None,
    torchscript: bool = True,
) -> list[Path]:
    """The weights, the spec that rebuilds them and (``torchscript``) student.pt."""
    output_dir.mkdir(parents=True, exist_ok=True)
    cpu_student = copy.deepcopy(student).cpu().eval()
    weights = {k: v.detach().contiguous() for k, v in cpu_student.state_dict().items()}
    info = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "input_shape": list(input_shape),
        "num_outputs": num_outputs,
        "class_names": class_names,
    }
    paths = [
        atomic_write(output_dir / "student.safetensors", lambda p: save_file(weights, str(p))),
        atomic_write(output_dir / "student.json", lambda p: _write_json(p, info)),
    ]
    if torchscript:
        scripted = jit.script(cpu_student)
        paths.append(atomic_write(output_dir / "student.pt", lambda p: jit.save(scripted, p)))
    return paths


def write_metrics(output_dir: Path, metrics: dict) -> Path:
    return atomic_write(output_dir / "metrics.json", lambda p: _write_json(p, metrics))


def load_student(output_dir: Path | str) -> nn.Module:
    """Rebuild the student from ``student.json`` and ``student.safetensors``, in eval mode."""
    output_dir = Path(output_dir)
    info = json.loads((output_dir / "student.json").read_text())
    model: nn.Module
    if info["arch"]["arch"] == "hf":
        from worker.engine import hf

        model = hf.rebuild_hf(info["arch"]["config"])
    else:
        model = build_model(info["arch"], tuple(info["input_shape"]), info["num_outputs"])
    model.load_state_dict(load_file(str(output_dir / "student.safetensors")), strict=True)
    return model.eval()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` the file beside ``path``, then rename it over ``path``: a reader (the staging
    copy, a resume, another worker reading the teacher cache) never sees half a file. The
    temporary name carries the process id, so two workers filling the same cache entry never
    share one; it is removed if ``write`` fails."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
