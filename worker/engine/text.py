"""Text data for the engine: jsonl files of ``{"text": ..., "label": ...}``, tokenized and packed.

A text batch travels as one int64 tensor ``x`` of shape ``(N, 2, L)``: ``x[:, 0]`` the token ids,
``x[:, 1]`` the attention mask. One tensor, so every code path that slices, hashes or moves ``x``
for vector or image data works unchanged for text.
"""

import json
from pathlib import Path
from typing import Any

import torch

from worker.engine.data import MAX_CLASS_ID
from worker.engine.errors import DataLoadError, ShapeMismatch


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(N, L)`` ids and mask -> one ``(N, 2, L)`` int64 tensor."""
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ShapeMismatch(
            f"Token ids {tuple(input_ids.shape)} and attention mask "
            f"{tuple(attention_mask.shape)} must both be (N, L)."
        )
    return torch.stack([input_ids.long(), attention_mask.long()], dim=1)


def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 2, L)`` -> ``(input_ids, attention_mask)``, each ``(N, L)`` int64."""
    if x.ndim != 3 or x.shape[1] != 2:
        raise ShapeMismatch(
            f"Text batches must be packed as (N, 2, L) token ids and attention mask; "
            f"got a tensor of shape {tuple(x.shape)}."
        )
    # Callers may have cast the batch to the model's float dtype; ids below 2**24 survive float32.
    x = x if x.dtype == torch.long else x.round().long()
    return x[:, 0], x[:, 1]


def read_jsonl(path: Path) -> tuple[list[str], list[int] | None]:
    """Texts and, when every line has one, integer labels. Blank lines are skipped."""
    texts: list[str] = []
    labels: list[int] = []
    unlabelled: list[int] = []  # line numbers, to name one when labels are mixed
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                text, label = _parse_line(line, number)
                texts.append(text)
                if label is None:
                    unlabelled.append(number)
                else:
                    labels.append(label)
    except UnicodeDecodeError as e:
        raise DataLoadError(f"{path.name} is not UTF-8 text: {e}.") from e
    if not texts:
        raise DataLoadError(f"{path.name} holds no examples: expected one JSON object a line.")
    if labels and unlabelled:
        raise DataLoadError(
            f'{path.name}: line {unlabelled[0]} has no "label" but other lines do; label every '
            "line or none."
        )
    return texts, (labels or None)


def _parse_line(line: str, number: int) -> tuple[str, int | None]:
    try:
        row: Any = json.loads(line)
    except ValueError as e:
        raise DataLoadError(f"Line {number} is not valid JSON: {e}.") from e
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise DataLoadError(
            f'Line {number} must be a JSON object with a string "text", e.g. '
            '{"text": "a fine film", "label": 1}.'
        )
    label = row.get("label")
    # bool is an int to Python, but true/false as a class index is almost surely a mistake.
    if label is not None and (
        not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= MAX_CLASS_ID
    ):
        raise DataLoadError(
            f'Line {number}: "label" must be a class index, an integer from 0 to {MAX_CLASS_ID}; '
            f"got {label!r}."
        )
    if not row["text"].isascii() and _lone_surrogate(row["text"]):
        raise DataLoadError(
            f'Line {number}: "text" holds half of a UTF-16 surrogate pair, which is no character.'
        )
    return row["text"], label


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def tokenize(texts: list[str], tokenizer: Any, max_length: int) -> torch.Tensor:
    """Tokenize in one batch call (the fast tokenizer spreads it over threads), padded to the
    longest text, truncated at ``max_length`` tokens; returns the packed ``(N, 2, L)`` tensor."""
    if not texts:
        raise DataLoadError("There are no texts to tokenize.")
    if tokenizer.pad_token_id is None:
        raise DataLoadError(
            "The tokenizer has no padding token, so texts of different lengths cannot share a "
            "batch; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) and save it again."
        )
    encoded = tokenizer(
        texts,
        padding="longest",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_attention_mask=True,
        return_token_type_ids=False,
    )
    return pack(encoded["input_ids"], encoded["attention_mask"])


def load_jsonl(
    path: Path, tokenizer: Any, max_length: int = 128
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A jsonl file as packed ``x`` ``(N, 2, L)`` and int64 ``y`` (None when unlabelled)."""
    texts, labels = read_jsonl(path)
    x = tokenize(texts, tokenizer, max_length)
    y = None if labels is None else torch.tensor(labels, dtype=torch.long)
    return x, y
