"""How far a sampled teacher signal's estimate of the teacher's distribution is from it, and how
many tokens a row names, for heads and numbers of draws; on the real SmolLM2-135M-Instruct
teacher over real film reviews (the corpus of docs/quality.md).

    python benchmarks/lm_signal_error.py [--documents 20] [--length 64] [--repeats 3]

A sampled signal (``worker.engine.lm.signal.sampled_signal``) keeps a head of the most likely
tokens exactly and draws the rest; the forward-KL gradient it gives is ``q - p_hat`` (at T = 1)
where ``p_hat`` is its estimate of the teacher's distribution ``p``: unbiased, so what it costs
is the estimate's variance, ``E ||p_hat - p||^2``, printed here per row with the tokens a row
names, both as ratios against 64 draws without a head (the baseline, measured in the same
process), and the store's compressed bytes per token (the first repeat's signal written by
``SignalWriter`` as a job's store is). Each figure is the mean over ``--repeats`` draws.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.gguf import smollm2_gguf  # noqa: E402
from tests.helpers.lm import lm_corpus  # noqa: E402
from worker.engine.lm.gguf import gguf_to_hf  # noqa: E402
from worker.engine.lm.losses import sampled_log_weights  # noqa: E402
from worker.engine.lm.models import load_causal_lm  # noqa: E402
from worker.engine.lm.signal import SignalReader, SignalWriter, sampled_signal  # noqa: E402

ROWS = [(0, 64), (0, 128), (8, 56), (8, 40), (16, 48), (16, 112)]  # (head, draws)


def estimate(signal, log_probs: torch.Tensor) -> torch.Tensor:
    """The signal's estimate of the teacher's distribution, dense: the weights the loss gives
    its stored tokens (``losses.sampled_log_weights``), scattered over the vocabulary."""
    weights = sampled_log_weights(signal)[0].exp()
    return torch.zeros_like(log_probs).scatter_add_(-1, signal.ids, weights)


def store_size(signal, k: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        with SignalWriter(Path(tmp), k, method="sampled") as writer:
            writer.add(signal)
        return SignalReader(Path(tmp)).bytes_per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        teacher = load_causal_lm(gguf_to_hf(smollm2_gguf(), Path(tmp) / "smollm2"))
        rows = []
        with torch.no_grad():
            for text in lm_corpus(args.documents, seed=2026):
                ids = teacher.tokenizer(text, return_tensors="pt").input_ids[:, : args.length]
                rows.append(teacher.model(ids).logits[0].float().log_softmax(-1))
    log_probs = torch.cat(rows)
    mask = torch.ones(1, log_probs.shape[0], dtype=torch.bool)
    top64 = float(log_probs.exp().topk(64, dim=-1).values.sum(-1).mean())
    print(
        f"{log_probs.shape[0]} positions, vocabulary {log_probs.shape[-1]:,}; "
        f"the 64 most likely tokens hold {top64:.1%} of the mass on average"
    )
    print("| head + draws (k) | E‖p̂ - p‖² | ratio | tokens named a row | ratio | B/token |")
    print("|---|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    results = {}
    for head, draws in ROWS:
        errors, named, stored = 0.0, 0.0, 0.0
        for repeat in range(args.repeats):
            signal = sampled_signal(log_probs[None], mask, head + draws, generator, head=head)
            if repeat == 0:
                stored = store_size(signal, head + draws)
            error = ((estimate(signal, log_probs) - log_probs.exp()) ** 2).sum(-1).mean()
            errors += float(error) / args.repeats
            named += float(torch.isfinite(signal.logprobs).sum(-1).float().mean()) / args.repeats
        results[head, draws] = errors, named
        base_error, base_named = results[ROWS[0]]
        print(
            f"| {head} + {draws} ({head + draws}) | {errors:.5f} | {errors / base_error:.2f} | "
            f"{named:.1f} | {named / base_named:.2f} | {stored:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
