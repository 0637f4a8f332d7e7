"""The stored teacher signal: top-k log-probs and tail mass, written in compressed shards under a
content-addressed key, read back per batch of sequences."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from worker.engine.lm.losses import lm_loss
from worker.engine.lm.signal import (
    MANIFEST,
    SignalReader,
    SignalWriter,
    TopKSignal,
    bytes_per_token,
    sampled_signal,
    signal_key,
    signal_kl,
    teacher_pass,
    top_k_signal,
)

VOCAB = 96


@pytest.fixture(scope="module")
def teacher() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper than random init's near-uniform output, as a trained LM is
        model.lm_head.weight.mul_(40)
    return model


def token_batches(count: int, batch_size: int, length: int = 12):
    """(input_ids, attention_mask, target_mask) batches: right padding, a prompt of 3 tokens."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for first in range(0, count, batch_size):
        rows = min(batch_size, count - first)
        input_ids = torch.randint(0, VOCAB, (rows, length), generator=generator)
        lengths = torch.randint(5, length + 1, (rows,), generator=generator)
        attention = torch.arange(length) < lengths.unsqueeze(1)
        target = attention.clone()
        target[:, :3] = False
        target[torch.arange(rows), lengths - 1] = False  # the last token predicts nothing
        out.append((input_ids, attention.long(), target))
    return out


def test_the_signal_is_the_top_k_log_probs_and_the_mass_outside() -> None:
    logits = 4 * torch.randn(2, 5, VOCAB, dtype=torch.bfloat16)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    signal = top_k_signal(logits, mask, k=7, chunk_size=3)
    assert signal.ids.shape == signal.logprobs.shape == (6, 7)
    assert signal.logprobs.dtype == signal.tail.dtype == torch.float32
    log_probs = F.log_softmax(logits.float()[mask], -1)
    expected_top, expected_ids = log_probs.topk(7, -1)
    torch.testing.assert_close(signal.logprobs, expected_top)
    assert torch.equal(signal.ids, expected_ids)
    torch.testing.assert_close(signal.tail, 1 - expected_top.exp().sum(-1), atol=1e-6, rtol=0)
    assert (signal.tail >= 0).all()

    whole = top_k_signal(logits, mask, k=1000)
    assert whole.ids.shape == (6, VOCAB) and (whole.tail == 0).all()


def test_a_sampled_signal_is_draws_kept_as_distinct_tokens_with_counts() -> None:
    logits = 3 * torch.randn(2, 6, VOCAB, generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    signal = sampled_signal(logits, mask, 16, torch.Generator().manual_seed(5), head=2)
    assert signal.ids.shape == signal.logprobs.shape == signal.counts.shape == (8, 16)
    assert (signal.counts.sum(-1) == 14).all()  # k - head draws, every one counted once
    log_probs = F.log_softmax(logits[mask], -1)
    for row in range(signal.tokens):
        valid = signal.valid[row]
        named = signal.ids[row][valid]
        assert torch.equal(named, named.unique())  # distinct, in id order
        # the head: the two most likely tokens, named with count 0; the drawn ones count > 0
        head = set(log_probs[row].topk(2).indices.tolist())
        assert {
            int(i) for i, c in zip(named, signal.counts[row][valid], strict=True) if c == 0
        } == head
        torch.testing.assert_close(signal.logprobs[row][valid], log_probs[row][named])
        torch.testing.assert_close(
            signal.tail[row], 1 - log_probs[row][named].exp().sum(), atol=1e-6, rtol=0
        )
        # padding: count 0, no probability, and no token but the row's last named again
        assert (signal.logprobs[row][~valid] == float("-inf")).all()
        assert (signal.counts[row][~valid] == 0).all()
        assert (signal.ids[row][~valid] == named[-1]).all()
    assert not signal.valid.all()  # 14 draws over 94 tokens repeat some: padding exists

    again = sampled_signal(logits, mask, 16, torch.Generator().manual_seed(5), head=2)
    assert torch.equal(again.ids, signal.ids) and torch.equal(again.counts, signal.counts)
    other = sampled_signal(logits, mask, 16, torch.Generator().manual_seed(6), head=2)
    assert not torch.equal(other.counts, signal.counts)
    # by default no head: every named token was drawn
    plain = sampled_signal(logits, mask, 16, torch.Generator().manual_seed(5))
    assert (plain.counts.sum(-1) == 16).all() and (plain.counts[plain.valid] > 0).all()


@pytest.mark.parametrize("head", [0, 2])
def test_the_head_and_the_draws_estimate_the_teacher_distribution(head: int) -> None:
    """Over many draws of one position, the head's probabilities and the rest's mass shared by
    the counts average to the teacher's distribution (without a head: each token's share of the
    draws is its probability)."""
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0, -8.0]]])
    p = logits[0, 0].softmax(-1)
    signal = sampled_signal(
        logits.expand(1, 2000, 5),
        torch.ones(1, 2000, dtype=torch.bool),
        k=64,
        generator=torch.Generator().manual_seed(0),
        head=head,
    )
    drawn = signal.counts.float()
    rest = 1 - p[:head].sum()
    weights = torch.where(drawn > 0, rest * drawn / drawn.sum(-1, keepdim=True), 0.0)
    weights = torch.where(signal.valid & (drawn == 0), signal.logprobs.exp(), weights)
    estimate = torch.zeros(5).index_add_(0, signal.ids.flatten(), weights.flatten()) / 2000
    assert signal.ids.shape == (2000, 5)  # 64 draws over 5 tokens: a row names each at most once
    torch.testing.assert_close(estimate, p, atol=3e-3, rtol=0)


