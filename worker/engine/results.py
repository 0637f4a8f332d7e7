"""What a finished job leaves: the student's artifacts, its final metrics (quality next to the
teacher, size, speed, the sweep and the baseline), ONNX if asked for, and the model card."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from worker.engine import jit, onnx_export
from worker.engine.artifacts import write_metrics, write_student
from worker.engine.errors import UnsupportedInput
from worker.engine.evaluation import latency_ms, predict
from worker.engine.job import EngineResult
from worker.engine.model_card import CardFacts, write_model_card
from worker.engine.models import count_parameters
from worker.engine.sweep import chosen_values

if TYPE_CHECKING:
    from worker.engine.recipe import DistillationRecipe


def write_results(recipe: "DistillationRecipe") -> EngineResult:
    """The student's artifacts, its metrics (also metrics.json), ONNX if asked for, and the card."""
    student = recipe.runs["student"].model.eval()
    out = recipe.job.output_dir
    artifacts = write_student(
        out,
        student,
        recipe.plan.arch,
        recipe.train_data.input_shape,
        recipe.num_classes,
        recipe.train_data.class_names,
        torchscript=not recipe.plan.text,
    )
    if recipe.plan.text:
        from worker.engine import hf

        artifacts += hf.write_hf_student(out, student, recipe.teacher.tokenizer)
    onnx = _export_onnx(recipe, student, artifacts) if "onnx" in recipe.exports else None
    metrics = _metrics(recipe, student)
    artifacts.append(write_metrics(out, metrics))
    artifacts += write_model_card(out, _card_facts(recipe, metrics, artifacts, onnx))
    recipe.log("Distillation finished.", metrics)
    return EngineResult(metrics, artifacts)


def _export_onnx(recipe: "DistillationRecipe", student: nn.Module, artifacts: list[Path]) -> str:
    """Write student.onnx and say how it went. A student that does not export costs the job
    its ONNX file only: a warning, and the other artifacts as usual."""
    x = recipe.val_data.x[:8]
    try:
        if recipe.plan.text:
            from worker.engine.hf import HFClassifier
            from worker.engine.text import unpack

            assert isinstance(student, HFClassifier)
            ids, mask = unpack(x)
            export = onnx_export.export_text_student(
                recipe.job.output_dir, student.model, ids, mask
            )
        else:
            export = onnx_export.export_tensor_student(recipe.job.output_dir, student, x)
    except onnx_export.ExportFailed as e:
        recipe.log(e.message, {"code": e.code}, level="warning")
        return e.message
    artifacts.append(export.path)
    line = onnx_export.describe(export)
    recipe.log(line)
    return line


def _card_facts(
    recipe: "DistillationRecipe", metrics: dict, artifacts: list[Path], onnx: str | None
) -> CardFacts:
    job = recipe.job
    return CardFacts(
        spec=recipe.spec.model_dump(mode="json"),
        metrics=metrics,
        history=recipe.history,
        teacher_format=job.teacher_format,
        teacher_bytes=job.teacher_path.stat().st_size,
        student_arch=recipe.plan.arch,
        input_shape=recipe.train_data.input_shape,
        num_outputs=recipe.num_classes,
        class_names=recipe.train_data.class_names,
        train_rows=len(recipe.train_data),
        val_rows=len(recipe.val_data),
        validation_split=job.validation_path is None,
        text=recipe.plan.text,
        artifacts=[p.name for p in artifacts],
        onnx=onnx,
        job_id=job.job_id,
        file_names=job.file_names,
    )


def _metrics(recipe: "DistillationRecipe", student: nn.Module) -> dict:
    val, batch_size = recipe.val_data, recipe.hp.batch_size
    student_logits = predict(student, val.x, batch_size)
    # Time the artifact users deploy, student.pt, against the teacher as it was given.
    deployed = jit.load(recipe.job.output_dir / "student.pt", recipe.device)
    if recipe.plan.text:  # student.pt takes (input_ids, attention_mask)
        teacher_ms = latency_ms(_traced_teacher(recipe), val.x[:1])
        student_ms = latency_ms(lambda x: deployed(x[:, 0], x[:, 1]), val.x[:1])
    else:
        teacher_ms = latency_ms(recipe.teacher, val.x[:1])
        student_ms = latency_ms(deployed, val.x[:1])
    teacher_params, student_params = recipe.teacher.num_params, count_parameters(student)
    quality = recipe.task.quality(student_logits, recipe.val_teacher_logits, val.y)
    metrics: dict[str, Any] = quality | {
        "teacher_params": teacher_params,
        "student_params": student_params,
        "compression_ratio": teacher_params / student_params,
        "student_size_bytes": (recipe.job.output_dir / "student.safetensors").stat().st_size,
        "teacher_latency_ms": teacher_ms,
        "student_latency_ms": student_ms,
        "speedup": teacher_ms / student_ms,
        "train_seconds": recipe.runs["student"].train_seconds(),
        "device": str(recipe.device),
        "world_size": recipe.job.world_size,  # the ranks it trained on (rank 0's device above)
        "teacher_cache": recipe.teacher_outputs.status,
    }
    matching = recipe.runs["student"].matching
    if matching is not None:
        metrics["layer_pairs"] = {
            kind: [list(p) for p in pairs] for kind, pairs in matching.pairs.items()
        }
    if recipe.sweep_state is not None:
        chosen = recipe.sweep_state.table()[recipe.sweep_state.best or 0]
        metrics["sweep"] = recipe.sweep_state.table()
        metrics["chosen"] = chosen_values(chosen)
        metrics["sweep_metric"] = recipe.task.sweep_metric(val.y is not None)
    if "baseline" in recipe.runs:
        baseline_logits = predict(recipe.runs["baseline"].model, val.x, batch_size)
        metrics |= recipe.task.baseline_quality(baseline_logits, val.y)
        metrics["baseline_train_seconds"] = recipe.runs["baseline"].train_seconds()
    for phase, run in recipe.runs.items():
        if run.stopper is not None:
            prefix = "" if phase == "student" else "baseline_"
            metrics[f"{prefix}stopped_early"] = run.stopper.stopped_early
            metrics[f"{prefix}best_epoch"] = run.stopper.best_epoch
    return metrics


def _traced_teacher(recipe: "DistillationRecipe") -> Callable[[torch.Tensor], object]:
    """A Hugging Face teacher timed as its student is: traced, so that the speed-up is the
    smaller model's, not TorchScript's lower overhead against eager transformers."""
    from worker.engine import hf

    assert isinstance(recipe.teacher.module, hf.HFClassifier)
    try:
        traced = hf.trace_student(recipe.teacher.module.model, recipe.teacher.tokenizer)
    except UnsupportedInput:  # an architecture that does not trace: time it as given
        return recipe.teacher
    return lambda x: traced(x[:, 0], x[:, 1])
