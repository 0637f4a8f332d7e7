"""What both model cards (``model_card.py``, ``lm/card.py``) write with: Markdown-safe text from
what users wrote, number formats, the Jinja2 environment of the card templates, and writing a
card and its chart whole or not at all."""

import re
from pathlib import Path
from typing import Any

import jinja2

from worker.engine.artifacts import atomic_write

DASH = "—"  # a number the job did not measure
TEMPLATES = Path(__file__).parent / "templates"

# Characters that start Markdown structure inside a line (emphasis, links, code, HTML, entities,
# table cells, a heading's closing hashes): escaped with a backslash, as CommonMark allows for
# any ASCII punctuation.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>&|~#])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Metrics(dict):
    """metrics.json's values; one the job did not measure reads as None."""

    def __missing__(self, key: str) -> None:
        return None


def text(value: Any) -> str:
    """``value`` as plain text on one line of Markdown: it renders as written, and adds no
    structure (no heading, link, HTML or table cell of its own)."""
    return _MARKDOWN.sub(r"\\\1", _CONTROL.sub(" ", str(value)))


def code_span(value: Any) -> str:
    """``value`` in a code span, on one line, that no backtick in it can close; its pipes
    escaped, so that inside a table it stays one cell (GitHub's tables read ``\\|`` as ``|``)."""
    written = _CONTROL.sub(" ", str(value)).replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", written)), default=0))
    pad = " " if written.startswith("`") or written.endswith("`") else ""
    return f"{fence}{pad}{written}{pad}{fence}"


def count(value: Any) -> str:
    return DASH if value is None else f"{value:,}"


def pct(value: Any) -> str:
    return DASH if value is None else f"{value:.2%}"


def num(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def ratio(value: float) -> str:
    """A ratio of sizes or speeds; below 1, to two significant digits (0.075x, not 0.1x)."""
    return f"{value:.1f}x" if value >= 0.95 else f"{value:.2g}x"


def seconds(value: Any) -> str:
    return DASH if value is None else f"{value:.1f} s"


def template(name: str, **filters: Any) -> jinja2.Template:
    """The card template ``name``. Markdown, not HTML: no autoescape; the templates escape what
    users wrote with the ``code`` and ``text`` filters instead."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {
        "code": code_span,
        "text": text,
        "count": count,
        "pct": pct,
        "num": num,
        "ratio": ratio,
        "seconds": seconds,
    } | filters
    return env.get_template(name)


def tidy(rendered: str) -> str:
    """A section or row the job has not got leaves its blank lines behind; Markdown needs only
    one between blocks (and no card holds text of its own with two in a row)."""
    return re.sub(r"\n{3,}", "\n\n", rendered).strip("\n") + "\n"


def write_card(output_dir: Path, chart: str, card: str) -> list[Path]:
    """``curves.svg`` then ``model_card.md``, each written whole or not at all."""

    def writer(content: str) -> Any:
        return lambda path: path.write_text(content, encoding="utf-8")

    return [
        atomic_write(output_dir / "curves.svg", writer(chart)),
        atomic_write(output_dir / "model_card.md", writer(card)),
    ]
