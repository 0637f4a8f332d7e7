"""jsonl data sets: one {"text": ..., "label": ...} object per line."""

import json
from collections.abc import Iterator

from app.files.formats.accepted import Detected
from app.files.formats.errors import unsupported
from app.files.formats.labels import check_class_id


def detect_jsonl(lines: Iterator[str]) -> Detected:
    rows, labelled, max_label = 0, None, -1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _jsonl_record(line, number)
        has_label = "label" in record
        if labelled is not None and has_label != labelled:
            raise unsupported(
                "dataset",
                f"Line {number} {'has' if has_label else 'lacks'} a "
                "label, unlike the lines before it; label all lines or none.",
            )
        labelled = has_label
        max_label = max(max_label, record.get("label", -1))
        rows += 1
    if rows == 0:
        raise unsupported("dataset", "The jsonl file has no records.")
    return Detected(
        "jsonl",
        {
            "rows": rows,
            "has_labels": bool(labelled),
            "num_classes": max_label + 1 if labelled else None,
        },
    )


def _jsonl_record(line: str, number: int) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise unsupported("dataset", f"Line {number} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise unsupported("dataset", f'Line {number} must be an object with a string "text".')
    _check_unicode(record["text"], number)
    if "label" not in record:
        return record
    label = record["label"]
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise unsupported(
            "dataset",
            f'Line {number}: "label" must be a class id, an integer 0 or more (got {label!r}).',
        )
    check_class_id(label, f"Line {number}")
    return record


def _check_unicode(text: str, number: int) -> None:
    # JSON may escape half of a UTF-16 surrogate pair ("\ud800") alone; that is no character,
    # and no tokenizer takes it.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise unsupported(
            "dataset",
            f'Line {number}: "text" holds {text[exc.start]!r} at character {exc.start}, half '
            "of a UTF-16 surrogate pair with no other half; that is not a character. Fix the "
            "writer that escaped it.",
        ) from exc
