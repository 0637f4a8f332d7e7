"""Language-model data: what each kind of line trains on, cuts and errors, the split by document,
rows and batches, and the proof that packing changes nothing: a packed row gives each document
exactly the logits it gets alone."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.helpers.lm import (
    lm_corpus,
    lm_tokenizer,
    messages_rows,
    prompt_completion_rows,
    prompt_rows,
    text_rows,
    tiny_llama,
    write_jsonl,
)
from tests.worker.engine.lm.conftest import tiny_causal_lm
from worker.engine.errors import DataLoadError, EngineError, ShapeMismatch, UnsupportedInput
from worker.engine.lm.data import (
    LMExample,
    check_packing,
    collate,
    encode_prompt,
    examples_from_completions,
    model_inputs,
    read_lm_examples,
    read_prompts,
    split_examples,
    to_rows,
)
from worker.engine.lm.signal import top_k_signal

TEXTS = lm_corpus(12)


def targets(tokenizer: Any, example: LMExample) -> str:
    """The text of the tokens the example learns: token t + 1 wherever the mask is True at t."""
    ids = example.input_ids
    return tokenizer.decode([ids[t + 1] for t, on in enumerate(example.target_mask) if on])


def read(tmp_path: Path, rows: list[dict], max_length: int = 128, tokenizer: Any = None) -> Any:
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    return read_lm_examples(path, tokenizer or lm_tokenizer(), max_length)


def with_post_processor(single: str) -> Any:
    """The test tokenizer adding special tokens around each text as ``single`` says, as Llama's
    add a bos (here <|im_start|>, id 1) and some add an eos."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = copy.deepcopy(lm_tokenizer())
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=single, special_tokens=[("<|im_start|>", 1), ("<|endoftext|>", 0)]
    )
    return tokenizer


# --- what each kind trains on -------------------------------------------------------------------


