"""csv data sets: a header row, numeric feature columns and an optional 'label' column."""

import csv
from collections.abc import Iterator

from app.files.formats.accepted import Detected
from app.files.formats.errors import unsupported
from app.files.formats.labels import check_class_id

TYPECHECK_ROWS = 10_000
MAX_CLASS_NAMES = 10_000


def detect_csv(lines: Iterator[str]) -> Detected:
    reader = csv.reader(lines)
    try:
        header = _csv_header(next(reader, None))
        label_at = header.index("label") if "label" in header else None
        labels = _Labels()
        rows = 0
        for row in reader:
            if not row:
                continue  # csv yields [] for a blank line
            rows += 1
            _check_csv_row(row, header, label_at, reader.line_num, typecheck=rows <= TYPECHECK_ROWS)
            if label_at is not None:
                labels.add(row[label_at], reader.line_num)
    except csv.Error as exc:
        raise unsupported("dataset", f"Line {reader.line_num} is not valid csv ({exc}).") from exc
    if rows == 0:
        raise unsupported("dataset", "The csv file has a header but no data rows.")
    features = [h for i, h in enumerate(header) if i != label_at]
    meta = {
        "rows": rows,
        "sample_shape": [len(features)],
        "has_labels": label_at is not None,
        "columns": features,
        "label_kind": None,
        "num_classes": None,
        "classes": None,
    }
    return Detected("csv", meta | (labels.meta() if label_at is not None else {}))


def _csv_header(row: list[str] | None) -> list[str]:
    if not row:
        raise unsupported("dataset", "The csv file is empty; it needs a header row.")
    header = [name.strip() for name in row]
    if any(not name for name in header):
        raise unsupported("dataset", "The csv header has an empty column name.")
    if len(set(header)) != len(header):
        raise unsupported("dataset", "The csv header names a column twice.")
    if all(_is_number(name) for name in header):
        raise unsupported(
            "dataset",
            "The first csv row looks like data; add a header row "
            "naming the columns (and 'label' for the class column).",
        )
    if header == ["label"]:
        raise unsupported("dataset", "The csv file has a label column but no feature columns.")
    return header


def _check_csv_row(
    row: list[str], header: list[str], label_at: int | None, line: int, *, typecheck: bool
) -> None:
    if len(row) != len(header):
        raise unsupported(
            "dataset", f"Line {line} has {len(row)} columns; the header has {len(header)}."
        )
    if not typecheck:
        return
    for i, value in enumerate(row):
        if i != label_at and not _is_number(value):
            raise unsupported(
                "dataset",
                f"Line {line}, column '{header[i]}': {value[:50]!r} "
                "is not a finite number; every column but 'label' must be "
                "numeric.",
            )


def _is_number(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return number - number == 0  # false for inf and nan


class _Labels:
    """Labels as they stream past: integer class ids if every one parses, real regression targets
    if every one is a finite number and some are not whole, else class names."""

    def __init__(self) -> None:
        self.ints_only = True
        self.max_id = -1
        self.max_line = 0  # where max_id is
        self.negative: tuple[int, int] | None = None  # (line, value) of the first negative id
        self.names: set[str] = set()
        self.too_many_names = False
        self.numbers_only = True
        self.fractional = False  # some label is a number that is not whole, e.g. 0.5

    def add(self, raw: str, line: int) -> None:
        value = raw.strip()
        if not value:
            raise unsupported("dataset", f"Line {line} has an empty label.")
        if self.ints_only:
            self._add_id(value, line)
        if self.numbers_only and not self.ints_only:
            self._add_number(value)
        if len(self.names) < MAX_CLASS_NAMES:
            self.names.add(value)
        elif value not in self.names:
            self.too_many_names = True

    def _add_id(self, value: str, line: int) -> None:
        try:
            number = int(value)
        except ValueError:
            self.ints_only = False
            return
        if number > self.max_id:
            self.max_id, self.max_line = number, line
        if number < 0 and self.negative is None:
            self.negative = (line, number)

    def _add_number(self, value: str) -> None:
        if not _is_number(value):
            self.numbers_only = False
        elif not float(value).is_integer():
            self.fractional = True

    def meta(self) -> dict:
        if self.numbers_only and self.fractional:
            return {"label_kind": "real", "num_classes": None, "classes": None}
        kind = {"label_kind": "class"}
        if self.ints_only:
            if self.negative is not None:
                line, value = self.negative
                raise unsupported(
                    "dataset",
                    f"Line {line} has label {value}; integer labels are "
                    "class ids and must be 0 or more.",
                )
            check_class_id(self.max_id, f"Line {self.max_line}")
            return kind | {"num_classes": self.max_id + 1, "classes": None}
        if self.too_many_names:
            return kind | {"num_classes": None, "classes": None}
        return kind | {"num_classes": len(self.names), "classes": sorted(self.names)}
