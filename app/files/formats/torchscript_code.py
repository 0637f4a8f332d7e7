"""The code in a TorchScript archive (code/**/*.py, compiled by torch.jit.load), read as Python
syntax and checked against file_rules/operators.py: every method of every module and class,
forward or not, since load itself runs __setstate__ and any method may be called."""

import ast
import zipfile

from app.files.formats.errors import TORCHSCRIPT_ADVICE, UnsafeFile
from file_rules.operators import CLASS_NAMESPACES, REFUSED_NAMES, refused_operator

MAX_CODE_BYTES = 64 * 1024 * 1024


def check_torchscript_code(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        if info.file_size > MAX_CODE_BYTES:
            raise UnsafeFile(f"'{info.filename}' holds more than {MAX_CODE_BYTES} bytes of code.")
        try:
            tree = ast.parse(zf.read(info).decode("utf-8"), info.filename)
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
            raise UnsafeFile(
                f"'{info.filename}' is not code torch.jit.save writes ({exc}); {TORCHSCRIPT_ADVICE}"
            ) from exc
        for node in ast.walk(tree):
            reason = _refusal(node)
            if reason:
                raise UnsafeFile(
                    f"'{info.filename}' {reason}, which reaches files, processes or the network "
                    f"rather than computing; {TORCHSCRIPT_ADVICE}"
                )


def _refusal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
        return f"calls '{node.id}'"
    if isinstance(node, ast.Attribute):
        if node.attr in REFUSED_NAMES:
            return f"calls '{node.attr}'"
        return _namespace_refusal(_dotted(node))
    if isinstance(node, ast.Constant) and node.value in REFUSED_NAMES:
        return f"names '{node.value}'"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        base = _dotted(node.args[0]) or []
        if node.func.id in ("getattr", "hasattr") and base[:1] in (["torch"], ["ops"]):
            return f"looks up an operator by name ({ast.unparse(node)[:200]!r})"
    return None


def _namespace_refusal(parts: list[str] | None) -> str | None:
    """``ops.<namespace>.<op>`` (also ``torch.ops...``) and ``torch.classes.<namespace>...``."""
    if not parts:
        return None
    shown = ".".join(parts)
    chain = parts[1:] if parts[:2] == ["torch", "ops"] else parts
    if chain[0] == "ops" and len(chain) >= 2 and refused_operator(chain[1], "".join(chain[2:3])):
        return f"calls '{shown}'"
    for i in range(len(parts) - 2):
        if parts[i : i + 2] == ["torch", "classes"] and parts[i + 2] not in CLASS_NAMESPACES:
            return f"uses the custom class '{shown}'"
    return None


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]
