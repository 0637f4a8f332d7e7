"""``model_card.md`` (and the ``curves.svg`` it shows): what a job distilled, how well, and how
to use the result, written from the job's own spec, metrics and per-epoch history.

Every number in the card is one the job measured; the card only formats them. The wording is a
Jinja2 template (templates/model_card.md.j2); this module shapes the facts for it. Markdown and a
hand-written SVG, so a worker needs nothing beyond the engine's own dependencies.
"""

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jinja2

from jobspec import JobSpec
from jobspec import warnings as job_warnings
from worker.engine import curves
from worker.engine import markdown as md

# What the validation data decided, by the metric that says it did.
CHOSEN_ON_VALIDATION = (
    ("sweep", "the sweep chose its run"),
    ("best_epoch", "early stopping chose its epoch"),
)


@dataclass
class CardFacts:
    spec: JobSpec | dict  # the full, defaulted spec (a dict: as the API echoes it)
    metrics: dict  # as in metrics.json
    history: dict[str, list[dict]]  # phase -> one entry per epoch: epoch, train_loss, val_...
    teacher_format: str
    teacher_bytes: int
    student_arch: dict  # the arch the student resolved to (student.json's)
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: list[str] | None
    train_rows: int
    val_rows: int
    validation_split: bool  # True: the validation rows were split off the training file
    text: bool
    artifacts: list[str]  # the job's other artifacts, by name
    onnx: str | None = None  # a line on student.onnx (written, or why not); None: not asked for
    job_id: str | None = None
    file_names: dict[str, str] = field(default_factory=dict)  # teacher, train, validation

    @cached_property
    def job_spec(self) -> JobSpec:
        spec = self.spec
        return spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)

    @property
    def regression(self) -> bool:
        return self.job_spec.task == "regression"


def write_model_card(output_dir: Path, facts: CardFacts) -> list[Path]:
    """``curves.svg`` then ``model_card.md``, each written whole or not at all."""
    return md.write_card(output_dir, curves.svg(_panels(facts)), render(facts))


def render(facts: CardFacts) -> str:
    return md.tidy(_template().render(_context(facts)))


@cache
def _template() -> jinja2.Template:
    return md.template(
        "model_card.md.j2",
        a_code=_a,
        python=repr,
        times=job_warnings.times,
        ms=_ms,
        size=_bytes,
    )


@dataclass
class _Table:
    head: list[str]
    rows: list[list[str]]
    label: str  # what the second column shows


@dataclass
class _Sweep:
    columns: list[str]
    rows: list[dict]


def _context(f: CardFacts) -> dict[str, Any]:
    spec, m = f.job_spec, md.Metrics(f.metrics)
    names = f.file_names
    score = "r2" if f.regression else "accuracy"
    split = spec.data.validation_split if f.validation_split else None
    cautions = job_warnings.at_setup(m["teacher_params"], m["student_params"], split)
    chosen = [reason for key, reason in CHOSEN_ON_VALIDATION if key in m]
    spec_json = f.spec if isinstance(f.spec, dict) else f.spec.model_dump(mode="json")
    return {
        "f": f,
        "m": m,
        "spec": spec,
        "regression": f.regression,
        "text": f.text,
        "baseline": "baseline_accuracy" in m or "baseline_r2" in m,
        "baseline_score": m[f"baseline_{score}"],
        "student_score": m[f"student_{score}"],
        "title": _title(f, spec),
        "arch_name": _arch_name(f.student_arch),
        "arch_line": _arch_line(f.student_arch),
        "teacher_file": _file(names.get("teacher"), spec.teacher.file_id),
        "train_file": _file(names.get("train"), spec.data.train_file_id),
        "validation_file": _file(names.get("validation"), spec.data.validation_file_id),
        "shape": ", ".join(map(str, f.input_shape)),
        "sweep": _sweep(m["sweep"]),
        "curves": _curves_table(f),
        "onnx_written": f.onnx is not None and "student.onnx" in f.artifacts,
        "cautions": {w.code for w in cautions},
        "chosen": chosen,
        "listing": sorted([*f.artifacts, "curves.svg", "model_card.md"]),
        "spec_json": json.dumps(spec_json, indent=2),
    }


