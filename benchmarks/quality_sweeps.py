"""Does a sweep's choice hold on test? A temperature x learning-rate sweep per data set and seed,
and every combination trained again as a plain job and scored on the held-out test split.

    scripts/with-services.sh .venv/bin/python benchmarks/quality_sweeps.py [--seeds 3] [--quick]
        [--datasets digits,mnist1d,breast_cancer,wine] [--temperatures 1,2,4,8]

The setup is ``benchmarks/quality.py``'s (imported from it): the same throwaway Distillery (API
and one worker on PostgreSQL and Redis), the same fixed stratified 60/20/20 split and teacher per
data set (trained here, uploaded as TorchScript with the train and validation npz; the test split
never leaves this script), and the same student and budget per data set (``DATASETS``), with
KD's alpha 0.7.

For each data set (digits and mnist1d unless ``--datasets`` names others from ``DATASETS``) and
job seed:

- one job with ``"sweep": {"temperature": [1, 2, 4, 8], "learning_rate": [lr/3, lr, 3*lr]}``
  (lr: the data set's learning rate) and ``baseline: false``: it trains the student once per
  combination from that seed and keeps the best on validation (``metrics.chosen``, every run's
  validation numbers in ``metrics.sweep``);
- one plain job per combination (no sweep) with exactly those hyperparameters and the same seed.
  The engine is deterministic on CPU, so it trains the very student of the sweep's run: its
  ``student_accuracy`` must equal the sweep row's ``val_accuracy`` (checked and reported, never
  hidden). Its downloaded ``student.pt`` is scored on the test split.

Reported per data set and seed: the chosen (T, lr) with its validation and test accuracy, the
best test accuracy over the grid and where, the chosen run's rank on test (1 = best, ties share
the better rank), the grid's median test accuracy and the regret (best test - chosen test); then
the means over seeds and a verdict.

A full run writes its section at the end of docs/quality.md between ``<!-- sweeps:start -->`` and
``<!-- sweeps:end -->``. ``--quick`` (one seed, digits only, half the epochs) prints only.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._service import distillery
from benchmarks.quality import (
    DATASETS,
    DOC,
    KD,
    Arrays,
    DataSet,
    accuracy,
    check,
    download_student,
    follow,
    machine,
    revision,
    save_npz,
    split,
    train_teacher,
    upload,
)

START, END = "<!-- sweeps:start -->", "<!-- sweeps:end -->"
TEMPERATURES = [1.0, 2.0, 4.0, 8.0]
LR_FACTORS = [1 / 3, 1.0, 3.0]  # times the data set's learning rate
DEFAULT_SETS = ["digits", "mnist1d"]
DEFAULT = "the fixed default (T 4, lr)"
HEADING = "## Temperature and learning-rate sweeps: does the choice hold on test?"


@dataclass
class Bench:
    """One data set's grid, files and submitted jobs."""

    data: DataSet
    test: Arrays
    rows: tuple[int, int, int]
    teacher_test: float
    lr: float
    grid: list[tuple[float, float]]  # (temperature, learning rate), the sweep's order
    hyperparameters: dict[str, Any]
    files: tuple[str, str, str]  # teacher, train, validation file ids
    # seed -> the sweep job's id, and seed -> {(T, lr): the plain job's id}
    sweep_ids: dict[int, str] = field(default_factory=dict)
    plain_ids: dict[int, dict[tuple[float, float], str]] = field(default_factory=dict)
    # seed -> the collected results
    sweeps: dict[int, dict[str, Any]] = field(default_factory=dict)
    plains: dict[int, dict[tuple[float, float], dict[str, Any]]] = field(default_factory=dict)


def lr_label(lr: float, base: float) -> str:
    factor = lr / base
    name = "lr" if abs(factor - 1) < 1e-9 else ("lr/3" if factor < 1 else f"{factor:g}lr")
    return f"{name} ({lr:.3g})"


