"""A request that does not validate, told in the user's words: the field at fault as a dotted path
(``student.dropout``, not pydantic's ``student.mlp.dropout``), and for an unknown field the field
that was probably meant, found among the fields the model takes at that place.

The API tells a refused request body with it, and the client a spec it checks before uploading,
so that both name a misspelt field the same way. Errors are pydantic's, located from ``body`` as
FastAPI reports them (``body_errors`` turns a model's own errors into that form)."""

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

NOT_JSON = "The body is not JSON: send Content-Type: application/json with a JSON object."

# Keys the distill client takes in place of a file id: it uploads the local file and puts its id
# there (distillery/spec.py). The server never sees them, so a near miss is named with its id.
CLIENT_KEYS = {
    "path": "file_id",
    "train_path": "train_file_id",
    "validation_path": "validation_file_id",
}

_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")


def body_errors(error: ValidationError) -> list[dict[str, Any]]:
    """A model's validation errors located as a request body's: under ``body``."""
    return [{**err, "loc": ("body", *err["loc"])} for err in error.errors()]


def first_error(errors: typing.Sequence[Any]) -> dict[str, Any]:
    """The error to tell: an unknown field before all others, since a misspelt field also makes
    its intended one "missing", and that second message misleads."""
    unknown = [err for err in errors if err.get("type") == "extra_forbidden"]
    return (unknown or list(errors) or [{}])[0]


def describe(
    err: dict[str, Any], body: Any, body_type: Any, *, local_paths: bool = False
) -> tuple[str, str | None]:
    """(message, param) for one pydantic error of a request body of type ``body_type``.
    ``local_paths``: the reader is the client, which takes ``path``, ``train_path`` and
    ``validation_path`` itself, so a near miss of one of those is named as it is."""
    param = param_of(err, body)
    kind = err.get("type")
    if kind == "json_invalid":
        return NOT_JSON, None
    if tuple(err.get("loc", ())) == ("body",) and not isinstance(body, dict):
        return _not_an_object(body), None
    if kind in _TAG_ERRORS:
        ctx = err.get("ctx") or {}
        tag, expected = ctx.get("tag"), ctx.get("expected_tags")
        return f"{param}: unknown architecture {tag!r}; use one of {expected}.", param
    if kind == "extra_forbidden" and param:
        known = _fields_at(body_type, _model_path(err))
        return _unknown_field(param, known, local_paths), param
    msg = str(err.get("msg", "Invalid value")).removeprefix("Value error, ")
    if tuple(err.get("loc", ())) == ("body",) and (named := _named_field(msg, body_type)):
        return f"{msg}.", named
    return (f"{param}: {msg}." if param else f"{msg}."), param


def _named_field(msg: str, body_type: Any) -> str | None:
    """The field that a whole body's error names first (the spec's checks across fields start
    with the field at fault: "hyperparameters.teacher_top_k is for language models ...")."""
    found = re.match(r"[a-z_]+(\.(?:[a-z_]+|\d+))*\b", msg)
    if found is None:
        return None
    known = _fields_at(body_type, ()) or []
    return found.group() if found.group().split(".")[0] in known else None


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
}


def _not_an_object(body: Any) -> str:
    """What the body is instead of a JSON object: bytes of another content type (or none), no
    body at all, or JSON of another kind."""
    if isinstance(body, bytes | bytearray):
        return NOT_JSON
    if body is None:
        return "The body is empty: send Content-Type: application/json with a JSON object."
    kind = _JSON_KINDS.get(type(body), "not an object")
    return f"The body is {kind} in JSON; send a JSON object."


def _unknown_field(param: str, known: list[str] | None, local_paths: bool) -> str:
    *place, name = param.split(".")
    prefix = ".".join(place) + "." if place else ""
    message = f'"{param}" is not a field'
    if not known:
        return message + "."
    client_keys = {key: field for key, field in CLIENT_KEYS.items() if field in known}
    meant = difflib.get_close_matches(name, known + list(client_keys), n=1)
    if not meant:
        where = f"{'.'.join(place)} takes" if place else "A job takes"
        return f"{message}. {where}: {', '.join(known)}."
    if meant[0] in client_keys and not local_paths:
        field = client_keys[meant[0]]
        return (
            f'{message}; did you mean "{prefix}{field}"? ("{meant[0]}", a local file that the '
            f"distill client uploads and replaces by its {field}, is read by the client only.)"
        )
    return f'{message}; did you mean "{prefix}{meant[0]}"?'


def param_of(err: dict[str, Any], body: Any) -> str | None:
    """The dotted path of the field an error names, in the user's words: no union tags
    (``student.mlp.dropout`` -> ``student.dropout``), no character offsets of broken JSON."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return None
    value = body if loc[:1] == ("body",) else None
    parts: list[str] = []
    rest = loc[1:]
    for i, part in enumerate(rest):
        if str(part).startswith("function-"):
            continue
        if _is_union_tag(value, part, last=i == len(rest) - 1):
            continue
        parts.append(str(part))
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            value = None
    if err.get("type") in _TAG_ERRORS:
        parts.append("arch")  # the one tagged union in the API: architecture specs
    return ".".join(p for p in parts if p) or (str(loc[0]) if loc else None)


def _is_union_tag(value: Any, part: Any, *, last: bool) -> bool:
    """A union tag in an error's path names no key of the body: "mlp" where the body says
    ``{"arch": "mlp", ...}``, or where it leaves ``arch`` to its default (a field follows then)."""
    return isinstance(value, dict) and part not in value and (part in value.values() or not last)


def _model_path(err: dict[str, Any]) -> tuple[Any, ...]:
    """The path from the body to the model that refused the field: the error's loc without
    ``body``, the field itself and pydantic's validator steps."""
    loc = tuple(err.get("loc", ()))[1:-1]
    return tuple(part for part in loc if not str(part).startswith("function-"))


def _fields_at(annotation: Any, path: tuple[Any, ...]) -> list[str] | None:
    """The names of the fields that the model at ``path`` inside ``annotation`` takes."""
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    return list(models[0].model_fields) if len(models) == 1 else None


def _members(annotation: Any) -> list[Any]:
    """A union's members (an optional model is a union with None), or the one type."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_unwrap(member) for member in typing.get_args(annotation)]
    return [annotation]


def _step(annotation: Any, part: Any) -> Any:
    """One step of an error's path: a field of a model, an item of a list or dict, or a union's
    member (named by its tag or its class, as pydantic's locations name them)."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _union_member(args, part)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _union_member(members: tuple[Any, ...], part: Any) -> Any:
    for member in members:
        tags = [m.tag for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)]
        if part in tags or getattr(_unwrap(member), "__name__", None) == part:
            return member
    # A plain optional (X | None) adds no step of its own: the step is into its member.
    for member in members:
        if member is not type(None) and (found := _step(member, part)) is not None:
            return found
    return None


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` is X (its metadata is read where it matters, by ``_union_member``)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation
