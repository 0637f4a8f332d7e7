"""JSON lines between the worker and its training process.

Parent to child, on the child's stdin:
  {"type": "job", "job": <EngineJob>, "memory_bytes": int | null, "torch_threads": int | null}
  {"type": "stop"}                       the job was cancelled: checkpoint and stop
Child to parent, on the child's stdout:
  {"type": "call", "method": "on_progress", "args": [...], "kwargs": {...}}   any Callbacks on_*
  {"type": "result", "result": <EngineResult>}
  {"type": "error", "code": "...", "message": "..."}                          an EngineError
  {"type": "cancelled", "message": "..."}                                     JobCancelled
  {"type": "crashed", "message": "..."}                                       anything else

Paths, the engine's dataclasses and the job spec travel tagged,
``{"__distill__": "Path", "value": "..."}``, and come back to life only as the types the reader
names. The child runs untrusted code, so the parent reads everything it says as untrusted: bounded
lines, known types, checked values.
"""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

TAG = "__distill__"
MAX_LINE_BYTES = 8 * 2**20  # a progress report is a few kB; a sweep's result a few more


class ProtocolError(Exception):
    """A message that is not valid JSON, too long, or names a type the reader does not accept."""


def _tagged(value: Any) -> Any:
    if isinstance(value, Path):
        return {TAG: "Path", "value": str(value)}
    if isinstance(value, BaseModel):  # the job spec
        return {TAG: type(value).__name__, "value": value.model_dump(mode="json")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {TAG: type(value).__name__, "value": fields}
    raise TypeError(f"{type(value).__name__} cannot be sent to or from a training process")


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, default=_tagged, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"a message longer than {MAX_LINE_BYTES} bytes")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"a message that is not JSON: {e}") from e
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message without a type")
    return message


def revive(value: Any, types: Mapping[str, type]) -> Any:
    """``value`` with its tagged parts turned back into ``Path`` and the dataclasses in
    ``types`` (by class name); any other tag is a ``ProtocolError``."""
    if isinstance(value, list):
        return [revive(v, types) for v in value]
    if not isinstance(value, dict):
        return value
    if TAG not in value:
        return {k: revive(v, types) for k, v in value.items()}
    name, inner = value[TAG], value.get("value")
    if name == "Path" and isinstance(inner, str):
        return Path(inner)
    if name in types and isinstance(inner, dict):
        try:
            return types[name](**revive(inner, types))
        except TypeError as e:
            raise ProtocolError(f"a {name} with the wrong fields: {e}") from e
    raise ProtocolError(f"a value tagged {name!r}, which is not accepted here")
