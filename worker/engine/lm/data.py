"""Language-model data: jsonl lines tokenised into documents (``LMExample``), each with a target
mask, cut at ``max_length`` and split by document. ``worker.engine.lm.rows`` lays documents out
in rows (packed or not) and collates them into the batches a causal LM takes; its names are
re-exported here, so that one module serves the recipe.

Masks are aligned with the logits: ``target_mask[t]`` says whether the logits at t, which predict
token t + 1, are trained, so a document's last position is never a target. Packed rows rely on
that: no position is trained to predict the next document's first token.
"""

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch

from worker.engine.errors import DataLoadError, ShapeMismatch, UnsupportedInput
from worker.engine.lm.rows import (
    PACKING_ATTENTION,
    LMBatch,
    LMRows,
    check_packing,
    collate,
    model_inputs,
    to_rows,
)

__all__ = [
    "PACKING_ATTENTION",
    "LMBatch",
    "LMExample",
    "LMRows",
    "check_packing",
    "collate",
    "encode_prompt",
    "examples_from_completions",
    "model_inputs",
    "read_lm_examples",
    "read_prompts",
    "split_examples",
    "to_rows",
]
_LEARNED = {"text": "text", "prompt_completion": "completion", "messages": "assistant"}


@dataclass
class LMExample:
    """One document, tokenised, before packing."""

    input_ids: list[int]
    target_mask: list[bool]  # aligned with the logits (see the module's docstring)
    prompt: str | None  # text to continue: the prompt, or the rendered chat up to the last answer
    reference: str | None  # the expected continuation: the completion or the last assistant turn
    prompt_ids: list[int] | None = None  # exactly the tokens a model is given to continue

    @property
    def target_tokens(self) -> int:
        return sum(self.target_mask)


# --- reading ------------------------------------------------------------------------------------


def read_lm_examples(path: Path, tokenizer: Any, max_length: int) -> tuple[str, list[LMExample]]:
    """``(lm_kind, examples)`` from a jsonl file of one kind: ``text``, ``prompt_completion`` or
    ``messages``, each document cut at ``max_length`` tokens. ``{"prompt"}`` lines alone are
    read by ``read_prompts``."""
    kind, examples = None, []
    specials = _SpecialTokens.of(tokenizer)
    for number, record in _records(path):
        line_kind = _kind(record, number)
        if line_kind == "prompt":
            raise DataLoadError(
                f'Line {number} is a {{"prompt"}} line without a completion; such data gets its '
                "completions from the teacher first.",
                code="unsupported_data",
            )
        if kind is not None and line_kind != kind:
            raise DataLoadError(
                f"Line {number} is a {line_kind} line, unlike the {kind} lines before it; "
                "a file holds one kind."
            )
        kind = line_kind
        if kind == "text":
            example = _text(_string(record, "text", number), tokenizer, specials)
        elif kind == "prompt_completion":
            completion = _string(record, "completion", number)
            if not completion.strip():
                raise DataLoadError(
                    f'Line {number}: "completion" is empty.', code="empty_completion"
                )
            example = _completion(
                _string(record, "prompt", number), completion, tokenizer, specials
            )
        else:
            example = _conversation(_messages(record, number), tokenizer, specials, number)
        examples.append(_cut(example, max_length, f"Line {number}", _LEARNED[kind]))
    if kind is None:
        raise DataLoadError(f"{path.name} holds no records.")
    return kind, examples


