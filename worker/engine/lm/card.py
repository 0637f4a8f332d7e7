"""A language model's ``model_card.md`` (and the ``curves.svg`` it shows): perplexity of teacher,
student and baseline with the verdict, agreement, size and speed, the loss and the teacher's
stored signal, side-by-side generations, and the caveats.

As for the other tasks (``worker/engine/model_card.py``), every number is one the job measured;
this module shapes the facts and the wording is a Jinja2 template
(templates/lm_model_card.md.j2). The Markdown escaping and number formats are model_card's, so
both cards read alike.
"""

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from jobspec import JobSpec
from worker.engine import curves
from worker.engine import markdown as md

ARTIFACTS = [
    "student_hf.zip",
    "student.safetensors",
    "student.json",
    "metrics.json",
    "model_card.md",
    "curves.svg",
]
LOSS_NAMES = {
    "forward_kl": "forward KL, KL(teacher ‖ student)",
    "reverse_kl": "reverse KL, KL(student ‖ teacher), as MiniLLM",
    "jsd": "generalised Jensen-Shannon divergence, as GKD",
}
HIDDEN_METRICS = {"mse": "mean squared error", "cosine": "1 - cosine similarity"}
CACHE_WORDS = {
    "hit": "hit: read from the store that an earlier job filled; this job ran no teacher pass",
    "miss": "miss: this job ran the teacher once over the data and stored its signal for later "
    "jobs",
    "off": "off: the teacher ran online beside the student, with its full distribution",
}


@dataclass
class Generations:
    """One validation prompt's continuations, side by side."""

    prompt: str
    reference: str | None  # the data's own completion, where it has one
    teacher: str
    student: str
    baseline: str | None  # None: the job trained no baseline


@dataclass
class LMCardFacts:
    job_id: str | None
    file_names: dict[str, str]  # teacher, train, validation, student (a pretrained start)
    spec: JobSpec
    metrics: dict  # as in metrics.json
    # per phase ("student", "baseline"), one entry per epoch: epoch, train_loss, val_loss,
    # val_perplexity, val_token_agreement
    history: dict[str, list[dict]]
    generations: list[Generations]
    warnings: list[str]


def write_lm_model_card(output_dir: Path, facts: LMCardFacts) -> list[Path]:
    """``curves.svg`` then ``model_card.md``, each written whole or not at all."""
    return md.write_card(output_dir, curves.svg(_panels(facts)), render(facts))


def render(facts: LMCardFacts) -> str:
    return md.tidy(_template().render(_context(facts)))


@cache
def _template() -> jinja2.Template:
    return md.template(
        "lm_model_card.md.j2",
        ppl=_perplexity,
        speed=_speed,
    )


@dataclass
class _Verdict:
    beat: bool
    percent: float  # how far the student's perplexity is below (beat) or above the baseline's


def _context(f: LMCardFacts) -> dict[str, Any]:
    spec, m = f.spec, md.Metrics(f.metrics)
    # In a sweep the student is the chosen run: its values replace the spec's.
    chosen = dict(f.metrics.get("chosen") or {})
    kind = chosen.pop("logits", spec.losses.logits)
    hp, names = spec.hyperparameters.model_copy(update=chosen), f.file_names
    columns = _generation_columns(f.generations)
    return {
        "f": f,
        "m": m,
        "spec": spec,
        "hp": hp,
        "title": _title(f),
        "verdict": _verdict(m["student_perplexity"], m["baseline_perplexity"]),
        "has_baseline": m["baseline_perplexity"] is not None,
        "student_line": _student_line(f),
        "teacher_file": _file(names.get("teacher"), spec.teacher.file_id),
        "train_file": _file(names.get("train"), spec.data.train_file_id),
        "validation_file": _file(names.get("validation"), spec.data.validation_file_id),
        "kind": kind,
        "loss_name": LOSS_NAMES.get(kind, kind),
        "cache_words": CACHE_WORDS.get(str(m["teacher_cache"]), md.text(m["teacher_cache"])),
        "hidden_pairs": _pairs(f.metrics.get("layer_pairs", {}).get("hidden")),
        "hidden_metric": HIDDEN_METRICS,
        "columns": columns,
        "generations": [[_generation_cell(getattr(g, c)) for c in columns] for g in f.generations],
        "curves": _curves_table(f),
        "listing": sorted(ARTIFACTS),
        "spec_json": json.dumps(spec.model_dump(mode="json"), indent=2),
    }