def test_text_learns_every_token_after_the_first_and_its_eos(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    kind, examples = read(tmp_path, text_rows(TEXTS))
    assert kind == "text" and len(examples) == len(TEXTS)
    for text, example in zip(TEXTS, examples, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert example.input_ids == [*ids, tokenizer.eos_token_id]
        assert example.target_mask == [True] * len(ids) + [False]
        assert targets(tokenizer, example) == tokenizer.decode(ids[1:]) + "<|endoftext|>"
        assert example.prompt is None and example.reference is None


@pytest.mark.parametrize("single", ["<|im_start|> $A", "$A <|endoftext|>"])
def test_text_keeps_the_tokenizers_bos_and_never_doubles_its_eos(
    tmp_path: Path, single: str
) -> None:
    tokenizer = with_post_processor(single)
    _, examples = read(tmp_path, text_rows(TEXTS[:1]), tokenizer=tokenizer)
    ids = lm_tokenizer()(TEXTS[0])["input_ids"]
    bos = [1] if single.startswith("<|im_start|>") else []
    assert examples[0].input_ids == [*bos, *ids, 0]
    # With a bos, the text's first token is learned too (the bos predicts it).
    assert examples[0].target_tokens == len(ids) + len(bos)


def test_prompt_completion_learns_the_completion_and_eos_only(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    rows = prompt_completion_rows(TEXTS)
    _, examples = read(tmp_path, rows)
    for row, example in zip(rows, examples, strict=True):
        assert targets(tokenizer, example) == row["completion"] + "<|endoftext|>"
        assert example.prompt == row["prompt"] and example.reference == row["completion"]
        assert example.prompt_ids == encode_prompt(tokenizer, row["prompt"])
        assert example.input_ids[: len(example.prompt_ids)] == example.prompt_ids


def test_prompt_ids_start_with_the_tokenizers_bos(tmp_path: Path) -> None:
    tokenizer = with_post_processor("<|im_start|> $A")
    _, examples = read(tmp_path, prompt_completion_rows(TEXTS[:1]), tokenizer=tokenizer)
    assert examples[0].prompt_ids == [1, *lm_tokenizer()(examples[0].prompt)["input_ids"]]


def conversation() -> list[dict]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Review a film."},
        {"role": "assistant", "content": "A quiet, lovely film."},
        {"role": "user", "content": "And another?"},
        {"role": "assistant", "content": "Loud and empty."},
    ]


def test_messages_learn_assistant_turns_and_their_end_of_turn_only(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    _, [example] = read(tmp_path, [{"messages": conversation()}])
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(
        conversation(), tokenize=False
    )
    # Not the newline ChatML writes after <|im_end|>: it frames the next turn.
    assert targets(tokenizer, example) == "A quiet, lovely film.<|im_end|>Loud and empty.<|im_end|>"
    assert example.reference == "Loud and empty."
    assert example.prompt == tokenizer.apply_chat_template(
        conversation()[:4], tokenize=False, add_generation_prompt=True
    )
    assert example.prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer(example.prompt, add_special_tokens=False)["input_ids"] == example.prompt_ids
    assert example.input_ids[: len(example.prompt_ids)] == example.prompt_ids


def test_messages_of_the_helpers_learn_the_answer(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    _, examples = read(tmp_path, messages_rows(TEXTS))
    for text, example in zip(TEXTS, examples, strict=True):
        assert targets(tokenizer, example) == text + "<|im_end|>"


def test_messages_need_a_chat_template(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput) as e:
        read(tmp_path, messages_rows(TEXTS[:1]), tokenizer=lm_tokenizer(chat_template=False))
    assert e.value.code == "no_chat_template"


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path: Path) -> None:
    tokenizer = copy.deepcopy(lm_tokenizer())
    # Numbers each turn from the end, as templates that drop earlier reasoning change the past.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ (messages|length - loop.index)|string + m['content'] }}"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    with pytest.raises(UnsupportedInput) as e:
        read(tmp_path, [{"messages": conversation()}], tokenizer=tokenizer)
    assert e.value.code == "unsupported_chat_template" and "Line 1" in e.value.message


# --- cuts and errors ----------------------------------------------------------------------------


def test_documents_are_cut_at_max_length_from_the_end(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    _, [whole] = read(tmp_path, text_rows(TEXTS[:1]))
    _, [cut] = read(tmp_path, text_rows(TEXTS[:1]), max_length=10)
    assert cut.input_ids == whole.input_ids[:10]
    assert cut.target_mask == [True] * 9 + [False]
    assert targets(tokenizer, cut) == tokenizer.decode(whole.input_ids[1:10])


def test_an_answer_cut_away_is_an_error(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": TEXTS[0]}, {"role": "assistant", "content": "Yes."}]
    with pytest.raises(DataLoadError) as e:
        read(tmp_path, [{"messages": messages}], max_length=16)
    assert e.value.code == "empty_completion" and "no assistant token" in e.value.message
    with pytest.raises(DataLoadError) as e:
        read(tmp_path, [{"text": "a"}, {"text": ""}])
    assert e.value.code == "empty_text" and e.value.message.startswith("Line 2:")


def test_a_completion_cut_away_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    long_prompt = {"prompt": " ".join(TEXTS[:3]), "completion": " fine"}
    path.write_text(
        json.dumps({"prompt": "A", "completion": " b"}) + "\n\n" + json.dumps(long_prompt)
    )
    with pytest.raises(DataLoadError) as e:
        read_lm_examples(path, lm_tokenizer(), 32)
    assert e.value.code == "empty_completion" and e.value.message.startswith("Line 3:")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"text": "a"}, {"prompt": "b", "completion": " c"}], "Line 2 is a prompt_completion"),
        ([{"prompt": "b"}], 'Line 1 is a {"prompt"} line without a completion'),
        ([{"prompt": "b", "completion": "  "}], 'Line 1: "completion" is empty'),
        ([{"text": 3}], 'Line 1: "text" must be a string'),
        ([{"prompt": "\ud800", "completion": "a"}], 'Line 1: "prompt" must be a string'),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "Line 1 has no assistant"),
        ([{"messages": [{"role": "assistant"}]}], 'Line 1: "messages" must be a list'),
        ([{"text": "a", "prompt": "b"}], 'Line 1 needs exactly one of "text"'),
        ([], "holds no records"),
    ],
)
def test_bad_lines_are_clear_errors(tmp_path: Path, lines: list[dict], message: str) -> None:
    with pytest.raises(EngineError) as e:
        read(tmp_path, lines)
    assert message in e.value.message


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataLoadError, match="Line 2 is not valid JSON"):
        read_lm_examples(path, lm_tokenizer(), 16)
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(DataLoadError, match="is not UTF-8 text"):
        read_lm_examples(path, lm_tokenizer(), 16)


