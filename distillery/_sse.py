"""Server-Sent Events, as the job event stream sends them: ``id``, ``event`` and ``data`` lines,
a blank line ending each event, comment lines (``: keep-alive``) ignored."""

import json
from collections.abc import Iterable, Iterator
from typing import Any


def parse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON payload of each event, in order."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # ``id:`` repeats the payload's own id and ``event:`` its type; comments are ignored.
