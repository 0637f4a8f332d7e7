"""What a spec needs of its data, written once. The API checks a submission against the uploads'
recorded facts (``meta.has_labels``) before a job exists; the engine checks the same rules
against the data it loaded, before the first training step. Plain facts in, ``SpecConflict``
out; torch-free.
"""

from jobspec import JobSpec

# The validation metrics each task reports at every epoch end, so early stopping can watch them.
EARLY_STOPPING_METRICS = {
    "classification": ("val_accuracy", "val_loss"),
    "regression": ("val_loss",),
    "causal_lm": ("val_perplexity", "val_loss"),
}


class SpecConflict(ValueError):
    """The spec asks for something its task or its data cannot give: ``param`` names the field
    to change, ``code`` is the contract's error code."""

    def __init__(self, message: str, param: str, code: str = "labels_required"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def check_early_stopping_metric(spec: JobSpec) -> None:
    """Early stopping watches a metric the job's task reports."""
    early_stopping = spec.hyperparameters.early_stopping
    reported = EARLY_STOPPING_METRICS[spec.task]
    if early_stopping is not None and early_stopping.metric not in reported:
        raise SpecConflict(
            f"A {spec.task} job has no {early_stopping.metric}; early stopping watches "
            f"{' or '.join(reported)}.",
            param="hyperparameters.early_stopping.metric",
            code="invalid_request",
        )


def check_labels(spec: JobSpec, train_has_labels: bool, validation_has_labels: bool) -> None:
    """Every loss and metric with a label term needs labels: alpha below 1 (at any step of any
    sweep run) and the baseline need them in the training data; early stopping needs them in the
    validation data (the training data's own when validation is split from it) for
    val_accuracy, and for val_loss wherever that has a label term."""
    if not train_has_labels:
        _check_teacher_alone(spec)
    early_stopping = spec.hyperparameters.early_stopping
    if early_stopping is None or validation_has_labels:
        return
    if early_stopping.metric == "val_accuracy":
        raise SpecConflict(
            "Early stopping on val_accuracy needs labelled validation data, and the validation "
            "data has no labels; use the metric val_loss with alpha 1.0, or give a labelled "
            "validation file.",
            param="hyperparameters.early_stopping.metric",
        )
    if _smallest_alpha(spec) < 1 or spec.baseline:
        raise SpecConflict(
            "Early stopping watches val_loss, which has a label term here (alpha below 1.0, or "
            "the baseline), but the validation data has no labels; give a labelled validation "
            "file.",
            param="hyperparameters.early_stopping.metric",
        )


def _check_teacher_alone(spec: JobSpec) -> None:
    """Training data without labels: the student learns from the teacher alone."""
    hp = spec.hyperparameters
    swept = spec.sweep.alpha if spec.sweep is not None else None
    if (swept is None and hp.alpha < 1) or (hp.alpha_end is not None and hp.alpha_end < 1):
        raise SpecConflict(
            "The training data has no labels, so the student can learn from the teacher alone: "
            "set hyperparameters.alpha (and alpha_end) to 1.0, or add labels (y).",
            param="hyperparameters.alpha",
        )
    if swept is not None and min(swept) < 1:
        raise SpecConflict(
            "The training data has no labels, so every swept alpha must be 1.0 (or add "
            "labels (y)).",
            param="sweep.alpha",
        )
    if spec.baseline:
        raise SpecConflict(
            "A baseline trains the student on labels alone, but the training data has no "
            "labels; turn baseline off or add labels (y).",
            param="baseline",
        )


def _smallest_alpha(spec: JobSpec) -> float:
    """The smallest alpha any step of any run trains with (a sweep's values replace alpha)."""
    hp = spec.hyperparameters
    swept = spec.sweep.alpha if spec.sweep is not None else None
    return min(a for start in swept or [hp.alpha] for a in _ends(start, hp.alpha_end))


def _ends(alpha: float, alpha_end: float | None) -> tuple[float, float]:
    # alpha_end is set only with alpha_schedule "linear" (the spec refuses it otherwise).
    return alpha, alpha if alpha_end is None else alpha_end


def check_student_layers(layers: list[int], teacher_layers: int) -> None:
    """A from_teacher student's layers are the teacher's: each index below its depth (the worker
    checks the loaded model in the same words, worker/engine/features.py check_layer_indices)."""
    for index in layers:
        if not 0 <= index < teacher_layers:
            raise SpecConflict(
                f"student.layers names teacher layer {index}, but the teacher has "
                f"{teacher_layers} layers (0 to {teacher_layers - 1}).",
                param="student.layers",
                code="unsupported_arch",
            )


def check_layer_pairs(
    pairs: list[tuple[int, int]], student_layers: int | None, teacher_layers: int | None
) -> None:
    """``losses.hidden.layers`` against the depths where they are known (None: not known here;
    the worker checks the loaded models in like words, worker/engine/features.py
    check_layer_indices)."""
    depths = (student_layers, teacher_layers)
    for n, pair in enumerate(pairs):
        for who, index, depth in zip(("student", "teacher"), pair, depths, strict=True):
            if depth is not None and not 0 <= index < depth:
                raise SpecConflict(
                    f"losses.hidden.layers.{n} names {who} layer {index}, but the {who} has "
                    f"{depth} layers (0 to {depth - 1}).",
                    param=f"losses.hidden.layers.{n}",
                    code="invalid_request",
                )


def check_distributed(spec: JobSpec) -> None:
    """What a job on several devices cannot do yet, refused at submit by the API and again by
    the engine before any rank starts."""
    if spec.resources.devices <= 1:
        return
    problems = []
    if spec.task == "causal_lm":
        problems.append("language-model (causal_lm) jobs")
    if spec.sweep is not None:
        problems.append("sweeps")
    if spec.losses.hidden is not None or spec.losses.attention is not None:
        problems.append("layer matching (losses.hidden, losses.attention)")
    if spec.hyperparameters.precision == "fp16":
        problems.append("precision fp16")
    if problems:
        raise SpecConflict(
            f"Training on several devices does not support {', '.join(problems)} yet; set "
            "resources.devices to 1.",
            param="resources.devices",
            code="unsupported_distributed",
        )