def test_prompt_only_data_trains_as_prompt_completion_once_completed(tmp_path: Path) -> None:
    tokenizer = lm_tokenizer()
    rows = prompt_completion_rows(TEXTS)
    path = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(TEXTS))
    prompts = read_prompts(path)
    assert prompts == [r["prompt"] for r in rows]
    completed = examples_from_completions(prompts, [r["completion"] for r in rows], tokenizer, 40)
    assert completed == read(tmp_path, rows, max_length=40)[1]
    # The teacher may stop at once: the eos is still learned.
    [empty] = examples_from_completions(prompts[:1], [""], tokenizer, 40)
    assert targets(tokenizer, empty) == "<|endoftext|>"
    with pytest.raises(ShapeMismatch):
        examples_from_completions(prompts, [], tokenizer, 40)
    with pytest.raises(DataLoadError, match="Prompt 1:"):
        examples_from_completions([TEXTS[0]], ["x"], tokenizer, 4)
    with pytest.raises(DataLoadError, match=r'Line 1 is not a \{"prompt"\} line'):
        read_prompts(write_jsonl(tmp_path / "pc.jsonl", rows))


# --- the split by document ----------------------------------------------------------------------


def test_split_is_seeded_by_document_in_order() -> None:
    examples = [LMExample([i, i], [True, False], None, None) for i in range(20)]
    train, val = split_examples(examples, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert sorted(e.input_ids[0] for e in train + val) == list(range(20))
    assert [e.input_ids[0] for e in train] == sorted(e.input_ids[0] for e in train)
    assert [e.input_ids[0] for e in val] == sorted(e.input_ids[0] for e in val)
    assert split_examples(examples, 0.25, seed=3) == (train, val)
    assert split_examples(examples, 0.25, seed=4)[1] != val
    assert len(split_examples(examples, 0.001, seed=0)[1]) == 1
    with pytest.raises(DataLoadError, match="Cannot hold out"):
        split_examples(examples[:1], 0.5, seed=0)


# --- rows and batches ---------------------------------------------------------------------------


def documents(tmp_path: Path) -> list[LMExample]:
    """Prompt-completion documents of 15 to 40 tokens: some share a row of ROW tokens."""
    return read(tmp_path, prompt_completion_rows(TEXTS), max_length=40)[1]


ROW = 64


def test_rows_without_packing_hold_one_document_each(tmp_path: Path) -> None:
    examples = documents(tmp_path)
    rows = to_rows(examples, ROW, packing=False)
    assert len(rows) == len(examples) and rows.position_ids is None and rows.documents is None
    assert [r.tolist() for r in rows.input_ids] == [e.input_ids for e in examples]
    assert rows.target_tokens == sum(e.target_tokens for e in examples)


def test_packing_lays_whole_documents_in_order(tmp_path: Path) -> None:
    examples = documents(tmp_path)
    rows = to_rows(examples, ROW, packing=True)
    assert rows.position_ids is not None and rows.documents is not None
    assert len(rows) < len(examples) and all(len(r) <= ROW for r in rows.input_ids)
    assert torch.cat(rows.input_ids).tolist() == [t for e in examples for t in e.input_ids]
    assert torch.cat(rows.target_mask).tolist() == [m for e in examples for m in e.target_mask]
    # Positions restart at each document; a document never spans two rows.
    pieces = [
        row_ids[documents == d].tolist()
        for row_ids, documents in zip(rows.input_ids, rows.documents, strict=True)
        for d in range(int(documents.max()) + 1)
    ]
    assert pieces == [e.input_ids for e in examples]
    starts = torch.cat(rows.position_ids) == 0
    assert int(starts.sum()) == len(examples)
    assert rows.tokens == sum(len(e.input_ids) for e in examples)
    assert rows.target_tokens == sum(e.target_tokens for e in examples)


def test_collate_pads_and_aligns_labels_with_the_next_token(tmp_path: Path) -> None:
    examples = documents(tmp_path)
    rows = to_rows(examples, ROW, packing=False)
    indices = [3, 0, 5]
    batch = collate(rows, indices, pad_id=3)
    lengths = [len(examples[i].input_ids) for i in indices]
    assert batch.input_ids.shape == (3, max(lengths)) and batch.position_ids is None
    for b, (i, length) in enumerate(zip(indices, lengths, strict=True)):
        assert batch.input_ids[b, :length].tolist() == examples[i].input_ids
        assert (batch.input_ids[b, length:] == 3).all()
        assert batch.attention_mask[b].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert batch.token_mask[b].tolist() == batch.attention_mask[b].bool().tolist()
        assert batch.target_mask[b, :length].tolist() == examples[i].target_mask
        assert not batch.target_mask[b, length:].any()
    where = batch.target_mask.nonzero().tolist()
    assert where and all(batch.labels[b, t] == batch.input_ids[b, t + 1] for b, t in where)
    assert (batch.labels[~batch.target_mask] == 0).all()


def test_the_stored_signal_has_one_row_per_target_token(tmp_path: Path) -> None:
    """The teacher's signal is written row by row in target-mask order and read back the same."""
    rows = to_rows(documents(tmp_path), ROW, packing=True)
    batch = collate(rows, range(len(rows)), pad_id=3)
    # Packed rows' padding (past their documents) is not a token, as in unpacked ones.
    assert batch.token_mask.sum(1).tolist() == [len(r) for r in rows.input_ids]
    logits = torch.randn(*batch.input_ids.shape, 32)
    assert top_k_signal(logits, batch.target_mask, k=4).tokens == rows.target_tokens
    assert rows.target_tokens == sum(int(m.sum()) for m in rows.target_mask)


def in_batch_and_alone(model: Any, examples: list[LMExample], packing: bool) -> list[Any]:
    """Each document's logits in one batch of all rows (padded), and alone."""
    rows = to_rows(examples, ROW, packing)
    assert len({len(r) for r in rows.input_ids}) > 1  # so a row is padded
    batch = collate(rows, range(len(rows)), pad_id=3)
    with torch.no_grad():
        together = model(**model_inputs(batch)).logits
        alone = [model(input_ids=torch.tensor([e.input_ids])).logits[0] for e in examples]
    assert torch.isfinite(together).all()  # padding too
    documents = rows.documents or [torch.zeros(len(r), dtype=torch.long) for r in rows.input_ids]
    pieces = [
        together[b, : len(row)][row == d]
        for b, row in enumerate(documents)
        for d in range(int(row.max()) + 1)
    ]
    return list(zip(pieces, alone, strict=True))


def tiny_model(family: str, attention: str) -> Any:
    tokenizer = lm_tokenizer()
    if family == "llama":
        model = tiny_llama(tokenizer, num_layers=2)
    else:
        model = tiny_causal_lm(family, vocab_size=len(tokenizer))
    model.set_attn_implementation(attention)
    assert model.config._attn_implementation == attention
    return model


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_a_packed_row_gives_each_document_its_logits_alone(
    tmp_path: Path, family: str, attention: str
) -> None:
    """Attention never crosses documents, and positions restart (which only GPT-2's absolute
    positions can tell: rotary attention does not change when every position shifts)."""
    model = tiny_model(family, attention)
    check_packing(model, ROW)
    examples = documents(tmp_path)
    assert len(to_rows(examples, ROW, packing=True)) < len(examples)  # rows hold several
    for together, alone in in_batch_and_alone(model, examples, packing=True):
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_padded_batch_gives_each_document_its_logits_alone(tmp_path: Path, family: str) -> None:
    model = tiny_model(family, "sdpa")
    for together, alone in in_batch_and_alone(model, documents(tmp_path), packing=False):
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_packing_refuses_attention_that_would_mix_documents() -> None:
    def model(**config: Any) -> Any:
        return SimpleNamespace(config=SimpleNamespace(**{"_attn_implementation": "sdpa", **config}))

    check_packing(model(sliding_window=None), 64)
    check_packing(model(sliding_window=64), 64)
    check_packing(model(sliding_window=16, layer_types=["full_attention"]), 64)
    for refused in (
        model(_attn_implementation="flash_attention_2"),
        model(sliding_window=16),
        model(sliding_window=16, layer_types=["full_attention", "sliding_attention"]),
    ):
        with pytest.raises(UnsupportedInput) as e:
            check_packing(refused, 64)
        assert e.value.code == "packing_unsupported"


@pytest.mark.slow
def test_the_real_smollm2_packs_and_learns_its_assistant_turns(
    tmp_path: Path, smollm2_dir: Path, smollm2_tokenizer: Any
) -> None:
    from transformers import AutoModelForCausalLM

    _, [example] = read(tmp_path, [{"messages": conversation()}], tokenizer=smollm2_tokenizer)
    assert targets(smollm2_tokenizer, example) == (
        "A quiet, lovely film.<|im_end|>Loud and empty.<|im_end|>"
    )
    _, examples = read(tmp_path, text_rows(TEXTS[:4]), max_length=30, tokenizer=smollm2_tokenizer)
    assert len(to_rows(examples, ROW, packing=True)) < len(examples)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True).eval()
    check_packing(model, ROW)
    for together, alone in in_batch_and_alone(model, examples, packing=True):
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
