"""Text data sets: UTF-8, read line by line with a bound on each line, as csv or jsonl."""

import codecs
from collections.abc import Iterator
from pathlib import Path

from app.files.formats.accepted import Detected
from app.files.formats.csv_text import detect_csv
from app.files.formats.errors import unsupported
from app.files.formats.jsonl_text import detect_jsonl

MAX_LINE_CHARS = 16 * 1024 * 1024


def looks_like_text(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def detect_text(path: Path, head: bytes) -> Detected:
    if not looks_like_text(head):
        raise unsupported("dataset", "This file is neither a known binary format nor UTF-8 text.")
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    if first == b"[":
        raise unsupported(
            "dataset",
            "This is a JSON array; upload JSON Lines instead: one object per line, such as "
            '{"text": ..., "label": ...} (or, for language models, {"text"}, '
            '{"prompt", "completion"}, {"messages": [...]} or {"prompt"}).',
        )
    try:
        lines = _text_lines(path)
        return detect_jsonl(lines) if first == b"{" else detect_csv(lines)
    except UnicodeDecodeError as exc:
        reason = f"This text is not UTF-8 (byte {exc.start} of a line cannot be decoded)."
        raise unsupported("dataset", reason) from exc


def _text_lines(path: Path) -> Iterator[str]:
    """Lines of UTF-8 text, each bounded so that one endless line cannot fill memory."""
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        number = 0
        while line := f.readline(MAX_LINE_CHARS):
            number += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                raise unsupported(
                    "dataset", f"Line {number} is longer than {MAX_LINE_CHARS} characters."
                )
            yield line