def test_the_key_covers_everything_the_signal_depends_on() -> None:
    facts = ("a" * 64, "b" * 64, "c" * 64, 512, 64, "d" * 64)
    key = signal_key(*facts)
    assert key == signal_key(*facts) and len(key) == 64
    for i, other in enumerate(("e" * 64, "e" * 64, "e" * 64, 256, 32, None)):
        changed = list(facts)
        changed[i] = other
        assert signal_key(*changed) != key
    # top-k stores keep the keys they had before sampled stores existed; sampled ones differ
    assert signal_key(*facts, "top_k") == key
    assert signal_key(*facts, "sampled") != key


def test_bytes_per_token() -> None:
    assert bytes_per_token(64) == 64 * 4 + 64 * 2 + 4
    assert bytes_per_token(8, torch.bfloat16) == 52


def test_a_store_written_in_shards_reads_back_per_batch(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    sequences = []
    for n in [4, 0, 7, 3, 5, 1, 6]:  # 7 sequences, shards of 3: the last shard is short
        logits = 3 * torch.randn(1, n, VOCAB, generator=generator)
        sequences.append(top_k_signal(logits, torch.ones(1, n, dtype=torch.bool), k=8))
    with SignalWriter(tmp_path, k=8, shard_size=3) as writer:
        for sequence in sequences:
            writer.add(sequence)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST,
        "shard-00000.safetensors.xz",
        "shard-00001.safetensors.xz",
        "shard-00002.safetensors.xz",
    ]
    reader = SignalReader(tmp_path)
    assert reader.sequences == 7 and reader.k == 8
    batch = reader.batch([6, 0, 3, 1])
    expected = [sequences[i] for i in (6, 0, 3, 1)]
    assert batch.tokens == 6 + 4 + 3
    assert batch.ids.dtype == torch.int64 and batch.logprobs.dtype == torch.float32
    assert torch.equal(batch.ids, torch.cat([s.ids for s in expected]))
    torch.testing.assert_close(  # bfloat16 on disk (the default): 8 significant bits
        batch.logprobs, torch.cat([s.logprobs for s in expected]), rtol=4e-3, atol=1e-3
    )
    assert torch.equal(batch.tail, torch.cat([s.tail for s in expected]))  # float32 on disk
    stored = json.loads((tmp_path / MANIFEST).read_text())
    assert stored["tokens"] == 26 and stored["stored_bytes"] == sum(
        p.stat().st_size for p in tmp_path.glob("shard-*")
    )
    with pytest.raises(IndexError):
        reader.batch([7])


def test_a_store_whose_writing_failed_is_never_read(tmp_path: Path) -> None:
    signal = top_k_signal(torch.randn(1, 4, VOCAB), torch.ones(1, 4, dtype=torch.bool), k=8)
    with (
        pytest.raises(RuntimeError, match="teacher died"),
        SignalWriter(tmp_path, k=8, shard_size=1) as writer,
    ):
        writer.add(signal)
        raise RuntimeError("teacher died")
    assert (tmp_path / "shard-00000.safetensors.xz").exists()
    assert not (tmp_path / MANIFEST).exists()
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(FileNotFoundError, match="no complete teacher signal"):
        SignalReader(tmp_path)


def test_a_signal_of_another_k_is_refused(tmp_path: Path) -> None:
    signal = top_k_signal(torch.randn(1, 4, VOCAB), torch.ones(1, 4, dtype=torch.bool), k=4)
    with pytest.raises(ValueError, match="k=8"):
        SignalWriter(tmp_path, k=8).add(signal)


