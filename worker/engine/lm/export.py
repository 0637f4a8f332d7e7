"""A language-model student's artifacts, each written atomically (``artifacts.atomic_write``):

- ``student_hf.zip``: a ``save_pretrained`` folder, its files at the zip's root: config,
  ``generation_config.json`` (the teacher's, where given), safetensors weights, and the teacher's
  tokenizer with its chat template. ``AutoModelForCausalLM.from_pretrained`` and
  ``AutoTokenizer.from_pretrained`` load it alone.
- ``student.safetensors``: the weights, tied ones stored once (``safetensors.torch.save_model``).
- ``student.json``: the student's spec and its transformers config, which rebuild it with
  transformers alone (``load_lm_student``).

Float32 whatever precision the student trained in, as the other tasks' artifacts are.
No ``student.pt`` or ONNX: for a language model the transformers folder is the export.
"""

import copy
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from worker.engine.artifacts import atomic_write
from worker.engine.hf import quiet_transformers

FORMAT_VERSION = 1


def write_lm_student(
    output_dir: Path,
    model: Any,
    tokenizer: Any,
    student_spec: dict,
    *,
    generation_config: Any | None = None,
) -> list[Path]:
    """``student_hf.zip``, ``student.safetensors`` and ``student.json`` for ``model`` (a
    transformers ``*ForCausalLM``) over ``tokenizer`` (the teacher's). ``generation_config``:
    the teacher's, so the student generates as its teacher was set up to (None: the student's
    own). ``student_spec``: the spec's student, as ``student.json`` records it. The model is
    not changed."""
    quiet_transformers()
    output_dir.mkdir(parents=True, exist_ok=True)
    student = _float32_cpu_copy(model)
    if generation_config is not None:
        student.generation_config = copy.deepcopy(generation_config)
    info = {
        "format_version": FORMAT_VERSION,
        "task": "causal_lm",
        "format": "transformers",
        "arch": student_spec,
        "model_class": type(student).__name__,
        "config": student.config.to_dict(),
    }
    return [
        atomic_write(output_dir / "student_hf.zip", lambda p: _write_zip(p, student, tokenizer)),
        atomic_write(output_dir / "student.safetensors", lambda p: save_model(student, str(p))),
        atomic_write(output_dir / "student.json", lambda p: _write_json(p, info)),
    ]


def load_lm_student(output_dir: Path | str) -> Any:
    """The student rebuilt from ``student.json`` and ``student.safetensors`` with transformers
    alone, in eval mode: what a reader of the two files would write."""
    from transformers import AutoConfig, AutoModelForCausalLM

    output_dir = Path(output_dir)
    info = json.loads((output_dir / "student.json").read_text())
    config = AutoConfig.for_model(**info["config"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, str(output_dir / "student.safetensors"), strict=True)
    return model.eval()


def _float32_cpu_copy(model: Any) -> Any:
    """The model rebuilt on the CPU in float32 from its config and weights: a copy made there,
    so a GPU never holds two, and the caller's model (its config's dtype included) is left as
    it is. Tied weights are one tensor in the state dict, so they stay tied."""
    config = copy.deepcopy(model.config)
    config.dtype = torch.float32
    with torch.device("cpu"):
        student = type(model)(config)
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    student.load_state_dict(state, strict=True)
    student.generation_config = copy.deepcopy(model.generation_config)
    return student.eval()


def _write_zip(path: Path, model: Any, tokenizer: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model.save_pretrained(folder)  # safetensors: transformers 5 writes nothing else
        tokenizer.save_pretrained(folder)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    zf.write(file, str(file.relative_to(folder)))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