def _verdict(student: float | None, baseline: float | None) -> _Verdict | None:
    """Whether distillation beat the baseline on perplexity, and by how much; None without a
    baseline, or where either perplexity is not a finite number to compare."""
    if student is None or baseline is None:
        return None
    if not (math.isfinite(student) and math.isfinite(baseline)) or baseline <= 0:
        return None
    beat = student < baseline
    return _Verdict(beat, abs(baseline - student) / baseline * 100)


def _title(f: LMCardFacts) -> str:
    if f.spec.name:
        return md.text(f.spec.name) + (f" ({md.code_span(f.job_id)})" if f.job_id else "")
    return f.job_id or "distilled language model"


def _student_line(f: LMCardFacts) -> str:
    student = f.spec.student.model_dump(mode="json")
    arch = student.get("arch")
    if arch == "from_teacher":
        return f"the teacher's layers {', '.join(map(str, student['layers']))}, cut by depth"
    if arch == "pretrained":
        pretrained = _file(f.file_names.get("student"), student["file_id"])
        return f"the pretrained model {pretrained}, trained further"
    config = student.get("config", {})
    keys = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads")
    shown = ", ".join(f"{k} {md.text(config[k])}" for k in keys if k in config)
    return f"a new model of its own config ({shown or 'as given'})"


def _pairs(pairs: list[list[int]] | None) -> str | None:
    """``[[0, 0], [1, 3]]`` as "0 → 0, 1 → 3" (student layer → teacher layer)."""
    if not pairs:
        return None
    return ", ".join(f"{int(s)} → {int(t)}" for s, t in pairs)


def _file(name: str | None, file_id: str | None) -> str:
    if name and file_id:
        return f"{md.code_span(name)} ({md.code_span(file_id)})"
    return md.code_span(name or file_id) if name or file_id else "a file of its own"


def _generation_columns(generations: list[Generations]) -> list[str]:
    columns = ["prompt"]
    if any(g.reference is not None for g in generations):
        columns.append("reference")
    columns += ["teacher", "student"]
    if any(g.baseline is not None for g in generations):
        columns.append("baseline")
    return columns


# --- curves ---------------------------------------------------------------------------------


@dataclass
class _Table:
    head: list[str]
    rows: list[list[str]]


def _phases(f: LMCardFacts) -> list[str]:
    return [p for p in ("student", "baseline") if f.history.get(p)]


def _entries(f: LMCardFacts, phase: str) -> list[dict]:
    """The phase's epochs; in a sweep, the student's are the chosen run's."""
    entries = f.history.get(phase, [])
    sweep = f.metrics.get("sweep")
    if phase == "student" and sweep:
        chosen = next(i for i, row in enumerate(sweep) if row.get("chosen"))
        entries = [e for e in entries if e.get("run", chosen) == chosen]
    return entries


def _panels(f: LMCardFacts) -> list[curves.Panel]:
    def series(key: str) -> list[curves.Series]:
        return [curves.Series(p, [_finite(e.get(key)) for e in _entries(f, p)]) for p in _phases(f)]

    return [
        curves.Panel("train loss", series("train_loss")),
        curves.Panel("validation perplexity", series("val_perplexity")),
    ]


def _curves_table(f: LMCardFacts) -> _Table:
    phases = _phases(f)
    head = ["epoch"]
    for phase in phases:
        prefix = "" if phase == "student" else "baseline "
        head += [f"{prefix}train loss", f"{prefix}val perplexity", f"{prefix}token agreement"]
    epochs = max((len(_entries(f, p)) for p in phases), default=0)
    rows = []
    for e in range(epochs):
        cells = [str(e + 1)]
        for phase in phases:
            entries = _entries(f, phase)
            entry = entries[e] if e < len(entries) else {}
            cells += [
                md.num(entry.get("train_loss")),
                _perplexity(entry.get("val_perplexity")),
                md.pct(entry.get("val_token_agreement")),
            ]
        rows.append(cells)
    return _Table(head, rows)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# --- formats --------------------------------------------------------------------------------


def _perplexity(value: Any) -> str:
    if value is None:
        return md.DASH
    return f"{value:,.2f}" if math.isfinite(value) else "∞"


def _speed(value: Any) -> str:
    if value is None:
        return md.DASH
    return f"{value:,.1f} tokens/s" if value < 100 else f"{value:,.0f} tokens/s"


def _generation_cell(value: str | None) -> str:
    return md.DASH if value is None else _cell(value)


def _cell(value: Any) -> str:
    """A generated text as one table cell: Markdown and pipes escaped, each line break shown
    as <br> (the only HTML in it: ``md.text`` escapes any ``<`` the text had), empty as such."""
    lines = re.split(r"\r\n|\r|\n", str(value))
    cell = "<br>".join(md.text(line) for line in lines).strip()
    return cell or "*(nothing)*"
