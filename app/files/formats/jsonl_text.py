"""jsonl data sets, one kind of object per line: ``{"text", "label"}`` for text classifiers (the
label optional), and for language models ``{"text"}``, ``{"prompt", "completion"}``,
``{"messages": [{"role", "content"}, ...]}`` or ``{"prompt"}`` alone.

Unlabelled ``{"text"}`` lines suit both a classifier (learning from the teacher alone) and a
language model: ``meta`` records both facts (``has_labels`` and ``lm_kind``) and the job decides by
its teacher."""

import json
from collections.abc import Iterator

from app.files.formats.accepted import Detected
from app.files.formats.errors import unsupported
from app.files.formats.labels import check_class_id

ROLES = ("system", "user", "assistant", "tool")
# Each kind by the keys that make it; "completion" needs "prompt", "label" needs "text".
_KIND_KEYS = ("text", "prompt", "messages")
_KIND_HELP = (
    'each line is one of {"text"} (with an optional "label"), {"prompt", "completion"}, '
    '{"messages": [{"role", "content"}, ...]} or {"prompt"}'
)


def detect_jsonl(lines: Iterator[str]) -> Detected:
    rows, kind, labelled, max_label = 0, None, None, -1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _jsonl_record(line, number)
        line_kind = _kind(record, number)
        if kind is not None and line_kind != kind:
            raise unsupported(
                "dataset",
                f"Line {number} is a {line_kind} record, unlike the {kind} records before it; "
                "a file holds one kind.",
            )
        kind = line_kind
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
            "lm_kind": kind,
        },
    )


def _jsonl_record(line: str, number: int) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise unsupported("dataset", f"Line {number} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict):
        raise unsupported("dataset", f"Line {number} must be a JSON object: {_KIND_HELP}.")
    return record


def _kind(record: dict, number: int) -> str:
    """The line's kind ("text", "prompt_completion", "messages" or "prompt"), once its fields
    are checked."""
    keys = [key for key in _KIND_KEYS if key in record]
    if len(keys) != 1:
        found = " and ".join(f'"{k}"' for k in keys) or "none of them"
        raise unsupported("dataset", f"Line {number} has {found}: {_KIND_HELP}.")
    if "label" in record and keys != ["text"]:
        raise unsupported("dataset", f'Line {number}: only {{"text"}} lines take a "label".')
    if "completion" in record and keys != ["prompt"]:
        raise unsupported("dataset", f'Line {number}: a "completion" needs a "prompt".')
    if keys == ["messages"]:
        _check_messages(record["messages"], number)
        return "messages"
    field = keys[0]
    _check_string(record, field, number)
    if field == "text":
        _check_label(record, number)
        return "text"
    if "completion" in record:
        _check_string(record, "completion", number, nonempty=True)
        return "prompt_completion"
    _check_string(record, "prompt", number, nonempty=True)
    return "prompt"


def _check_string(record: dict, key: str, number: int, *, nonempty: bool = False) -> None:
    value = record[key]
    if not isinstance(value, str):
        raise unsupported("dataset", f'Line {number}: "{key}" must be a string.')
    if nonempty and not value.strip():
        raise unsupported("dataset", f'Line {number}: "{key}" is empty; there is nothing to learn.')
    _check_unicode(value, f'"{key}"', number)


def _check_messages(messages: object, number: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise unsupported(
            "dataset", f'Line {number}: "messages" must be a non-empty list of messages.'
        )
    for i, message in enumerate(messages):
        where = f"Line {number}, message {i}"
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise unsupported("dataset", f'{where} must be an object with "role" and "content".')
        if message["role"] not in ROLES:
            raise unsupported(
                "dataset",
                f"{where} has role {str(message['role'])[:40]!r}; roles are {', '.join(ROLES)}.",
            )
        if not isinstance(message["content"], str):
            raise unsupported("dataset", f'{where}: "content" must be a string.')
        _check_unicode(message["content"], f'message {i}\'s "content"', number)
    if not any(m["role"] == "assistant" for m in messages):
        raise unsupported(
            "dataset",
            f"Line {number} has no assistant message; the losses count assistant tokens only.",
        )


def _check_label(record: dict, number: int) -> None:
    if "label" not in record:
        return
    label = record["label"]
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise unsupported(
            "dataset",
            f'Line {number}: "label" must be a class id, an integer 0 or more (got {label!r}).',
        )
    check_class_id(label, f"Line {number}")


def _check_unicode(text: str, what: str, number: int) -> None:
    # JSON may escape half of a UTF-16 surrogate pair ("\ud800") alone; that is no character,
    # and no tokenizer takes it.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise unsupported(
            "dataset",
            f"Line {number}: {what} holds {text[exc.start]!r} at character {exc.start}, half "
            "of a UTF-16 surrogate pair with no other half; that is not a character. Fix the "
            "writer that escaped it.",
        ) from exc