def read_prompts(path: Path) -> list[str]:
    """The prompts of ``{"prompt"}``-only data, in order."""
    prompts = []
    for number, record in _records(path):
        if _kind(record, number) != "prompt":
            raise DataLoadError(f'Line {number} is not a {{"prompt"}} line, unlike a prompt file.')
        prompts.append(_string(record, "prompt", number))
    if not prompts:
        raise DataLoadError(f"{path.name} holds no prompts.")
    return prompts


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The tokens a model is given for ``prompt``: its text after the tokens the tokenizer puts
    first (a bos, where the tokenizer uses one). Generation from prompt-only data uses this, so
    that ``examples_from_completions`` trains on the context the teacher saw."""
    return _SpecialTokens.of(tokenizer).first + _plain(tokenizer, prompt)


def examples_from_completions(
    prompts: Sequence[str], completions: Sequence[str], tokenizer: Any, max_length: int
) -> list[LMExample]:
    """Prompt-only data once the teacher has written the completions: read as
    ``{"prompt", "completion"}`` lines are. An empty completion still teaches the eos."""
    if len(prompts) != len(completions):
        raise ShapeMismatch(f"{len(prompts)} prompts but {len(completions)} completions.")
    specials = _SpecialTokens.of(tokenizer)
    return [
        _cut(
            _completion(prompt, completion, tokenizer, specials),
            max_length,
            f"Prompt {i + 1}",
            _LEARNED["prompt_completion"],
        )
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
    ]


def split_examples(
    examples: Sequence[LMExample], fraction: float, seed: int
) -> tuple[list[LMExample], list[LMExample]]:
    """``(train, validation)``: a seeded split by document, ``fraction`` of them (at least one)
    held out, each side in the order of ``examples``."""
    n_val = max(1, round(len(examples) * fraction))
    if fraction <= 0 or n_val >= len(examples):
        raise DataLoadError(
            f"Cannot hold out {fraction:.0%} of {len(examples)} documents for validation; "
            "upload more data or a separate validation file."
        )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    held_out = set(order[:n_val].tolist())
    train = [e for i, e in enumerate(examples) if i not in held_out]
    return train, [e for i, e in enumerate(examples) if i in held_out]


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(_lines(f, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise DataLoadError(f"Line {number} is not valid JSON ({e}).") from e
            if not isinstance(record, dict):
                raise DataLoadError(f"Line {number} is not a JSON object.")
            yield number, record


def _lines(f: Any, path: Path) -> Iterator[str]:
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise DataLoadError(f"{path.name} is not UTF-8 text ({e}).") from e


def _kind(record: dict, number: int) -> str:
    keys = [key for key in ("text", "prompt", "messages") if key in record]
    if len(keys) != 1:
        raise DataLoadError(
            f'Line {number} needs exactly one of "text", "prompt" and "messages" (has {keys}).'
        )
    if keys == ["prompt"]:
        return "prompt_completion" if "completion" in record else "prompt"
    return keys[0]


def _string(record: dict, key: str, number: int) -> str:
    value = record.get(key)
    if not _is_text(value):
        raise DataLoadError(f'Line {number}: "{key}" must be a string of characters.')
    return value


def _is_text(value: object) -> TypeGuard[str]:
    """A string a tokenizer takes: JSON may escape half a surrogate pair alone, which is none."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _messages(record: dict, number: int) -> list[dict]:
    messages = record["messages"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and _is_text(m.get("content"))
        for m in messages
    ):
        raise DataLoadError(f'Line {number}: "messages" must be a list of {{"role", "content"}}.')
    if not any(m["role"] == "assistant" for m in messages):
        raise DataLoadError(f"Line {number} has no assistant message.", code="empty_completion")
    return messages


# --- tokenising ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpecialTokens:
    first: list[int]  # what the tokenizer puts before a text (a bos, or nothing)
    last: list[int]  # and after it
    eos: int | None
    special: frozenset[int]  # every special token: templates end turns with one

    @classmethod
    def of(cls, tokenizer: Any) -> "_SpecialTokens":
        plain = _plain(tokenizer, "a")
        full = tokenizer("a")["input_ids"]
        at = next((i for i in range(len(full)) if full[i : i + len(plain)] == plain), None)
        if at is None:  # the tokenizer changes the text's own tokens: trust none of its extras
            full, at = plain, 0
        decoder = getattr(tokenizer, "added_tokens_decoder", {})
        special = {i for i, token in decoder.items() if getattr(token, "special", False)}
        special |= set(tokenizer.all_special_ids)
        return cls(full[:at], full[at + len(plain) :], tokenizer.eos_token_id, frozenset(special))

    def ending(self, ids: list[int]) -> list[int]:
        """``ids`` ending with the eos (where the tokenizer has one)."""
        if self.eos is None or (ids and ids[-1] == self.eos):
            return ids
        return [*ids, self.eos]


