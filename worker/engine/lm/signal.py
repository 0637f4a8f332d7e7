"""The teacher's signal, computed once and stored: for every target token, k of its tokens with
their log-probabilities (at T = 1, float32 when computed) and the probability mass left outside
them. Later jobs read it instead of loading the teacher. Two ways to choose the k tokens:

- ``top_k``: the k most likely. The loss then sees the teacher's head exactly and its tail only as
  one bucket of mass, which is biased: a flat teacher (much of its mass past the k-th token)
  teaches the student nothing about how to spread that mass.
- ``sampled``: k draws from the teacher's distribution, with replacement, kept as the distinct
  tokens drawn and how often each was (``counts``). The counts over k are an unbiased estimate of
  the teacher's whole distribution, so the forward-KL gradient computed from them is an unbiased
  estimate of the dense teacher's ("Sparse Logit Sampling", Anshumann et al., ACL 2025): the
  tail is taught too, on average. A row holds at most k tokens; fewer when draws repeat (a
  peaked teacher), the rest of the row being padding: count 0, log-probability -inf and the
  row's last token id repeated (so that no other token is named twice). ``sampled_signal`` can
  also keep a head of the most likely tokens exactly and draw only the rest (stratified: the
  estimate's variance falls, docs/benchmarks.md), head tokens having count 0 and a finite
  log-probability; a job does not use it: a student taught from 8 head tokens and 56 draws came
  out worse than from 64 plain draws (docs/quality.md).

On disk, under a content-addressed key (``signal_key``), a directory of shards, each the signal of
``shard_size`` sequences as one safetensors file, compressed:

- ``ids`` (tokens, k) int32, ``logprobs`` (tokens, k) bfloat16 (or float16), ``tail`` (tokens,)
  float32: the mass outside the k tokens, ``exp(logsumexp(other logits) - logsumexp(logits))``,
  which is ``1 - sum(exp(logprobs))`` computed without cancellation, so never negative;
- a sampled store keeps each row's ids as differences (the first id, then each id minus the one
  before it: small numbers, as the ids are in increasing order; 0 over the padding), which
  lzma packs tighter than the ids themselves;
- ``counts`` (tokens, k) uint8 (int16 past k = 255), sampled stores only: how many of the draws
  each token had (0 for the head and the padding);
- ``offsets`` (sequences + 1,) int64: sequence i's target tokens are rows
  ``offsets[i]:offsets[i+1]``, in the order of its target mask.

Compression is the standard library's ``lzma`` (the ``zstandard`` package is not installed in our
environment). Measured on a real teacher's signal (docs/benchmarks.md, "Language-model loss
memory"), lzma shrinks the shards more than ``zlib`` at level 9, at a cost paid once per shard
written and read. ``manifest.json`` is written last: a directory without one is incomplete and
is never read. Every file is written atomically.
"""

import hashlib
import json
import lzma
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from worker.engine.artifacts import atomic_write

DEFAULT_TOP_K = 64
DEFAULT_SHARD_SIZE = 256  # sequences per shard
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOGPROB_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
METHODS = ("top_k", "sampled")
# bfloat16 stores 135 bytes a token at k = 64 against float16's 164 and adds 0.00001 nats to the
# store's KL from the dense teacher (docs/benchmarks.md, "Language-model loss memory").
DEFAULT_LOGPROB_DTYPE = "bfloat16"


@dataclass(frozen=True)
class TopKSignal:
    """The signal of a run of target tokens: ``ids`` (n, k) int64, ``logprobs`` (n, k) and
    ``tail`` (n,), no dense vocabulary anywhere; a sampled signal has ``counts`` (n, k) too
    (0 on a row's padding)."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail: torch.Tensor
    counts: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        return self.ids.shape[0]

    @property
    def valid(self) -> torch.Tensor | None:
        """Which entries name a token (None: all of them, as in a top-k signal): a sampled
        row's padding has log-probability -inf."""
        return None if self.counts is None else torch.isfinite(self.logprobs)

    def slice(self, start: int, end: int) -> "TopKSignal":
        counts = None if self.counts is None else self.counts[start:end]
        return TopKSignal(
            self.ids[start:end],
            self.logprobs[start:end].detach(),
            self.tail[start:end].detach(),
            counts,
        )

    def to(self, device: torch.device | str) -> "TopKSignal":
        counts = None if self.counts is None else self.counts.to(device)
        return TopKSignal(
            self.ids.to(device), self.logprobs.to(device), self.tail.to(device), counts
        )