def prepare(client: httpx.Client, data: DataSet, epoch_scale: float, work: Path) -> Bench:
    splits = split(data)
    started = time.monotonic()
    teacher = train_teacher(data, splits)
    teacher_path = work / f"{data.name}-teacher.pt"
    torch.jit.save(torch.jit.script(teacher), str(teacher_path))
    teacher_test = accuracy(torch.jit.load(str(teacher_path)), splits.test)
    rows = (len(splits.train[1]), len(splits.val[1]), len(splits.test[1]))
    print(
        f"{data.name}: {rows[0]}/{rows[1]}/{rows[2]} rows; teacher test accuracy "
        f"{teacher_test:.2%} ({time.monotonic() - started:.1f} s to train)",
        flush=True,
    )
    teacher_id = upload(client, teacher_path, "teacher")
    train_id = upload(client, save_npz(work / f"{data.name}-train.npz", splits.train), "dataset")
    val_id = upload(client, save_npz(work / f"{data.name}-val.npz", splits.val), "dataset")
    hyperparameters = KD | data.hyperparameters
    hyperparameters["epochs"] = max(1, round(hyperparameters["epochs"] * epoch_scale))
    lr = float(data.hyperparameters["learning_rate"])
    grid = [(t, lr * f) for t in TEMPERATURES for f in LR_FACTORS]
    files = (teacher_id, train_id, val_id)
    return Bench(data, splits.test, rows, teacher_test, lr, grid, hyperparameters, files)


def spec(bench: Bench, seed: int, name: str, **extra: Any) -> dict[str, Any]:
    teacher_id, train_id, val_id = bench.files
    overrides = extra.pop("hyperparameters", {})
    return {
        "name": name,
        "teacher": {"file_id": teacher_id},
        "student": bench.data.student,
        "data": {"train_file_id": train_id, "validation_file_id": val_id},
        "hyperparameters": bench.hyperparameters | overrides | {"seed": seed},
        "baseline": False,
    } | extra


def submit(client: httpx.Client, bench: Bench, seeds: int) -> int:
    """Per seed: the sweep job, then one plain job per combination. Returns the jobs submitted."""
    n = 0
    sweep = {
        "temperature": TEMPERATURES,
        "learning_rate": [bench.lr * f for f in LR_FACTORS],
    }
    for seed in range(seeds):
        body = spec(bench, seed, f"sweeps-{bench.data.name}-seed{seed}", sweep=sweep)
        bench.sweep_ids[seed] = check(client.post("/v1/jobs", json=body))["id"]
        bench.plain_ids[seed] = {}
        for t, lr in bench.grid:
            body = spec(
                bench, seed, f"sweeps-{bench.data.name}-seed{seed}-T{t:g}-lr{lr:.3g}",
                hyperparameters={"temperature": t, "learning_rate": lr},
            )  # fmt: skip
            bench.plain_ids[seed][(t, lr)] = check(client.post("/v1/jobs", json=body))["id"]
        n += 1 + len(bench.grid)
    return n


def collect(client: httpx.Client, job_id: str, test: Arrays, work: Path) -> dict[str, Any]:
    job, _ = follow(client, job_id)
    if job["status"] != "succeeded":
        raise RuntimeError(f"{job['id']} {job['status']}: {job['error']}")
    student = torch.jit.load(str(download_student(client, job["id"], work)))
    run = {"job_id": job["id"], "spec": job["spec"]} | job["metrics"]
    run["job_seconds"] = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    run["test_accuracy"] = accuracy(student, test)
    return run


def sweep_row(run: dict[str, Any], t: float, lr: float) -> dict[str, Any]:
    return next(
        row
        for row in run["sweep"]
        if row["temperature"] == t and abs(row["learning_rate"] - lr) <= 1e-12 * lr
    )