def _plain(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _example(ids: list[int], targets: list[bool], **texts: Any) -> LMExample:
    """From per-token ``targets`` (token j is learned) to the mask aligned with the logits."""
    return LMExample(ids, [*targets[1:], False], **texts)


def _text(text: str, tokenizer: Any, specials: _SpecialTokens) -> LMExample:
    ids = specials.ending(specials.first + _plain(tokenizer, text) + specials.last)
    return _example(ids, [False] + [True] * (len(ids) - 1), prompt=None, reference=None)


def _completion(
    prompt: str, completion: str, tokenizer: Any, specials: _SpecialTokens
) -> LMExample:
    context = specials.first + _plain(tokenizer, prompt)
    answer = specials.ending(_plain(tokenizer, completion))
    targets = [False] * len(context) + [True] * len(answer)
    return _example(
        context + answer, targets, prompt=prompt, reference=completion, prompt_ids=context
    )


def _conversation(
    messages: list[dict], tokenizer: Any, specials: _SpecialTokens, number: int
) -> LMExample:
    """The rendered conversation, its assistant turns the targets. Each turn is found by rendering
    the conversation up to it (with the generation prompt) and through it: the tokens between are
    the turn's, its content and end-of-turn token, without the template's whitespace after that."""
    if not getattr(tokenizer, "chat_template", None):
        raise UnsupportedInput(
            "The tokenizer has no chat template to render messages with; use a teacher whose "
            'tokenizer has one, or {"text"} or {"prompt", "completion"} data.',
            code="no_chat_template",
        )

    def render(upto: int, generation_prompt: bool) -> tuple[str, list[int]]:
        try:
            text = tokenizer.apply_chat_template(
                messages[:upto], tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as e:  # jinja's errors, raise_exception() in templates among them
            raise DataLoadError(f"Line {number}: the chat template failed: {e}") from e
        ids = _plain(tokenizer, text)
        if ids != full[: len(ids)]:
            raise UnsupportedInput(
                f"Line {number}: the chat template renders the conversation up to message "
                f"{upto} as other than the start of the whole; its turns cannot be told apart.",
                code="unsupported_chat_template",
            )
        return text, ids

    full = _plain(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False))
    targets = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt, context = render(i, True)
            start = len(context)
            end = _turn_end(full, start, len(render(i + 1, False)[1]), tokenizer, specials)
            targets[start:end] = [True] * (end - start)
            last = (prompt, message["content"], context)
    prompt, reference, prompt_ids = last
    return _example(full, targets, prompt=prompt, reference=reference, prompt_ids=prompt_ids)


def _turn_end(
    ids: list[int], start: int, end: int, tokenizer: Any, specials: _SpecialTokens
) -> int:
    """The end of a turn's targets: after its end-of-turn token, not the whitespace (ChatML's
    newline) a template writes after that, which frames the next turn."""
    stop = end
    while stop - start > 1 and not tokenizer.decode(ids[stop - 1 : stop]).strip():
        stop -= 1
    return stop if stop < end and ids[stop - 1] in specials.special else end


def _cut(example: LMExample, max_length: int, where: str, learned: str) -> LMExample:
    """``example`` cut to its first ``max_length`` tokens; one with nothing left to learn is an
    error, never dropped in silence."""
    if len(example.input_ids) > max_length:
        example.input_ids = example.input_ids[:max_length]
        example.target_mask = [*example.target_mask[: max_length - 1], False]
    if any(example.target_mask):
        return example
    if example.prompt is None:
        raise DataLoadError(
            f"{where}: the text is empty; there is nothing to learn.", code="empty_text"
        )
    raise DataLoadError(
        f"{where}: no {learned} token is left within max_length {max_length}: what comes "
        f"before fills it. Shorten the line or raise data.max_length.",
        code="empty_completion",
    )