def top_k_signal(
    logits: torch.Tensor, target_mask: torch.Tensor, k: int = DEFAULT_TOP_K, chunk_size: int = 1024
) -> TopKSignal:
    """The signal of the masked positions of ``logits`` (batch, length, vocab), row-major, in
    float32: log_softmax at T = 1 over ``chunk_size`` positions at a time, so no float32 copy of
    the whole logits is made. ``k`` larger than the vocabulary keeps the whole vocabulary."""
    vocab = logits.shape[-1]
    k = min(k, vocab)
    selected = logits.reshape(-1, vocab)[target_mask.reshape(-1).bool()]
    parts = []
    for start in range(0, selected.shape[0], chunk_size):
        log_probs = F.log_softmax(selected[start : start + chunk_size].detach().float(), dim=-1)
        top, ids = log_probs.topk(k, dim=-1)
        tail = log_probs.scatter(-1, ids, float("-inf")).logsumexp(-1).exp()
        parts.append(TopKSignal(ids, top, tail))
    if not parts:
        empty = logits.new_empty((0, k), dtype=torch.float32)
        return TopKSignal(empty.long(), empty, empty[:, 0])
    return TopKSignal(
        *(torch.cat(ts) for ts in zip(*((p.ids, p.logprobs, p.tail) for p in parts), strict=True))
    )


def sampled_signal(
    logits: torch.Tensor,
    target_mask: torch.Tensor,
    k: int = DEFAULT_TOP_K,
    generator: torch.Generator | None = None,
    head: int = 0,
    chunk_size: int = 256,
) -> TopKSignal:
    """As ``top_k_signal``, but the tokens are draws, with replacement, from the teacher's
    distribution at T = 1 (``generator`` makes them reproducible): ``k - head`` of them, from
    the distribution over the vocabulary less the ``head`` most likely tokens, which are kept
    for certain (none by default). Each row holds the head and the distinct tokens drawn, in
    increasing id order, with their exact log-probabilities and ``counts`` (0 for the head),
    then padding."""
    vocab = logits.shape[-1]
    width = min(k, vocab)  # a row names at most k tokens, and no more than there are
    head = min(head, width - 1)
    selected = logits.reshape(-1, vocab)[target_mask.reshape(-1).bool()]
    parts = []
    for start in range(0, selected.shape[0], chunk_size):
        log_probs = F.log_softmax(selected[start : start + chunk_size].detach().float(), dim=-1)
        in_head = torch.zeros_like(log_probs, dtype=torch.bool)
        in_head.scatter_(-1, log_probs.topk(head, dim=-1).indices, True)
        rest = log_probs.masked_fill(in_head, float("-inf")).exp()
        # A row whose rest underflowed to 0 still draws (what it draws then weighs nothing).
        rest = torch.where(rest.sum(-1, keepdim=True) > 0, rest, (~in_head).float())
        draws = torch.multinomial(rest, k - head, replacement=True, generator=generator)
        histogram = torch.zeros_like(log_probs).scatter_add_(
            -1, draws, torch.ones_like(draws, dtype=log_probs.dtype)
        )
        named = in_head | (histogram > 0)
        ids = torch.where(named, histogram + k + 1, 0).topk(width, dim=-1).indices  # all named
        # Named tokens first, in id order (sorted ids compress better); padding after them.
        valid = named.gather(-1, ids)
        ids = torch.where(valid, ids, vocab).sort(dim=-1).values
        valid = ids < vocab
        last = ids.gather(-1, valid.sum(-1, keepdim=True) - 1)
        ids = torch.where(valid, ids, last)
        counts = torch.where(valid, histogram.gather(-1, ids), 0)
        logprobs = torch.where(valid, log_probs.gather(-1, ids), float("-inf"))
        tail = log_probs.scatter(-1, ids, float("-inf")).logsumexp(-1).exp()
        parts.append(TopKSignal(ids, logprobs, tail, counts.long()))
    if not parts:
        empty = logits.new_empty((0, width), dtype=torch.float32)
        return TopKSignal(empty.long(), empty, empty[:, 0], empty.long())
    return TopKSignal(
        *(
            torch.cat(ts)
            for ts in zip(*((p.ids, p.logprobs, p.tail, p.counts) for p in parts), strict=True)
        )
    )


