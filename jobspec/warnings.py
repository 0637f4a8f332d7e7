"""What a job warns of: things it will do that a user would not expect. The API answers them from
``POST /v1/jobs/validate`` where the uploads' recorded facts tell; the worker logs each as a
``warning`` event whose ``data.code`` names it, once its teacher and student are built; the model
card says the same in its caveats. One rule for all three: the functions below. Torch-free.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Any

from jobspec import FromTeacherArch, JobSpec, MlpArch, PretrainedArch


@dataclass(frozen=True)
class JobWarning:
    code: str
    message: str
    param: str | None = None  # the spec field it is about

    @property
    def data(self) -> dict[str, str]:
        """The event's ``data``."""
        return {"code": self.code}


def at_setup(
    teacher_params: int, student_params: int, validation_split: float | None
) -> list[JobWarning]:
    """Every warning a job gives once its teacher and student are built. ``validation_split``:
    the fraction of the training file held out for validation, None with a validation file."""
    warnings = [
        student_not_smaller(teacher_params, student_params),
        validation_may_overlap_teacher_training(validation_split),
    ]
    return [w for w in warnings if w is not None]


def before_training(
    spec: JobSpec,
    teacher_meta: dict[str, Any],
    train_meta: dict[str, Any],
    student_meta: dict[str, Any] | None = None,
) -> list[JobWarning]:
    """The warnings the API can give from the spec and the uploads' recorded facts alone, before
    anything is built (``POST /v1/jobs/validate``). ``student_not_smaller`` only where it is
    certain: the teacher's parameter count is recorded (safetensors weights, a language model's
    archive or GGUF file) and the student's least count reaches it: an MLP's taken at its
    smallest (one output), a pretrained student's recorded (``student_meta``, its file's), a
    from_teacher student keeping every layer the teacher's own; the worker checks every job at
    setup."""
    found = []
    if spec.data.validation_file_id is None:
        warning = validation_may_overlap_teacher_training(spec.data.validation_split)
        assert warning is not None
        found.append(_about(warning, "data.validation_split"))
    teacher_params = teacher_meta.get("params")
    least = _least_student_params(spec, teacher_meta, train_meta, student_meta or {})
    if isinstance(teacher_params, int) and teacher_params > 0 and least is not None:
        warning = student_not_smaller(teacher_params, least)
        found += [_about(warning, "student")] if warning is not None else []
    return found


def _least_student_params(
    spec: JobSpec,
    teacher_meta: dict[str, Any],
    train_meta: dict[str, Any],
    student_meta: dict[str, Any],
) -> int | None:
    """The fewest parameters the student can have, where the recorded facts tell."""
    student = spec.student
    shape = train_meta.get("sample_shape")
    if isinstance(student, MlpArch) and shape:
        outputs = train_meta.get("num_classes") or 1
        widths = [math.prod(shape), *student.hidden_sizes, outputs]
        return sum(a * b + b for a, b in itertools.pairwise(widths))
    if isinstance(student, PretrainedArch) and isinstance(student_meta.get("params"), int):
        return int(student_meta["params"])
    if isinstance(student, FromTeacherArch):  # every layer kept: the teacher's own count
        kept_all = len(student.layers) == teacher_meta.get("num_layers")
        teacher_params = teacher_meta.get("params")
        return teacher_params if kept_all and isinstance(teacher_params, int) else None
    return None


def _about(warning: JobWarning, param: str) -> JobWarning:
    return JobWarning(warning.code, warning.message, param)


def student_not_smaller(teacher_params: int, student_params: int) -> JobWarning | None:
    """A student with as many parameters as its teacher, or more, compresses nothing."""
    if student_params < teacher_params:
        return None
    if student_params == teacher_params:
        size = "as many as the teacher"
    else:
        size = f"{times(student_params / teacher_params)} the teacher's {teacher_params:,}"
    return JobWarning(
        "student_not_smaller",
        f"The student has {student_params:,} parameters, {size}: it will not be smaller than "
        "its teacher, and likely not faster. Give it fewer or narrower layers to compress the "
        "teacher.",
    )


def validation_may_overlap_teacher_training(validation_split: float | None) -> JobWarning | None:
    """Without a validation file, the validation rows come from the training file, which the
    teacher may have been trained on: it would score them as if it had seen them (it has)."""
    if validation_split is None:
        return None
    return JobWarning(
        "validation_may_overlap_teacher_training",
        f"No validation file: the validation rows are a {validation_split:.0%} split of the "
        "training file. If the teacher was trained on that file it has seen these rows, and its "
        "validation scores (up to 100%) flatter it next to the student. Upload a validation file "
        "the teacher never saw for a fair comparison.",
    )


def times(ratio: float) -> str:
    """How many times larger one of two sizes is than the other, ``1.3x``, whichever is larger."""
    return f"{max(ratio, 1 / ratio):.1f}x"
