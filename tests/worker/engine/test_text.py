"""jsonl text data: reading, tokenizing, packing; and the offline Rotten Tomatoes corpus."""

import json
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.text import build_tokenizer, rotten_tomatoes, write_jsonl
from worker.engine import text
from worker.engine.errors import DataLoadError, ShapeMismatch


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[int]]:
    return rotten_tomatoes()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return build_tokenizer(corpus[0][:1000], vocab_size=1000)


def test_rotten_tomatoes_has_both_labels_in_a_stable_order(corpus):
    texts, labels = corpus
    assert len(texts) == len(labels) == 12_808
    assert set(labels) == {0, 1}
    assert sum(labels) == 7_403  # fresh
    assert all(isinstance(t, str) and t for t in texts[:100])
    assert rotten_tomatoes()[0][:5] == texts[:5]


def test_pack_and_unpack_round_trip():
    ids = torch.randint(0, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    x = text.pack(ids, mask)
    assert x.shape == (3, 2, 7) and x.dtype == torch.int64
    got_ids, got_mask = text.unpack(x)
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    # A float copy (what a float-casting caller makes) unpacks to the same ids.
    assert torch.equal(text.unpack(x.float())[0], ids)
    with pytest.raises(ShapeMismatch, match=r"\(N, 2, L\)"):
        text.unpack(ids)


def test_load_jsonl_round_trips_texts_and_labels(tmp_path: Path, tokenizer, corpus):
    texts, labels = corpus[0][:50], corpus[1][:50]
    path = write_jsonl(tmp_path / "train.jsonl", texts, labels)
    x, y = text.load_jsonl(path, tokenizer, max_length=32)
    assert x.shape[0] == 50 and x.shape[1] == 2 and x.shape[2] <= 32
    assert y is not None and y.tolist() == labels
    ids, mask = text.unpack(x)
    expected = tokenizer(texts, padding="longest", truncation=True, max_length=32)
    assert ids.tolist() == expected["input_ids"]
    assert mask.tolist() == expected["attention_mask"]
    # Padding to the longest text, not to max_length, when all texts are short.
    x_short, _ = text.load_jsonl(path, tokenizer, max_length=512)
    assert x_short.shape[2] == int(x_short[:, 1].sum(1).max())


def test_unlabelled_jsonl_and_blank_lines(tmp_path: Path, tokenizer):
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "a fine film"}\n\n{"text": "dull"}\n   \n')
    x, y = text.load_jsonl(path, tokenizer)
    assert y is None and x.shape[0] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok", "label": 1}\nnot json\n', "Line 2 is not valid JSON"),
        ('{"text": "ok", "label": 1}\n{"label": 1}\n', 'Line 2 must be a JSON object with a str'),
        ('["a list"]\n', "Line 1 must be a JSON object"),
        ('{"text": "ok", "label": -1}\n', 'Line 1: "label" must be a class index'),
        ('{"text": "ok", "label": 1.5}\n', 'Line 1: "label" must be a class index'),
        ('{"text": "ok", "label": true}\n', 'Line 1: "label" must be a class index'),
        ('{"text": "ok", "label": 1' + "0" * 30 + '}\n', "an integer from 0 to 2147483647"),
        ('{"text": "ok \\udfff", "label": 1}\n', "half of a UTF-16 surrogate pair"),
        ('{"text": "a", "label": 0}\n\n{"text": "b"}\n', "line 3 has no \"label\""),
        ("\n\n", "holds no examples"),
    ],
)  # fmt: skip
def test_bad_lines_are_refused_by_number(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataLoadError) as info:
        text.read_jsonl(path)
    assert message in info.value.message
    assert info.value.code == "data_load_failed"


def test_non_utf8_is_refused(tmp_path: Path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(
        json.dumps({"text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n"
    )
    with pytest.raises(DataLoadError, match="not UTF-8"):
        text.read_jsonl(path)


def test_a_tokenizer_without_padding_is_refused(tokenizer):
    import copy

    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.raises(DataLoadError, match="no padding token"):
        text.tokenize(["a", "b c"], no_pad, 16)


def test_tokenizing_the_whole_corpus_is_quick(corpus, tokenizer):
    started = time.perf_counter()
    x = text.tokenize(corpus[0], tokenizer, max_length=128)
    elapsed = time.perf_counter() - started
    assert x.shape[0] == 12_808 and x.shape[2] <= 128
    assert elapsed < 20, f"tokenizing 12,808 short texts took {elapsed:.1f}s"
