"""Training throughput (target tokens/s) of a language-model job's student phase against a
hand-written loop over the same stored teacher signal and model.

    python benchmarks/lm_throughput.py [--epochs 5] [--repeats 5] [--device auto] [--threads 1]
                                       [--quick]

The teacher is a tiny Llama (4 layers, hidden 128) over the offline test tokenizer trained to a
vocabulary of 8,192 (``tests/helpers/lm.py``), trained for a few steps in the script. The
vocabulary is what makes an LM step differ from a classifier's (the LM head and the chunked loss
over it are most of a small student's step), so it has to be large; the real SmolLM2 (49,152) is
not used because dequantizing its GGUF and running its 30 layers for the teacher pass would take
most of the time budget on two cores, and the student's step is what is measured, not the
teacher. 8k keeps the LM head the largest matrix of the student (1M of its 1.4M parameters).
The student is ``from_teacher`` with layers [0, 3]; the data are ``--snippets`` review snippets
(``lm_corpus``) as ``{"text"}`` rows, 10% of them in a separate validation file.

Engine side: ``run_job`` as a worker runs it (progress callbacks every second, validation and a
checkpoint at every epoch end), with ``teacher_top_k`` 64 and a cache directory. A first,
untimed job runs the teacher pass and stores the signal; every timed job finds it there
(``teacher_cache: hit``) and its student reads it. The engine's epoch is the gap between two
epoch-end progress callbacks (the one whose point has ``val_perplexity``), so validation and the
checkpoint are inside it; setup, final metrics, speed measurement, generations and export are
outside any epoch and not counted.

The hand loop: the same student (``student_from_teacher`` on the same teacher, seeded alike), the
same rows (``read_lm_examples``, ``to_rows``, ``collate``), a ``SignalReader`` over the same stored
signal, ``loss_from_hidden`` on the student's last hidden states, AdamW with the job's learning
rate, the same batch size and the engine's per-epoch order (``epoch_order``): the minimal loop a
user would write over the same signal. Its epoch is its batches only.

Each side's tokens/s is the training rows' target tokens over the median of its epochs 2..E
(epoch 1 is dropped as warm-up: it also decodes the signal's shards). ``--repeats`` rounds
alternate which side runs first; each round gives the ratio engine / hand of tokens/s (higher is
better), and we print the median of those ratios. Two clocks, as in
benchmarks/engine_overhead.py: wall time, and the process's CPU time, which with one torch thread
is nearly immune to other processes on a shared machine, so it is the headline on CPU. On a GPU,
read the wall-time ratio. Target: ratio >= 0.95.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_overhead import epoch_times, now
from jobspec import JobSpec
from tests.helpers.lm import lm_corpus, lm_tokenizer, text_rows, tiny_llama, train_lm, write_jsonl
from tests.helpers.text import write_hf_archive
from worker.engine import EngineJob, NullCallbacks, Progress, run_job
from worker.engine.lm.data import read_lm_examples
from worker.engine.lm.losses import loss_from_hidden
from worker.engine.lm.models import student_from_teacher
from worker.engine.lm.rows import LMRows, collate, model_inputs, to_rows
from worker.engine.lm.signal import MANIFEST, SignalReader
from worker.engine.runs import epoch_order, torch_device

VOCAB = 8192
TEACHER = {"num_layers": 4, "hidden_size": 128, "heads": 4, "intermediate": 256}
LAYERS = [0, 3]
MAX_LENGTH = 64
HP: dict[str, Any] = {
    "epochs": 5,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "optimizer": "adamw",
    "weight_decay": 0.0,
    "temperature": 1.0,
    "alpha": 0.5,
    "teacher_top_k": 64,
    "teacher_signal": "top_k",  # as recorded in docs/benchmarks.md (sampled: the default since)
    "seed": 0,
}


class EpochClock(NullCallbacks):
    """Stamps every epoch-end progress call (the one whose point has val_perplexity)."""

    def __init__(self) -> None:
        self.epoch_ends: list[tuple[float, float]] = []

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        if any("val_perplexity" in p for p in points):
            self.epoch_ends.append(now())


def make_teacher(folder: Path, steps: int) -> Any:
    """A tiny Llama over the 8k tokenizer, trained for ``steps`` steps so that its signal is not
    uniform (a step's time does not depend on it, but the stored top-k's compression does)."""
    tokenizer = lm_tokenizer(vocab_size=VOCAB)
    model = tiny_llama(tokenizer, max_positions=128, **TEACHER)
    train_lm(model, tokenizer, lm_corpus(2000), steps=steps, max_length=MAX_LENGTH)
    write_hf_archive(model, tokenizer, folder / "teacher.zip")
    return model


def make_data(folder: Path, snippets: int) -> None:
    texts = lm_corpus(snippets, seed=5)
    held_out = max(1, len(texts) // 10)
    write_jsonl(folder / "train.jsonl", text_rows(texts[held_out:]))
    write_jsonl(folder / "val.jsonl", text_rows(texts[:held_out]))


def engine_job(folder: Path, name: str, device: str) -> EngineJob:
    spec = JobSpec.model_validate(
        {
            "task": "causal_lm",
            "teacher": {"file_id": "file_teacher"},
            "student": {"arch": "from_teacher", "layers": LAYERS},
            "data": {
                "train_file_id": "file_train",
                "validation_file_id": "file_val",
                "max_length": MAX_LENGTH,
            },
            "hyperparameters": HP,
        }
    )
    return EngineJob(
        spec=spec,
        teacher_path=folder / "teacher.zip",
        teacher_format="hf_archive",
        train_path=folder / "train.jsonl",
        train_format="jsonl",
        validation_path=folder / "val.jsonl",
        validation_format="jsonl",
        output_dir=folder / name,
        checkpoint_path=folder / f"{name}.ckpt",
        device=device,
        progress_interval=1.0,
        cache_dir=folder / "cache",
    )


def time_engine(folder: Path, name: str, device: str) -> tuple[float, float]:
    clock = EpochClock()
    result = run_job(engine_job(folder, name, device), clock)
    assert result.metrics["teacher_cache"] == "hit", result.metrics["teacher_cache"]
    return epoch_times(clock.epoch_ends)


def train_rows(folder: Path) -> tuple[LMRows, int]:
    """The training rows as the engine makes them, and the pad id it collates with."""
    tokenizer = lm_tokenizer(vocab_size=VOCAB)
    _, examples = read_lm_examples(folder / "train.jsonl", tokenizer, MAX_LENGTH)
    return to_rows(examples, MAX_LENGTH, packing=False), int(tokenizer.pad_token_id)


def train_signal(folder: Path, rows: LMRows) -> Path:
    """The stored training signal the first job wrote: the one store of exactly these rows."""
    found = []
    for manifest in (folder / "cache" / "signals").glob(f"*/{MANIFEST}"):
        reader = SignalReader(manifest.parent)
        if reader.sequences == len(rows) and reader.manifest["tokens"] == rows.target_tokens:
            found.append(manifest.parent)
    assert len(found) == 1, f"expected one stored training signal, found {found}"
    return found[0]


def time_loop(
    teacher: Any, rows: LMRows, pad_id: int, signal_dir: Path, device: str
) -> tuple[float, float]:
    """The baseline: the loop a user would write over the stored signal."""
    dev = torch_device(device)
    torch.manual_seed(HP["seed"])
    student = student_from_teacher(teacher, LAYERS).to(dev).train()
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=HP["learning_rate"], weight_decay=HP["weight_decay"]
    )
    signal = SignalReader(signal_dir)  # fresh: its shards are decoded in epoch 1, as the job's
    vocab = student.config.vocab_size
    ends = []
    for epoch in range(HP["epochs"]):
        order = epoch_order(len(rows), HP["seed"], epoch)
        for start in range(0, len(rows), HP["batch_size"]):
            indices = order[start : start + HP["batch_size"]].tolist()
            batch = collate(rows, indices, pad_id, dev)
            hidden = student.model(**model_inputs(batch)).last_hidden_state
            loss = loss_from_hidden(
                hidden,
                student.lm_head.weight[:vocab],
                batch.target_mask,
                signal.batch(indices, dev),
                batch.labels,
                temperature=HP["temperature"],
                alpha=HP["alpha"],
            ).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ends.append(now())
    return epoch_times(ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--snippets", type=int, default=400, help="review snippets of data")
    parser.add_argument("--teacher-steps", type=int, default=60, help="the teacher's training")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 2 rounds: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats, args.teacher_steps = 3, 2, 10
    HP["epochs"] = args.epochs
    torch.set_num_threads(args.threads)

    engine, loop = [], []  # per round: (wall, cpu) seconds per epoch
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher = make_teacher(folder, args.teacher_steps)
        make_data(folder, args.snippets)
        rows, pad_id = train_rows(folder)
        started = time.perf_counter()
        run_job(engine_job(folder, "fill", args.device))  # the teacher pass: stores the signal
        print(f"first job (teacher pass, untimed): {time.perf_counter() - started:.1f} s")
        signal_dir = train_signal(folder, rows)
        for round_ in range(args.repeats):
            order = ["engine", "loop"] if round_ % 2 == 0 else ["loop", "engine"]
            for side in order:
                if side == "engine":
                    engine.append(time_engine(folder, f"engine{round_}", args.device))
                else:
                    loop.append(time_loop(teacher, rows, pad_id, signal_dir, args.device))
            (ew, ec), (lw, lc) = engine[-1], loop[-1]
            print(
                f"round {round_ + 1}: tokens/s wall engine {rows.target_tokens / ew:.0f} / "
                f"loop {rows.target_tokens / lw:.0f} = {lw / ew:.3f}, "
                f"cpu engine {rows.target_tokens / ec:.0f} / loop {rows.target_tokens / lc:.0f}"
                f" = {lc / ec:.3f}"
            )

    print(
        f"device {torch_device(args.device)}, threads {args.threads}, vocabulary {VOCAB}, "
        f"{len(rows)} training rows, {rows.target_tokens} target tokens per epoch, "
        f"batch {HP['batch_size']}, {args.epochs} epochs (first dropped)"
    )
    tokens = rows.target_tokens
    for i, clock in enumerate(("wall", "cpu")):
        ratios = [lo[i] / e[i] for e, lo in zip(engine, loop, strict=True)]
        print(
            f"{clock}: engine {tokens / statistics.median(e[i] for e in engine):.0f} tokens/s, "
            f"loop {tokens / statistics.median(lo[i] for lo in loop):.0f} tokens/s, "
            f"ratio engine/loop = {statistics.median(ratios):.3f} "
            f"(median of per-round ratios, range {min(ratios):.3f}-{max(ratios):.3f})"
        )
    print("target: ratio >= 0.95 (higher is better)")


if __name__ == "__main__":
    main()