def _sweep(rows: list[dict] | None) -> _Sweep | None:
    if not rows:
        return None
    return _Sweep([k for k in rows[0] if k != "chosen"], rows)


def _title(f: CardFacts, spec: JobSpec) -> str:
    if spec.name:
        return md.text(spec.name) + (f" ({md.code_span(f.job_id)})" if f.job_id else "")
    return f.job_id or "distilled student"  # a job id is the service's own: plain text


def _curves_table(f: CardFacts) -> _Table:
    metric, label = _curve_metric(f)
    phases = [p for p in ("student", "baseline") if f.history.get(p)]
    head = ["epoch"]
    for phase in phases:
        prefix = "" if phase == "student" else "baseline "
        head += [f"{prefix}train loss", f"{prefix}{label}"]
    epochs = max((len(_entries(f, p)) for p in phases), default=0)
    rows = []
    for e in range(epochs):
        cells = [str(e + 1)]
        for phase in phases:
            entries = _entries(f, phase)
            entry = entries[e] if e < len(entries) else {}
            cells += [md.num(entry.get("train_loss")), _metric(metric, entry.get(metric))]
        rows.append(cells)
    return _Table(head, rows, label)


def _panels(f: CardFacts) -> list[curves.Panel]:
    metric, label = _curve_metric(f)
    phases = [p for p in ("student", "baseline") if f.history.get(p)]

    def series(key: str) -> list[curves.Series]:
        return [curves.Series(p, [e.get(key) for e in _entries(f, p)]) for p in phases]

    percent = metric in ("val_accuracy", "val_agreement")
    return [
        curves.Panel("train loss", series("train_loss")),
        curves.Panel(label, series(metric), percent=percent),
    ]


def _entries(f: CardFacts, phase: str) -> list[dict]:
    """The phase's epochs; in a sweep, the student's are the chosen run's."""
    entries = f.history.get(phase, [])
    sweep = f.metrics.get("sweep")
    if phase == "student" and sweep:
        chosen = next(i for i, row in enumerate(sweep) if row["chosen"])
        entries = [e for e in entries if e.get("run") == chosen]
    return entries


def _curve_metric(f: CardFacts) -> tuple[str, str]:
    """What the second curve shows: accuracy (or MSE) on the labels, or, without labels,
    agreement with the teacher."""
    entries = [e for phase in f.history.values() for e in phase]
    if f.regression:
        if any(e.get("val_mse") is not None for e in entries):
            return "val_mse", "validation MSE"
        return "val_agreement_mse", "validation MSE to the teacher"
    if any(e.get("val_accuracy") is not None for e in entries):
        return "val_accuracy", "validation accuracy"
    return "val_agreement", "validation agreement"


def _metric(name: str, value: Any) -> str:
    return md.pct(value) if name in ("val_accuracy", "val_agreement") else md.num(value)


def _arch_name(arch: dict) -> str:
    if arch.get("arch") == "hf":
        return f"hf ({arch.get('config', {}).get('model_type', '?')})"
    return str(arch.get("arch", "mlp"))


def _arch_line(arch: dict) -> str:
    if arch.get("arch") == "hf":
        config = arch.get("config", {})
        keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
        return ", ".join(f"{k} {md.text(config[k])}" for k in keys if k in config) or "its config"
    return ", ".join(f"{k} {v}" for k, v in arch.items() if k != "arch")


def _file(name: str | None, file_id: str | None) -> str:
    if name and file_id:
        return f"{md.code_span(name)} ({md.code_span(file_id)})"
    return md.code_span(name or file_id) if name or file_id else "a file of its own"


def _a(name: str, capital: bool = False) -> str:
    """``name`` in backticks with its article: initialisms read letter by letter (an mlp)."""
    article = "an" if name.startswith(("mlp", "hf", "a", "e", "i", "o", "u")) else "a"
    return f"{article.capitalize() if capital else article} {md.code_span(name)}"


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value:,} bytes"