@pytest.mark.parametrize("logprob_dtype", ["float16", "bfloat16"])
def test_the_teacher_pass_stores_what_the_teacher_says(
    tmp_path: Path, teacher: LlamaForCausalLM, logprob_dtype: str
) -> None:
    batches = token_batches(count=9, batch_size=4)
    with SignalWriter(tmp_path, k=16, shard_size=4, logprob_dtype=logprob_dtype) as writer:
        teacher_pass(teacher, batches, writer)
    reader = SignalReader(tmp_path)
    assert reader.sequences == 9
    input_ids, attention, target = batches[1]
    with torch.no_grad():
        logits = teacher(input_ids=input_ids, attention_mask=attention).logits
    stored = reader.batch(range(4, 8))
    expected = top_k_signal(logits, target, k=16)
    assert stored.tokens == int(target.sum())
    assert torch.equal(stored.ids, expected.ids)
    tolerance = 2e-2 if logprob_dtype == "bfloat16" else 2e-3
    torch.testing.assert_close(stored.logprobs, expected.logprobs, rtol=tolerance, atol=tolerance)

    # The loss against the stored signal is the loss against the in-memory one.
    student = torch.randn_like(logits)
    torch.testing.assert_close(
        lm_loss(student, target, stored).total,
        lm_loss(student, target, expected).total,
        rtol=tolerance,
        atol=tolerance,
    )

    # Compressed below its raw size; the figure is measured, not assumed.
    raw = bytes_per_token(16, torch.float16)
    assert 0 < reader.bytes_per_token < raw


def test_signal_kl_measures_what_the_store_loses(teacher: LlamaForCausalLM) -> None:
    input_ids, attention, target = token_batches(count=4, batch_size=4)[0]
    with torch.no_grad():
        logits = teacher(input_ids=input_ids, attention_mask=attention).logits
    dense = logits[target]

    def stored(k: int, dtype: torch.dtype) -> TopKSignal:
        exact = top_k_signal(logits, target, k=k)
        return TopKSignal(exact.ids, exact.logprobs.to(dtype).float(), exact.tail)

    exact_whole = top_k_signal(logits, target, k=VOCAB)
    assert signal_kl(dense, exact_whole) == pytest.approx(0.0, abs=1e-6)
    by_k = [signal_kl(dense, stored(k, torch.float16)) for k in (4, 16, 48, VOCAB)]
    assert by_k == sorted(by_k, reverse=True) and by_k[0] > 10 * by_k[-1]
    assert 0 < by_k[-1] < 1e-4  # at k = vocabulary only the float16 rounding is left
    assert signal_kl(dense, stored(16, torch.bfloat16)) > signal_kl(
        dense, stored(16, torch.float16)
    )
    with pytest.raises(ValueError, match="dense rows"):
        signal_kl(dense[1:], stored(16, torch.float16))


def test_a_sampled_store_reads_back_its_counts(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(8)
    sequences = [
        sampled_signal(torch.randn(1, n, VOCAB), torch.ones(1, n, dtype=torch.bool), 8, generator)
        for n in (5, 3, 6)
    ]
    with SignalWriter(tmp_path, k=8, shard_size=2, method="sampled") as writer:
        for signal in sequences:
            writer.add(signal)
    reader = SignalReader(tmp_path)
    assert reader.method == "sampled" and reader.manifest["method"] == "sampled"
    got = reader.batch([2, 0])
    for name in ("ids", "counts"):
        expected = torch.cat([getattr(sequences[2], name), getattr(sequences[0], name)])
        assert torch.equal(getattr(got, name), expected)
    expected_logprobs = torch.cat([sequences[2].logprobs, sequences[0].logprobs])
    torch.testing.assert_close(got.logprobs, expected_logprobs.bfloat16().float())
    assert (got.logprobs[~got.valid] == float("-inf")).all()


def test_a_store_takes_one_kind_of_signal(tmp_path: Path) -> None:
    logits, mask = torch.randn(1, 3, VOCAB), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="only if sampled"):
        SignalWriter(tmp_path / "a", k=4).add(sampled_signal(logits, mask, 4))
    with pytest.raises(ValueError, match="only if sampled"):
        SignalWriter(tmp_path / "b", k=4, method="sampled").add(top_k_signal(logits, mask, 4))
    with pytest.raises(ValueError, match="unknown signal method"):
        SignalWriter(tmp_path / "c", k=4, method="random")


def test_signal_kl_reads_a_sampled_signal_as_its_named_tokens_and_the_rest() -> None:
    """A row whose draws all fell on one token holds that token and the tail: its padding (the
    same id again, at -inf) must neither overwrite the token nor count as a token."""
    logits = torch.tensor([[[6.0, 0.0, 0.0, 0.0]]])
    log_p = logits[0, 0].log_softmax(-1)
    stored = TopKSignal(
        torch.tensor([[0, 0, 0]]),
        torch.tensor([[log_p[0], float("-inf"), float("-inf")]]),
        1 - log_p[0].exp().reshape(1),
        torch.tensor([[3, 0, 0]]),
    )
    # exact: token 0 keeps its probability and the three others share the tail evenly
    assert signal_kl(logits[0], stored) == pytest.approx(0.0, abs=1e-6)
    as_top1 = top_k_signal(logits, torch.ones(1, 1, dtype=torch.bool), k=1)
    assert signal_kl(logits[0], as_top1) == pytest.approx(0.0, abs=1e-6)
