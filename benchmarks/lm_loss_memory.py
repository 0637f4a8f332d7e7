"""Peak memory of the chunked language-model loss against the naive full-vocabulary loss.

    python benchmarks/lm_loss_memory.py [--batch 2] [--length 512] [--vocab 49152] [--hidden 576]
                                        [--k 64] [--chunk-size 128]

Both compute the same forward KL against a stored top-k signal (k = 64) from the student's last
hidden states and LM head (SmolLM2-135M's shapes: hidden 576, vocabulary 49,152), forward and
backward, in float32 on the CPU:
- ``naive``: ``logits = hidden @ W.T`` for every position, then the loss over the whole
  (batch x length x vocab) tensor, as one would write it;
- ``chunked``: ``loss_from_hidden`` with ``--chunk-size`` positions at a time.

How memory is measured: each variant runs in a fresh subprocess, which builds its inputs, reads
its peak resident set size (``ru_maxrss``), runs the loss and its backward pass once, and reads
the peak again. The difference is the loss's own peak above everything that existed before it
(torch, the inputs, the weights); ``tracemalloc`` cannot see torch's allocations and torch's CPU
profiler reports allocations, not the peak of what is live. Large tensors are mmap'ed by the
allocator and given back on free (the script fixes glibc's mmap threshold so that this holds), so
RSS follows what is live. The script prints both peaks,
their ratio, and checks that both variants computed the same loss.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine.lm.losses import (
    DEFAULT_CHUNK_SIZE,
    divergence,
    loss_from_hidden,
    student_buckets,
    tempered_teacher_buckets,
)
from worker.engine.lm.signal import TopKSignal


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TopKSignal]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.length, args.hidden, generator=generator)
    weight = torch.randn(args.vocab, args.hidden, generator=generator) / args.hidden**0.5
    mask = torch.ones(args.batch, args.length, dtype=torch.bool)
    tokens = args.batch * args.length
    logprobs = torch.randn(tokens, args.k, generator=generator).sort(-1, descending=True).values
    logprobs = logprobs - 3 - torch.log(torch.tensor(float(args.k)))
    ids = torch.stack(
        [torch.randperm(args.vocab, generator=generator)[: args.k].clone() for _ in range(tokens)]
    )
    tail = (1 - logprobs.exp().sum(-1)).clamp_min(0)
    return hidden.requires_grad_(), weight.requires_grad_(), mask, TopKSignal(ids, logprobs, tail)


def naive(hidden, weight, mask, signal) -> torch.Tensor:
    logits = (hidden @ weight.T)[mask]
    teacher = tempered_teacher_buckets(signal, 1.0)
    return divergence(teacher, student_buckets(logits, signal.ids, 1.0)).mean()


def run_variant(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    hidden, weight, mask, signal = inputs(args)
    before = peak_mib()
    if args.variant == "naive":
        loss = naive(hidden, weight, mask, signal)
    else:
        loss = loss_from_hidden(hidden, weight, mask, signal, chunk_size=args.chunk_size).total
    loss.backward()
    after = peak_mib()
    print(json.dumps({"before": before, "after": after, "loss": float(loss)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=["naive", "chunked"])
    args = parser.parse_args()
    if args.variant:
        return run_variant(args)

    # A fixed mmap threshold: glibc otherwise raises it after the first large free and serves
    # later tensors from a heap it never gives back, so RSS would stop following what is live.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    results = {}
    for variant in ("naive", "chunked"):
        argv = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    full_logits = args.batch * args.length * args.vocab * 4 / 2**20
    print(
        f"batch {args.batch}, length {args.length}, vocabulary {args.vocab}, hidden {args.hidden}, "
        f"k {args.k}, chunk {args.chunk_size}; "
        f"one float32 copy of the full logits: {full_logits:.0f} MiB"
    )
    for variant, r in results.items():
        print(
            f"{variant:8s} peak RSS {r['after']:7.0f} MiB, before the loss {r['before']:7.0f} MiB, "
            f"the loss's own peak {r['after'] - r['before']:7.0f} MiB, loss {r['loss']:.6f}"
        )
    own = {v: r["after"] - r["before"] for v, r in results.items()}
    same = abs(results["naive"]["loss"] - results["chunked"]["loss"]) <= 1e-4 * abs(
        results["naive"]["loss"]
    )
    print(f"chunked / naive, the loss's own peak: {own['chunked'] / own['naive']:.3f}")
    whole = results["chunked"]["after"] / results["naive"]["after"]
    print(f"chunked / naive, whole-process peak:  {whole:.3f}")
    print(f"same loss: {same}")


if __name__ == "__main__":
    main()
