"""The programs in a .pt2: torch.export.load evaluates some of their strings as Python, so
every such string must fit the narrow grammar torch itself writes, and every call must name a
PyTorch operator."""

import io
import re
import tokenize

from app.files.formats.errors import UnsafeFile
from file_rules.operators import refused_operator


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Torch writes symbolic shapes with sympy's srepr and torch.export.load parses them with
# sympy.sympify, which evaluates Python; guards_code is exec'd when the program is unlifted. Only
# the vocabulary torch itself produces passes, so neither can carry code.
_SYMPY_NAMES = _words(
    "Symbol Integer Float Rational Add Mul Pow Mod Max Min Abs Eq Ne Lt Le Gt Ge And Or Not "
    "StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality BooleanTrue "
    "BooleanFalse true false oo zoo nan Infinity NegativeInfinity NaN floor ceiling sqrt "
    "Piecewise ExprCondPair ITE Tuple FloorDiv ModularIndexing Where PythonMod CleanDiv "
    "CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv "
    "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat "
    "Identity positive negative nonnegative nonpositive integer real finite infinite zero "
    "nonzero commutative precision even odd rational extended_real True False None"
)
_GUARD_NAMES = _SYMPY_NAMES | _words(
    "L size stride storage_offset dim numel math isnan isinf inf int float and or not"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}\d+")
_SAFE_STRING = re.compile(r"[A-Za-z0-9_.+\- ]*")
_SAFE_OPS = _words("( ) [ ] , = + - * / ** // % < > <= >= == != & | ~")
_OPERATOR_TARGETS = _words(
    "eq ne le ge lt gt neg pos mul add sub floordiv mod pow truediv and_ or_ lshift rshift "
    "getitem not_ abs"
)
_TORCH_TARGETS = frozenset(
    {
        "torch.autograd.grad_mode.set_grad_enabled",
        "torch._C._set_grad_enabled",
        "torch.amp.autocast_mode._enter_autocast",
        "torch.amp.autocast_mode._exit_autocast",
        "torch.fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless",
    }
)


def check_export_program(program: object, where: str) -> None:
    pending = [program]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    _check_expression(value, _SYMPY_NAMES, where, attributes=False)
                elif key == "guards_code":
                    for guard in value if isinstance(value, list) else [value]:
                        _check_expression(guard, _GUARD_NAMES, where, attributes=True)
                elif key == "target" and "inputs" in node:
                    _check_op_target(value, where)
                pending.append(value)


def _check_expression(text: object, names: frozenset[str], where: str, *, attributes: bool) -> None:
    """Allow one line of allowlisted names, numbers, plain strings and operators; no dunders,
    and attribute access (``L['x'].size()``) only in guards."""
    if not isinstance(text, str) or len(text) > 10_000 or any(c in text for c in "\n\r"):
        raise _unsafe_expression(text, where)
    if "__" in text:
        raise _unsafe_expression(text, where)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise _unsafe_expression(text, where) from exc
    ops = _SAFE_OPS | {"."} if attributes else _SAFE_OPS
    if not all(_safe_token(tok, names, ops) for tok in tokens):
        raise _unsafe_expression(text, where)


def _safe_token(tok: tokenize.TokenInfo, names: frozenset[str], ops: frozenset[str]) -> bool:
    kind, value = tok.type, tok.string
    if kind == tokenize.NAME:
        return value in names or _SYMBOL_NAME.fullmatch(value) is not None
    if kind == tokenize.NUMBER:
        return len(value) <= 40
    if kind == tokenize.STRING:
        # Plain quotes only (no f-strings); torch pastes guards into a quoted message too.
        return value[:1] in ("'", '"') and _SAFE_STRING.fullmatch(value[1:-1]) is not None
    if kind == tokenize.OP:
        return value in ops
    return kind in (tokenize.NEWLINE, tokenize.ENDMARKER) and not value.strip()


def _unsafe_expression(text: object, where: str) -> UnsafeFile:
    shown = repr(text)[:200]
    return UnsafeFile(
        f"'{where}' carries the expression {shown}, which torch.export.load would "
        "evaluate as Python and which torch.export never writes; re-export the "
        "model with torch.export.save."
    )


def _check_op_target(target: object, where: str) -> None:
    if isinstance(target, str) and "__" not in target and _known_target(target):
        return
    raise UnsafeFile(
        f"'{where}' calls {str(target)[:200]!r}, which is not a PyTorch operator that "
        "computes (file, process, network and custom operators are refused); re-export the "
        "model with torch.export.save."
    )


def _known_target(target: str) -> bool:
    parts = target.split(".")
    if not all(p.isidentifier() for p in parts):
        return False
    if parts[:2] == ["torch", "ops"]:
        # torch.ops.<namespace>.<op>[.<overload>], in a namespace torch defines for computing
        # (so never torch.ops.load_library, which would load a library).
        return len(parts) in (4, 5) and not refused_operator(parts[2], parts[3])
    if len(parts) == 2 and parts[0] == "_operator":
        return parts[1] in _OPERATOR_TARGETS
    if len(parts) == 2 and parts[0] == "math":
        return True
    if len(parts) == 2 and parts[0] == "torch":
        return parts[1].startswith(("sym_", "_sym_"))
    return target in _TORCH_TARGETS
