"""``model_card.md`` (and the ``curves.svg`` it shows): what a job distilled, how well, and how
to use the result, written from the job's own spec, metrics and per-epoch history.

Every number in the card is one the job measured; the card only formats them. Markdown and a
hand-written SVG, so a worker needs nothing beyond the engine's own dependencies.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.engine import curves
from worker.engine.artifacts import atomic_write

DASH = "—"


@dataclass
class CardFacts:
    spec: dict  # the full, defaulted spec
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

    @property
    def regression(self) -> bool:
        return self.spec.get("task") == "regression"


def write_model_card(output_dir: Path, facts: CardFacts) -> list[Path]:
    """``curves.svg`` then ``model_card.md``, each written whole or not at all."""
    chart = curves.svg(_panels(facts))
    card = render(facts)
    return [
        atomic_write(output_dir / "curves.svg", lambda p: _write_text(p, chart)),
        atomic_write(output_dir / "model_card.md", lambda p: _write_text(p, card)),
    ]


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def render(facts: CardFacts) -> str:
    sections = [
        _title(facts),
        _distilled(facts),
        _results(facts),
        _curves(facts),
        _usage(facts),
        _caveats(facts),
        _spec(facts),
    ]
    return "\n\n".join(s.strip("\n") for s in sections) + "\n"


# -- sections ------------------------------------------------------------------------------------


def _title(f: CardFacts) -> str:
    name = f.spec.get("name") or f.job_id or "distilled student"
    m = f.metrics
    if f.regression:
        quality = f"student R² {_num(m.get('student_r2'))} (teacher {_num(m.get('teacher_r2'))})"
    else:
        quality = (
            f"student accuracy {_pct(m.get('student_accuracy'))} "
            f"(teacher {_pct(m.get('teacher_accuracy'))})"
        )
    job = f" (`{f.job_id}`)" if f.job_id and f.spec.get("name") else ""
    return (
        f"# Model card: {name}{job}\n\n"
        f"{_a(_arch_name(f.student_arch), capital=True)} student distilled from "
        f"{_a(f.teacher_format)} teacher: "
        f"{quality} on validation, {_ratio(m['compression_ratio'])} fewer parameters, "
        f"{_ratio(m['speedup'])} faster at batch 1 on `{m['device']}`."
    )


def _distilled(f: CardFacts) -> str:
    names, spec = f.file_names, f.spec
    teacher_file = _file(names.get("teacher"), spec["teacher"]["file_id"])
    train_file = _file(names.get("train"), spec["data"]["train_file_id"])
    if not f.validation_split:
        validation = _file(names.get("validation"), spec["data"]["validation_file_id"])
    else:
        split = spec["data"].get("validation_split", 0.1)
        validation = f"a seeded {split:.0%} split of the training file"
    outputs = "outputs" if f.regression else "classes"
    rows = [
        ("task", spec.get("task", "classification") + (" on text" if f.text else "")),
        (
            "teacher",
            f"{teacher_file}, `{f.teacher_format}`, {m_int(f.metrics['teacher_params'])} "
            "parameters",
        ),
        (
            "student",
            f"`{_arch_name(f.student_arch)}` ({_arch_line(f.student_arch)}), "
            f"{m_int(f.metrics['student_params'])} parameters",
        ),
        ("training data", f"{train_file}, {f.train_rows:,} rows"),
        ("validation data", f"{validation}, {f.val_rows:,} rows"),
        ("input", _input_line(f)),
        (outputs, _outputs_line(f)),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## What was distilled\n\n| | |\n| --- | --- |\n{table}"


def _results(f: CardFacts) -> str:
    m = f.metrics
    baseline = "baseline_accuracy" in m or "baseline_r2" in m
    head = "| measure (validation) | teacher | student |" + (" baseline |" if baseline else "")
    rule = "| --- | ---: | ---: |" + (" ---: |" if baseline else "")
    rows: list[tuple[str, Any, Any, Any]] = []
    if f.regression:
        rows += [
            (
                "R²",
                _num(m.get("teacher_r2")),
                _num(m.get("student_r2")),
                _num(m.get("baseline_r2")),
            ),
            (
                "MSE",
                _num(m.get("teacher_mse")),
                _num(m.get("student_mse")),
                _num(m.get("baseline_mse")),
            ),
        ]
    else:
        rows.append(
            (
                "accuracy",
                _pct(m.get("teacher_accuracy")),
                _pct(m.get("student_accuracy")),
                _pct(m.get("baseline_accuracy")),
            )
        )
    rows += [
        (
            "parameters",
            m_int(m["teacher_params"]),
            m_int(m["student_params"]),
            m_int(m["student_params"]),
        ),
        (
            "size on disk",
            _bytes(f.teacher_bytes),
            _bytes(m["student_size_bytes"]),
            _bytes(m["student_size_bytes"]),
        ),
        (
            f"latency, batch 1 on `{m['device']}`",
            _ms(m["teacher_latency_ms"]),
            _ms(m["student_latency_ms"]),
            DASH,
        ),
        (
            "training time",
            DASH,
            _seconds(m["train_seconds"]),
            _seconds(m.get("baseline_train_seconds")),
        ),
    ]
    lines = [head, rule]
    for row in rows:
        lines.append("| " + " | ".join(map(str, row[: 4 if baseline else 3])) + " |")
    against = [
        ("compression (teacher / student parameters)", _ratio(m["compression_ratio"])),
        ("speedup (teacher / student latency)", _ratio(m["speedup"])),
    ]
    if f.regression:
        against.insert(0, ("MSE between student and teacher", _num(m.get("agreement_mse"))))
    else:
        against.insert(0, ("top-1 agreement with the teacher", _pct(m.get("agreement"))))
        against.insert(1, ("KL(teacher ‖ student), T=1", _num(m.get("kl_divergence"))))
    if "best_epoch" in m:
        stopped = "stopped early" if m.get("stopped_early") else "ran every epoch"
        against.append(("early stopping", f"{stopped}; kept epoch {m['best_epoch']}"))
    against.append(("teacher-output cache", str(m.get("teacher_cache", DASH))))
    table = "\n".join(f"| {k} | {v} |" for k, v in against)
    text = (
        "## Results\n\n" + "\n".join(lines) + "\n\nThe baseline is the same student trained on "
        "the labels alone, with the same budget.\n\n"
        if baseline
        else "## Results\n\n" + "\n".join(lines) + "\n\n"
    )
    text += f"| student against teacher | |\n| --- | ---: |\n{table}"
    if "sweep" in m:
        text += "\n\n" + _sweep_table(m)
    return text


def _sweep_table(m: dict) -> str:
    rows = m["sweep"]
    keys = [k for k in rows[0] if k != "chosen"]
    head = "| run | " + " | ".join(keys) + " | chosen |"
    rule = "| ---: |" + " ---: |" * len(keys) + " --- |"
    lines = [
        f"| {i} | "
        + " | ".join(_num(row[k]) for k in keys)
        + f" | {'yes' if row['chosen'] else ''} |"
        for i, row in enumerate(rows)
    ]
    return f"Sweep: {len(rows)} runs, the best on `{m['sweep_metric']}` kept.\n\n" + "\n".join(
        [head, rule, *lines]
    )


def _curves(f: CardFacts) -> str:
    metric, label = _curve_metric(f)
    phases = [p for p in ("student", "baseline") if f.history.get(p)]
    head = ["epoch"]
    for phase in phases:
        prefix = "" if phase == "student" else "baseline "
        head += [f"{prefix}train loss", f"{prefix}{label}"]
    epochs = max((len(_entries(f, p)) for p in phases), default=0)
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for e in range(epochs):
        cells = [str(e + 1)]
        for phase in phases:
            entries = _entries(f, phase)
            entry = entries[e] if e < len(entries) else {}
            cells += [_num(entry.get("train_loss")), _metric(metric, entry.get(metric))]
        lines.append("| " + " | ".join(cells) + " |")
    note = ""
    if "sweep" in f.metrics:
        note = "\n\nThe student's columns are the chosen sweep run's."
    return (
        "## Training curves\n\n![Training loss and validation curves](curves.svg)\n\n"
        "Train loss is the mean over the epoch's batches (the full loss the student minimised); "
        f"{label} is measured on the validation data at each epoch end.{note}\n\n"
        + "\n".join(lines)
    )


def _usage(f: CardFacts) -> str:
    if f.text:
        max_length = f.spec["data"].get("max_length", 128)
        code = f"""```python
import zipfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

zipfile.ZipFile("student_hf.zip").extractall(".")
tokenizer = AutoTokenizer.from_pretrained("student_hf")
model = AutoModelForSequenceClassification.from_pretrained("student_hf").eval()
batch = tokenizer(["some text"], padding=True, truncation=True, max_length={max_length},
                  return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits  # (batch, {f.num_outputs})

# or without transformers: TorchScript taking (input_ids, attention_mask), int64
student = torch.jit.load("student.pt").eval()
with torch.no_grad():
    logits = student(batch["input_ids"], batch["attention_mask"])
```"""
    else:
        shape = ", ".join(map(str, f.input_shape))
        if f.regression:
            run = f"    outputs = student(x)  # (batch, {f.num_outputs})"
        else:
            names = f"; names: {f.class_names}" if f.class_names else ""
            run = (
                f"    logits = student(x)  # (batch, {f.num_outputs})\n"
                f"predicted = logits.argmax(dim=1)  # class ids{names}"
            )
        code = f"""```python
import torch

student = torch.jit.load("student.pt").eval()  # TorchScript: torch alone, no Distillery
x = torch.zeros(1, {shape})  # (batch, {shape}) float32, prepared as the training data was
with torch.no_grad():
{run}
```