def follow_all(client: httpx.Client, benches: list[Bench], total: int, work: Path) -> None:
    done = 0
    started = time.monotonic()
    for bench in benches:
        name = bench.data.name
        for seed, sweep_id in bench.sweep_ids.items():
            run = collect(client, sweep_id, bench.test, work)
            bench.sweeps[seed] = run
            done += 1
            chosen = run["chosen"]
            print(
                f"[{done}/{total} {time.monotonic() - started:5.0f} s] {name} seed {seed} sweep "
                f"{sweep_id}: chosen T {chosen['temperature']:g} lr "
                f"{chosen['learning_rate']:.3g}, val {run['student_accuracy']:.2%}, test "
                f"{run['test_accuracy']:.2%} ({run['job_seconds']:.0f} s)",
                flush=True,
            )
            bench.plains[seed] = {}
            for (t, lr), job_id in bench.plain_ids[seed].items():
                plain = collect(client, job_id, bench.test, work)
                bench.plains[seed][(t, lr)] = plain
                done += 1
                row = sweep_row(run, t, lr)
                same = plain["student_accuracy"] == row["val_accuracy"]
                print(
                    f"[{done}/{total} {time.monotonic() - started:5.0f} s]   T {t:g} lr "
                    f"{lr:.3g} {job_id}: val {plain['student_accuracy']:.2%} (sweep row "
                    f"{row['val_accuracy']:.2%}{'' if same else ' MISMATCH'}), test "
                    f"{plain['test_accuracy']:.2%} ({plain['job_seconds']:.0f} s)",
                    flush=True,
                )


# --- the analysis -----------------------------------------------------------------------------


@dataclass
class SeedResult:
    seed: int
    chosen: tuple[float, float]
    chosen_val: float
    chosen_test: float
    best_test: float
    best_at: list[tuple[float, float]]
    rank: int
    median_test: float
    default_test: float  # T 4 (KD's), the data set's lr
    default_val: float
    sweep_job_test: float  # the sweep job's own artifact on test
    mismatches: list[str]

    @property
    def regret(self) -> float:
        return self.best_test - self.chosen_test


def analyse(bench: Bench, seed: int) -> SeedResult:
    run = bench.sweeps[seed]
    plains = bench.plains[seed]
    chosen_row = next(row for row in run["sweep"] if row["chosen"])
    chosen = next(
        key
        for key in bench.grid
        if key[0] == chosen_row["temperature"]
        and abs(key[1] - chosen_row["learning_rate"]) <= 1e-12 * key[1]
    )
    tests = {key: plains[key]["test_accuracy"] for key in bench.grid}
    best = max(tests.values())
    mismatches = []
    for key in bench.grid:
        row = sweep_row(run, *key)
        plain = plains[key]
        if plain["student_accuracy"] != row["val_accuracy"]:
            mismatches.append(
                f"{bench.data.name} seed {seed} T {key[0]:g} lr {key[1]:.6g}: plain job "
                f"`{plain['job_id']}` student_accuracy {plain['student_accuracy']!r} vs sweep "
                f"`{run['job_id']}` row val_accuracy {row['val_accuracy']!r}"
            )
    if run["test_accuracy"] != tests[chosen]:
        mismatches.append(
            f"{bench.data.name} seed {seed}: the sweep job's student.pt scores "
            f"{run['test_accuracy']!r} on test, the plain job of its chosen combination "
            f"`{plains[chosen]['job_id']}` {tests[chosen]!r}"
        )
    default = (4.0, bench.lr)
    return SeedResult(
        seed=seed,
        chosen=chosen,
        chosen_val=chosen_row["val_accuracy"],
        chosen_test=tests[chosen],
        best_test=best,
        best_at=[key for key in bench.grid if tests[key] == best],
        rank=1 + sum(v > tests[chosen] for v in tests.values()),
        median_test=statistics.median(tests.values()),
        default_test=tests[default],
        default_val=plains[default]["student_accuracy"],
        sweep_job_test=run["test_accuracy"],
        mismatches=mismatches,
    )


def combo(bench: Bench, key: tuple[float, float]) -> str:
    return f"T {key[0]:g}, {lr_label(key[1], bench.lr)}"


def pct(x: float) -> str:
    return f"{x * 100:.1f}"