def signal_key(
    teacher_sha256: str,
    tokenizer_sha256: str,
    data_sha256: str,
    max_length: int,
    k: int,
    template_sha256: str | None,
    method: str = "top_k",
) -> str:
    """The store's key: sha256 of a canonical JSON of everything the signal depends on (the
    method is named only when not ``top_k``, so that top-k stores written before it keep their
    keys)."""
    facts: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "teacher_sha256": teacher_sha256,
        "tokenizer_sha256": tokenizer_sha256,
        "data_sha256": data_sha256,
        "max_length": max_length,
        "k": k,
        "template_sha256": template_sha256,
    }
    if method != "top_k":
        facts["method"] = method
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def bytes_per_token(k: int, dtype: torch.dtype = torch.float16) -> int:
    """Uncompressed bytes of one target token's signal: k int32 ids, k log-probs of ``dtype``
    and the float32 tail (the per-sequence offsets are not counted: 8 bytes a sequence)."""
    return k * (4 + dtype.itemsize) + 4


class SignalWriter:
    """Appends sequences' signals and writes a shard every ``shard_size`` sequences; ``close``
    writes the last shard and the manifest. Use it as a context manager: on an exception no
    manifest is written, so the half-written store is never read."""

    def __init__(
        self,
        directory: Path,
        k: int,
        shard_size: int = DEFAULT_SHARD_SIZE,
        logprob_dtype: str = DEFAULT_LOGPROB_DTYPE,
        method: str = "top_k",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown signal method {method!r}; expected one of {METHODS}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.k, self.shard_size, self.logprob_dtype = k, shard_size, logprob_dtype
        self.method = method
        self._pending: list[TopKSignal] = []
        self.sequences = self.tokens = self.stored_bytes = 0
        self._shards = 0
        # Facts measured along with the signal (the teacher's own loss on it, ...), kept in the
        # manifest so that a later job reading the store has them without the teacher.
        self.stats: dict[str, float | int] = {}

    def add(self, signal: TopKSignal) -> None:
        """One sequence's signal (its target tokens, in order)."""
        if signal.ids.shape[1] != self.k:
            raise ValueError(f"the store keeps k={self.k}, this signal has {signal.ids.shape[1]}")
        if (signal.counts is not None) != (self.method == "sampled"):
            raise ValueError(f"a {self.method} store takes signals with counts only if sampled")
        self._pending.append(signal.to("cpu"))
        self.sequences += 1
        self.tokens += signal.tokens
        if len(self._pending) == self.shard_size:
            self._flush()

    def close(self) -> Path:
        if self._pending:
            self._flush()
        manifest = {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "method": self.method,
            "shard_size": self.shard_size,
            "shards": self._shards,
            "sequences": self.sequences,
            "tokens": self.tokens,
            "logprob_dtype": self.logprob_dtype,
            "compression": "xz",
            "stored_bytes": self.stored_bytes,
            "stats": self.stats,
        }
        text = json.dumps(manifest, indent=2) + "\n"
        return atomic_write(self.directory / MANIFEST, lambda p: _write(p, text.encode()))

    def __enter__(self) -> "SignalWriter":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()

    def _flush(self) -> None:
        counts = torch.tensor([0] + [s.tokens for s in self._pending])
        tensors = {
            "ids": torch.cat([s.ids for s in self._pending]).to(torch.int32),
            "logprobs": torch.cat([s.logprobs for s in self._pending]).to(
                LOGPROB_DTYPES[self.logprob_dtype]
            ),
            "tail": torch.cat([s.tail for s in self._pending]).float(),
            "offsets": counts.cumsum(0).to(torch.int64),
        }
        if self.method == "sampled":
            stored = torch.cat([s.counts for s in self._pending if s.counts is not None])
            tensors["counts"] = stored.to(torch.uint8 if self.k <= 255 else torch.int16)
            ids = tensors["ids"]
            tensors["ids"] = torch.cat([ids[:, :1], ids.diff(dim=-1)], dim=-1)
        data = lzma.compress(save_safetensors({k: v.contiguous() for k, v in tensors.items()}))
        atomic_write(self.directory / _shard_name(self._shards), lambda p: _write(p, data))
        self.stored_bytes += len(data)
        self._shards += 1
        self._pending = []


class SignalReader:
    """Reads a complete store: ``batch(indices, device)`` gives the signal of those sequences'
    target tokens, concatenated in the order given. Keeps the shards it decoded last, up to
    ``cache_bytes`` of them (training reads sequences in a shuffled order, so a store that fits
    is decoded once per job)."""

    def __init__(self, directory: Path, cache_bytes: int = 2 * 2**30) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"no complete teacher signal in {self.directory}")
        self.manifest = json.loads(manifest_path.read_text())
        self.k: int = self.manifest["k"]
        self.method: str = self.manifest.get("method", "top_k")
        self.sequences: int = self.manifest["sequences"]
        self.stats: dict[str, float | int] = self.manifest.get("stats", {})
        self.cache_bytes = cache_bytes
        self._cached: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    @property
    def bytes_per_token(self) -> float:
        """Measured: the compressed shards' bytes over the target tokens they hold."""
        return self.manifest["stored_bytes"] / max(self.manifest["tokens"], 1)

    def batch(self, indices: Iterable[int], device: torch.device | str = "cpu") -> TopKSignal:
        parts = [self._sequence(i) for i in indices]
        ids, logprobs, tail, *counts = (torch.cat(ts) for ts in zip(*parts, strict=True))
        counted = counts[0].long() if counts else None
        return TopKSignal(ids.long(), logprobs.float(), tail, counted).to(device)

    def __iter__(self) -> Iterator[TopKSignal]:
        for i in range(self.sequences):
            yield self.batch([i])

    def _sequence(self, index: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= index < self.sequences:
            raise IndexError(f"sequence {index} of {self.sequences}")
        shard, row = divmod(index, self.manifest["shard_size"])
        tensors = self._shard(shard)
        start, end = (int(x) for x in tensors["offsets"][row : row + 2])
        names = ["ids", "logprobs", "tail"] + (["counts"] if "counts" in tensors else [])
        return tuple(tensors[name][start:end] for name in names)

    def _shard(self, shard: int) -> dict[str, torch.Tensor]:
        if shard in self._cached:
            self._cached.move_to_end(shard)
            return self._cached[shard]
        raw = (self.directory / _shard_name(shard)).read_bytes()
        tensors = load_safetensors(lzma.decompress(raw))
        if self.method == "sampled":  # ids stored as differences along each row
            tensors["ids"] = tensors["ids"].cumsum(dim=-1, dtype=torch.int32)
        self._cached[shard] = tensors
        held = sum(t.nbytes for shard_ in self._cached.values() for t in shard_.values())
        while held > self.cache_bytes and len(self._cached) > 1:
            _, dropped = self._cached.popitem(last=False)
            held -= sum(t.nbytes for t in dropped.values())
        return tensors


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors.xz"


@torch.no_grad()
def teacher_pass(
    teacher: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    writer: SignalWriter,
    device: torch.device | str = "cpu",
) -> None:
    """Run the frozen teacher over ``(input_ids, attention_mask, target_mask)`` batches (the
    target mask aligned with the logits: position t's logits predict token t + 1) and append
    each sequence's signal to ``writer``, in order."""
    teacher.eval()
    for input_ids, attention_mask, target_mask in batches:
        logits = teacher(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
        ).logits
        for row in range(logits.shape[0]):
            writer.add(top_k_signal(logits[row : row + 1], target_mask[row : row + 1], writer.k))


def signal_kl(dense_logits: torch.Tensor, stored: TopKSignal) -> float:
    """Mean KL(dense teacher || stored signal) per token at T = 1, over the whole vocabulary:
    the store's accuracy. The stored signal, read as a distribution over the vocabulary, puts
    its (renormalised) log-probs on its tokens and spreads the tail mass evenly over the rest,
    the most it says about them; so the figure counts both the stored precision and what the
    cut loses (it falls as k grows, to the rounding alone at k = vocabulary). A sampled signal
    is read the same way (its counts are not a distribution over the vocabulary: they leave
    most tokens at 0, which no finite KL allows). ``dense_logits`` (n, vocab) are the teacher's
    logits of the stored tokens, in order."""
    if dense_logits.shape[0] != stored.tokens:
        raise ValueError(f"{dense_logits.shape[0]} dense rows for {stored.tokens} stored tokens")
    if stored.tokens == 0:
        return 0.0
    log_p = F.log_softmax(dense_logits.float(), dim=-1)
    vocab, k = log_p.shape[-1], stored.ids.shape[-1]
    buckets = torch.cat([stored.logprobs.float(), stored.tail.float().log().unsqueeze(-1)], -1)
    buckets = F.log_softmax(buckets.to(log_p.device), dim=-1)
    named = stored.valid
    held = torch.full_like(stored.tail, k) if named is None else named.sum(-1)
    others = (vocab - held.to(log_p.device)).clamp_min(1).float()
    log_q = (buckets[:, k:] - others.log().unsqueeze(-1)).expand_as(log_p).clone()
    # amax: a row's padding names its first token again with -inf, which must not win.
    ids = stored.ids.to(log_p.device)
    log_q.scatter_reduce_(-1, ids, buckets[:, :k], reduce="amax", include_self=False)
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return float(kl.mean())