`student.safetensors` holds the same weights and `student.json` says how to rebuild the module
(`worker.engine.load_student(folder)`, with Distillery installed)."""
    text = f"## Using the student\n\n{code}"
    if f.onnx is not None and "student.onnx" in f.artifacts:
        feeds = (
            '{"input_ids": batch["input_ids"].numpy(), "attention_mask": '
            'batch["attention_mask"].numpy()}'
            if f.text
            else '{"x": x.numpy()}'
        )
        text += f"""

ONNX: {f.onnx}

```python
import onnxruntime

session = onnxruntime.InferenceSession("student.onnx")
({"outputs" if f.regression else "logits"},) = session.run(None, {feeds})  # any batch size
```"""
    return text


def _caveats(f: CardFacts) -> str:
    m = f.metrics
    chosen = []
    if "sweep" in m:
        chosen.append("the sweep chose its run")
    if "best_epoch" in m:
        chosen.append("early stopping chose its epoch")
    items = [
        "Every quality number above is measured on the validation data"
        + (
            f", which also decided the result ({' and '.join(chosen)}), so it flatters it a little"
            if chosen
            else ""
        )
        + ". Score the student on a test set of your own before you rely on it.",
        f"Latency is the median of single forward passes at batch 1 on the worker's device "
        f"(`{m['device']}`): `student.pt` against the teacher as uploaded"
        + (", both traced to TorchScript" if f.text else "")
        + ". Other batch sizes, machines and runtimes (onnxruntime included) will differ.",
        "Size on disk is the uploaded teacher file"
        + (" (an archive, with its tokenizer)" if f.text else "")
        + " against `student.safetensors`.",
    ]
    if not f.regression and m.get("student_accuracy") is None:
        items.append(
            "The validation data has no labels: accuracy is not measured, only "
            "agreement with the teacher."
        )
    baseline = m.get("baseline_r2" if f.regression else "baseline_accuracy")
    student = m.get("student_r2" if f.regression else "student_accuracy")
    if baseline is None:
        items.append(
            'There is no baseline: set `"baseline": true` to see whether distillation '
            "beats training the same student on the labels alone."
        )
    elif student is not None and baseline >= student:
        items.append(
            "On this data the baseline (labels alone) is as good as or better than the "
            "distilled student: distillation did not earn its keep here."
        )
    precision = f.spec.get("hyperparameters", {}).get("precision", "fp32")
    if precision != "fp32":
        items.append(f"The student trained under {precision} autocast; its artifacts are float32.")
    if f.onnx is not None and "student.onnx" not in f.artifacts:
        items.append(f"ONNX was asked for but not written: {f.onnx}")
    return "## Caveats\n\n" + "\n".join(f"- {item}" for item in items)


def _spec(f: CardFacts) -> str:
    listing = ", ".join(
        f"`{name}`" for name in sorted([*f.artifacts, "curves.svg", "model_card.md"])
    )
    return (
        f"## The job\n\nArtifacts: {listing}.\n\nThe full job spec, with every default filled "
        f"in:\n\n```json\n{json.dumps(f.spec, indent=2)}\n```"
    )


# -- helpers -------------------------------------------------------------------------------------


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
    return _pct(value) if name in ("val_accuracy", "val_agreement") else _num(value)


def _input_line(f: CardFacts) -> str:
    if f.text:
        return f"token ids and attention mask, up to {f.spec['data'].get('max_length', 128)} tokens"
    return f"float32 tensor of shape (batch, {', '.join(map(str, f.input_shape))})"


def _outputs_line(f: CardFacts) -> str:
    if f.class_names:
        return f"{f.num_outputs}: " + ", ".join(f"`{name}`" for name in f.class_names)
    return str(f.num_outputs)


def _arch_name(arch: dict) -> str:
    if arch.get("arch") == "hf":
        return f"hf ({arch.get('config', {}).get('model_type', '?')})"
    return str(arch.get("arch", "mlp"))


def _arch_line(arch: dict) -> str:
    if arch.get("arch") == "hf":
        config = arch.get("config", {})
        keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
        return ", ".join(f"{k} {config[k]}" for k in keys if k in config) or "its config"
    return ", ".join(f"{k} {v}" for k, v in arch.items() if k != "arch")


def _file(name: str | None, file_id: str | None) -> str:
    if name and file_id:
        return f"`{name}` (`{file_id}`)"
    return f"`{name or file_id}`" if name or file_id else "a file of its own"


def _a(name: str, capital: bool = False) -> str:
    """``name`` in backticks with its article: initialisms read letter by letter (an mlp)."""
    article = "an" if name.startswith(("mlp", "hf", "a", "e", "i", "o", "u")) else "a"
    return f"{article.capitalize() if capital else article} `{name}`"


def m_int(value: Any) -> str:
    return DASH if value is None else f"{value:,}"


def _pct(value: Any) -> str:
    return DASH if value is None else f"{value:.2%}"


def _num(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def _ratio(value: float) -> str:
    return f"{value:.1f}x"


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _seconds(value: Any) -> str:
    return DASH if value is None else f"{value:.1f} s"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value:,} bytes"