def seed_table(bench: Bench, results: list[SeedResult]) -> str:
    lines = [
        "| seed | chosen on val | chosen: val | chosen: test | best test (at) | rank on test "
        f"(of {len(bench.grid)}) | grid median test | regret (pt) | T 4, lr: test |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        at = "; ".join(combo(bench, key) for key in r.best_at[:3])
        if len(r.best_at) > 3:
            at += f"; +{len(r.best_at) - 3} more"
        lines.append(
            f"| {r.seed} | {combo(bench, r.chosen)} | {pct(r.chosen_val)} | {pct(r.chosen_test)} "
            f"| {pct(r.best_test)} ({at}) | {r.rank} | {pct(r.median_test)} "
            f"| {r.regret * 100:.1f} | {pct(r.default_test)} |"
        )
    return "\n".join(lines)


def grid_table(bench: Bench) -> str:
    """Validation / test accuracy per combination, mean over seeds; the cells the sweep chose
    counted in brackets."""
    seeds = sorted(bench.plains)
    chosen_count: dict[tuple[float, float], int] = {}
    for seed in seeds:
        key = analyse(bench, seed).chosen
        chosen_count[key] = chosen_count.get(key, 0) + 1
    lrs = [lr for _, lr in bench.grid[: len(LR_FACTORS)]]
    lines = [
        "| temperature | " + " | ".join(lr_label(lr, bench.lr) for lr in lrs) + " |",
        "|---|" + "---:|" * len(lrs),
    ]
    for t in TEMPERATURES:
        cells = []
        for lr in lrs:
            val = statistics.fmean(bench.plains[s][(t, lr)]["student_accuracy"] for s in seeds)
            test = statistics.fmean(bench.plains[s][(t, lr)]["test_accuracy"] for s in seeds)
            k = chosen_count.get((t, lr), 0)
            cells.append(f"{pct(val)} / {pct(test)}" + (f" (chosen {k}x)" if k else ""))
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def summary_table(benches: list[Bench], analysed: dict[str, list[SeedResult]]) -> str:
    lines = [
        "| data set | seeds | chosen: val | chosen: test | best test in hindsight | regret (pt) "
        "| grid median test | chosen - median (pt) | mean rank on test | T 4, lr: test "
        "| chosen - (T 4, lr) on test (pt) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in benches:
        rs = analysed[bench.data.name]
        lines.append(
            f"| {bench.data.name} | {len(rs)} | {pct(mean([r.chosen_val for r in rs]))} "
            f"| {pct(mean([r.chosen_test for r in rs]))} "
            f"| {pct(mean([r.best_test for r in rs]))} "
            f"| {mean([r.regret for r in rs]) * 100:.1f} "
            f"| {pct(mean([r.median_test for r in rs]))} "
            f"| {mean([r.chosen_test - r.median_test for r in rs]) * 100:+.1f} "
            f"| {mean([r.rank for r in rs]):.1f} of {len(bench.grid)} "
            f"| {pct(mean([r.default_test for r in rs]))} "
            f"| {mean([r.chosen_test - r.default_test for r in rs]) * 100:+.1f} |"
        )
    return "\n".join(lines)


def versus(diff: float, what: str) -> str:
    """'beat X by 0.3 points', 'tied with X', 'fell 0.3 points short of X' (diff in points)."""
    if round(diff, 1) > 0:
        return f"beat {what} by {diff:.1f} points"
    if round(diff, 1) < 0:
        return f"fell {-diff:.1f} points short of {what}"
    return f"tied with {what}"


def verdicts(benches: list[Bench], analysed: dict[str, list[SeedResult]]) -> str:
    """One bullet per data set, then one sentence over all of them (each data set weighs the
    same)."""
    lines = []
    for bench in benches:
        rs = analysed[bench.data.name]
        regret = mean([r.regret for r in rs]) * 100
        over_median = mean([r.chosen_test - r.median_test for r in rs]) * 100
        over_default = mean([r.chosen_test - r.default_test for r in rs]) * 100
        val_gain = mean([r.chosen_val - r.default_val for r in rs]) * 100
        top = sum(r.rank == 1 for r in rs)
        worst = max(r.regret for r in rs) * 100
        lines.append(
            f"- **{bench.data.name}**: choosing on validation lost on average {regret:.1f} points "
            f"of test accuracy against the best combination in hindsight (at most {worst:.1f} in "
            f"one seed; the choice was the best on test in {top} of {len(rs)} seeds); on test it "
            f"{versus(over_median, 'the grid median')} and {versus(over_default, DEFAULT)}, "
            f"after beating that default by {val_gain:.1f} points on validation. "
            f"One test example is {100 / bench.rows[2]:.2f} points, one validation "
            f"example {100 / bench.rows[1]:.2f}."
        )
    every = [r for rs in analysed.values() for r in rs]
    if len(benches) > 1:
        per_set = analysed

        def pooled(f: Callable[[SeedResult], float]) -> float:
            return mean([mean([f(r) for r in rs]) for rs in per_set.values()]) * 100

        regret = pooled(lambda r: r.regret)
        test_gain = pooled(lambda r: r.chosen_test - r.default_test)
        val_gain = pooled(lambda r: r.chosen_val - r.default_val)
        if val_gain <= 0:
            carried = "the sweep gained nothing over that default on validation either"
        elif test_gain < val_gain / 2:
            carried = "most of what the sweep gained on validation did not carry over to test"
        else:
            carried = "most of what the sweep gained on validation carried over to test"
        over_median = pooled(lambda r: r.chosen_test - r.median_test)
        lines += [
            "",
            f"**Verdict**: over these {len(benches)} data sets ({len(every)} sweeps, each data "
            f"set weighing the same), choosing temperature and learning rate on validation lost "
            f"on average {regret:.1f} points of test accuracy against the best combination in "
            f"hindsight; on test it {versus(over_median, 'the grid median')} and "
            f"{versus(test_gain, DEFAULT)}, where on validation it had beaten that default by "
            f"{val_gain:.1f} points: {carried}. The choice was the best on test in "
            f"{sum(r.rank == 1 for r in every)} of {len(every)} sweeps.",
        ]
    return "\n".join(lines)


def jobs_table(benches: list[Bench]) -> str:
    lines = [
        "| data set | seed | T | lr | sweep job | sweep row val | plain job | plain val | same "
        "| plain test | chosen | plain job s |",
        "|---|---:|---:|---:|---|---:|---|---:|---|---:|---|---:|",
    ]
    for bench in benches:
        for seed in sorted(bench.plains):
            run = bench.sweeps[seed]
            for key in bench.grid:
                row = sweep_row(run, *key)
                plain = bench.plains[seed][key]
                same = plain["student_accuracy"] == row["val_accuracy"]
                lines.append(
                    f"| {bench.data.name} | {seed} | {key[0]:g} | {key[1]:.3g} "
                    f"| `{run['job_id']}` | {row['val_accuracy'] * 100:.2f} "
                    f"| `{plain['job_id']}` | {plain['student_accuracy'] * 100:.2f} "
                    f"| {'yes' if same else '**no**'} | {plain['test_accuracy'] * 100:.2f} "
                    f"| {'yes' if row['chosen'] else ''} | {plain['job_seconds']:.1f} |"
                )
    return "\n".join(lines)


def report(benches: list[Bench], seeds: int, command: str, seconds: float) -> str:
    analysed = {b.data.name: [analyse(b, s) for s in sorted(b.plains)] for b in benches}
    mismatches = [m for rs in analysed.values() for r in rs for m in r.mismatches]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    n_jobs = sum(len(b.sweeps) + sum(len(p) for p in b.plains.values()) for b in benches)
    setups = "; ".join(
        f"**{b.data.name}** (teacher test {pct(b.teacher_test)}): student "
        f"`{b.data.student['arch']}` hidden {b.data.student.get('hidden_sizes')}, "
        f"{b.hyperparameters['epochs']} epochs, batch {b.hyperparameters['batch_size']}, "
        f"lr {b.lr:g}, {b.rows[0]}/{b.rows[1]}/{b.rows[2]} rows train/val/test"
        for b in benches
    )
    sweep_json = (
        '`"sweep": {"temperature": [' + ", ".join(f"{t:g}" for t in TEMPERATURES) + "], "
        '"learning_rate": [lr/3, lr, 3*lr]}`'
    )
    check_line = (
        f"Determinism check: every one of the {sum(len(b.grid) * len(b.plains) for b in benches)} "
        "plain jobs' `student_accuracy` equals its sweep row's `val_accuracy` exactly, and every "
        "sweep job's own `student.pt` scores on test exactly what the plain job of its chosen "
        "combination scores."
        if not mismatches
        else "**Determinism check failed** (the engine should train the same student in a sweep "
        "run and in a plain job with the same seed and hyperparameters):\n\n"
        + "\n".join(f"- {m}" for m in mismatches)
    )
    parts = [
        HEADING,
        "",
        f"Measured {date} on {machine()}, at {revision()}, in {seconds / 60:.1f} minutes "
        f"({n_jobs} jobs), with",
        "",
        f"```bash\n{command}\n```",
        "",
        "The data sets, splits, teachers, students and budgets of `benchmarks/quality.py` above "
        "(alpha 0.7, AdamW); only temperature and learning rate vary. Per data set and job seed: "
        f"one job with {sweep_json} and `baseline: false` ({len(benches[0].grid)} runs from the "
        "same seed, the best kept on validation: `metrics.chosen`), and one plain job per "
        "combination with exactly those hyperparameters and the same seed, which trains the very "
        "student of the sweep's run (the engine is deterministic on CPU) and whose `student.pt` "
        "is scored here on the test split, which the service never sees. Rank on test: 1 = best "
        "of the grid, ties share the better rank. Regret: best test accuracy over the grid minus "
        "the chosen run's. Accuracies in %.",
        "",
        setups + ".",
        "",
        check_line,
        "",
        "Means over seeds:",
        "",
        summary_table(benches, analysed),
        "",
        *verdicts(benches, analysed).split("\n"),
        "",
    ]
    for bench in benches:
        parts += [
            f"### {bench.data.name}",
            "",
            seed_table(bench, analysed[bench.data.name]),
            "",
            f"Validation / test accuracy per combination, mean over {seeds} seed(s):",
            "",
            grid_table(bench),
            "",
        ]
    parts += [
        "<details><summary>Every job</summary>",
        "",
        jobs_table(benches),
        "",
        "</details>",
    ]
    return "\n".join(parts)


def write_doc(block: str) -> None:
    """Replace the sweeps block, or append it at the end; the rest of the file is left alone."""
    text = DOC.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        DOC.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    else:
        DOC.write_text(f"{text.rstrip()}\n\n{START}\n{block}\n{END}\n")


def main() -> int:
    global TEMPERATURES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="job seeds per data set")
    parser.add_argument(
        "--datasets", default=",".join(DEFAULT_SETS), help="comma-separated names from DATASETS"
    )
    parser.add_argument(
        "--temperatures",
        default=",".join(f"{t:g}" for t in TEMPERATURES),
        help="comma-separated temperatures (the grid is these x [lr/3, lr, 3*lr])",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, digits only, half the epochs; print only"
    )
    args = parser.parse_args()
    TEMPERATURES = [float(t) for t in args.temperatures.split(",")]
    if 4.0 not in TEMPERATURES:
        parser.error("the grid must include temperature 4 (the fixed default it is compared to)")
    names = ["digits"] if args.quick else args.datasets.split(",")
    seeds, epoch_scale = (1, 0.5) if args.quick else (args.seeds, 1.0)
    chosen_sets = [next(d for d in DATASETS if d.name == name) for name in names]
    command = "scripts/with-services.sh .venv/bin/python benchmarks/quality_sweeps.py " + " ".join(
        sys.argv[1:]
    )

    torch.set_num_threads(1)
    os.environ.setdefault("DISTILL_TORCH_THREADS", "1")
    started = time.monotonic()
    with (
        distillery() as (base, admin_key, _settings),
        tempfile.TemporaryDirectory(prefix="distill-sweeps-") as tmp,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
        ) as client,
    ):
        benches = []
        total = 0
        for data in chosen_sets:
            # Submitted as soon as each data set is ready: the worker starts on the first data
            # set while the next teacher trains here.
            bench = prepare(client, data, epoch_scale, Path(tmp))
            total += submit(client, bench, seeds)
            benches.append(bench)
            print(f"  submitted {total} jobs so far", flush=True)
        follow_all(client, benches, total, Path(tmp))
    seconds = time.monotonic() - started

    block = report(benches, seeds, command.strip(), seconds)
    print(f"\n{block}")
    if args.quick:
        print("\n--quick: docs/quality.md left as it was.")
        return 0
    write_doc(block)
    print(f"\nWrote the sweeps section of {DOC.relative_to(DOC.parent.parent)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
