"""Static inspection of pickles: which globals would loading them import and call?

Nothing here unpickles. ``scan_pickle`` walks the opcodes with ``pickletools.genops`` and keeps a
small model of the unpickler's stack and memo, just enough to know which ``module.name`` each
``GLOBAL``, ``STACK_GLOBAL`` and ``INST`` would resolve, and whether every ``REDUCE``/``NEWOBJ``/
``OBJ`` calls something that came from one of them. The allowlists (file_rules/pickles.py) mirror
what ``torch.load(weights_only=True)`` and TorchScript's C++ unpickler accept, so an upload passes
only if the strictest loader would also take it.
"""

import _compat_pickle
import io
import pickletools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from app.files import limits
from file_rules.pickles import Allowed

# A single pickle record (a string, a bytes blob) larger than this is refused rather than held in
# memory: torch's pickles carry tensor data out of band, so real ones never come close.
MAX_RECORD_BYTES = 256 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
# A state dict costs about 30 opcodes and 5 memo entries per tensor. The opcodes of all the
# pickles in one upload count against one budget (app/files/limits.py); the memo bound keeps a
# hostile pickle to megabytes.
MAX_MEMO = 2_000_000
_CHECK_EVERY = 4096  # opcodes between looks at the budget and the clock

UNRESOLVABLE_GLOBAL = "<unresolvable STACK_GLOBAL>"
UNRESOLVABLE_CALL = "<call of an object that no allowed global produced>"


class PickleMalformed(Exception):
    """The bytes are not a complete, well-formed pickle (truncated, corrupt, or not a pickle)."""


# --- the scan ---------------------------------------------------------------------------------


def scan_pickle(
    data: bytes | BinaryIO,
    *,
    allowed: Allowed,
    max_pickles: int | None = None,
    report_partial: bool = True,
) -> list[str]:
    """The ``module.name`` globals (or ``<...>`` markers) that make these pickles unsafe.

    Scans pickles back to back until end of input, or ``max_pickles`` of them (legacy
    ``torch.save`` files are five pickles followed by raw tensor bytes). An empty list means every
    callable the pickles reach is allowed. Raises ``PickleMalformed`` when the bytes are not
    well-formed pickles, unless an offending global was already seen before the damage: an
    unpickler would have run that call before failing, so it is reported rather than hidden.
    ``report_partial=False`` raises even then, for bytes that may not be a pickle at all (random
    bytes can spell a global before they stop making sense).
    """
    reader = _Reader(io.BytesIO(data) if isinstance(data, bytes) else data)
    offenders: list[str] = []
    count = 0
    while max_pickles is None or count < max_pickles:
        if count > 0 and not reader.has_more():
            break
        try:
            _Machine(allowed, offenders).run(reader)
        except PickleMalformed:
            if offenders and report_partial:
                return offenders
            raise
        count += 1
    return offenders


class _Reader:
    """Feeds ``genops`` with bounded reads and one byte of look-ahead between pickles."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._pushed = b""
        self.budget = limits.current()

    def has_more(self) -> bool:
        self._pushed = self._pushed or self._raw.read(1)
        return bool(self._pushed)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_RECORD_BYTES:
            raise PickleMalformed(f"a pickle record of {n} bytes is larger than allowed")
        head, self._pushed = self._pushed[:n], self._pushed[n:]
        return head + self._raw.read(n - len(head)) if n > len(head) else head

    def readline(self) -> bytes:
        head, self._pushed = self._pushed, b""
        if head.endswith(b"\n"):
            return head
        line = head + self._raw.readline(MAX_LINE_BYTES)
        if len(line) >= MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise PickleMalformed("a pickle text record is longer than allowed")
        return line


@dataclass(frozen=True)
class _Global:
    """A stack value that came from GLOBAL/STACK_GLOBAL/INST: something callable, vetted once."""

    name: str


class _Mark:
    pass


_MARK = _Mark()
_OPAQUE = object()  # any value the scan does not need to know (numbers, containers, results)

# Opcodes that push a str, or a Python 2 string that Python 3 unpickles as str by default.
_STRING_OPS = frozenset(
    op.name
    for op in pickletools.opcodes
    if op.stack_after in ([pickletools.pyunicode], [pickletools.pybytes_or_str])
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_CALL_OPS = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}  # how deep the callable sits


class _Machine:
    """One pickle's worth of stack and memo, tracking only strings and globals."""

    def __init__(self, allowed: Allowed, offenders: list[str]) -> None:
        self.allowed = allowed
        self.offenders = offenders
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}

    def run(self, reader: _Reader) -> None:
        for op, arg in _opcodes(reader):
            self.step(op, arg)

    def step(self, op: pickletools.OpcodeInfo, arg: object) -> None:
        name = op.name
        if name in _STRING_OPS:
            self.stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name == "GLOBAL":
            self.stack.append(self.resolve(*_module_and_name(arg)))
        elif name == "STACK_GLOBAL":
            qualname, module = self.pop(), self.pop()
            if isinstance(module, str) and isinstance(qualname, str):
                self.stack.append(self.resolve(module, qualname))
            else:
                self.offend(UNRESOLVABLE_GLOBAL)
                self.stack.append(_Global(UNRESOLVABLE_GLOBAL))
        elif name == "INST":
            self.resolve(*_module_and_name(arg))
            self.pop_mark()
            self.stack.append(_OPAQUE)
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise PickleMalformed("OBJ without a class")
            self.check_callable(items[0])
            self.stack.append(_OPAQUE)
        elif name in ("EXT1", "EXT2", "EXT4"):
            # The copyreg extension registry maps codes to arbitrary globals; torch never uses it.
            self.offend(f"<extension registry code {arg}>")
            self.stack.append(_Global(f"<extension {arg}>"))
        else:
            self.step_plain(op, arg)

    def step_plain(self, op: pickletools.OpcodeInfo, arg: object) -> None:
        name = op.name
        if name in _CALL_OPS:
            self.check_callable(self.peek(_CALL_OPS[name]))
        elif name == "BUILD" and isinstance(self.peek(2), _Global):
            # State is only ever set on instances; setting it on a class or function is an
            # attempt to patch it (weights_only refuses this, and torch.export then retries
            # with the unrestricted unpickler).
            self.offend(f"<state written onto {cast(_Global, self.peek(2)).name}>")
        if name in _PUT_OPS or name == "MEMOIZE":
            if len(self.memo) >= MAX_MEMO:
                raise PickleMalformed(f"the pickle memoizes more than {MAX_MEMO} values")
            key = len(self.memo) if name == "MEMOIZE" else _as_int(arg)
            self.memo[key] = self.peek(1)
        elif name in _GET_OPS:
            if _as_int(arg) not in self.memo:
                raise PickleMalformed(f"memo entry {arg} is read before it is written")
            self.stack.append(self.memo[_as_int(arg)])
        elif name == "MARK":
            self.stack.append(_MARK)
        elif name == "DUP":
            self.stack.append(self.peek(1))
        else:
            self.apply_stack_effect(op)

    def apply_stack_effect(self, op: pickletools.OpcodeInfo) -> None:
        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_mark()
            for _ in range(before.index(pickletools.markobject)):
                self.pop()  # the list/dict/set under the mark (APPENDS, SETITEMS, ADDITEMS)
        else:
            for _ in before:
                self.pop()
        self.stack.extend(_OPAQUE for _ in op.stack_after)

    def resolve(self, module: str, name: str) -> _Global:
        # Python (protocol < 3) and torch's weights-only unpickler both translate Python 2 names,
        # e.g. torch.save writes "__builtin__ set" for builtins.set; judge the translated name.
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        )
        full = f"{module}.{name}"
        if not self.allowed(module, name):
            self.offend(full)
        return _Global(full)

    def check_callable(self, value: object) -> None:
        if not isinstance(value, _Global):
            self.offend(UNRESOLVABLE_CALL)

    def offend(self, what: str) -> None:
        if what not in self.offenders:
            self.offenders.append(what)

    def peek(self, depth: int) -> object:
        if len(self.stack) < depth or any(v is _MARK for v in self.stack[-depth:]):
            raise PickleMalformed("the pickle reads below the bottom of its stack")
        return self.stack[-depth]

    def pop(self) -> object:
        value = self.peek(1)
        self.stack.pop()
        return value

    def pop_mark(self) -> list[object]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise PickleMalformed("the pickle closes a MARK it never opened")


def _opcodes(reader: _Reader) -> Iterator[tuple[pickletools.OpcodeInfo, object]]:
    n = 0
    try:
        # genops only calls read() and readline(), which _Reader provides.
        for n, (op, arg, _pos) in enumerate(pickletools.genops(cast(IO[bytes], reader)), 1):
            if n % _CHECK_EVERY == 0:
                reader.budget.spend_opcodes(_CHECK_EVERY)
                reader.budget.check_time()
            yield op, arg
    except PickleMalformed:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError) as exc:
        # genops raises ValueError for unknown opcodes and for arguments cut short by EOF.
        raise PickleMalformed(f"not a well-formed pickle: {exc}") from exc
    reader.budget.spend_opcodes(n % _CHECK_EVERY)


def _as_int(arg: object) -> int:
    if not isinstance(arg, int):
        raise PickleMalformed(f"expected an integer argument, got {arg!r}")
    return arg


def _module_and_name(arg: object) -> tuple[str, str]:
    module, _, name = str(arg).partition(" ")
    if not module or not name:
        raise PickleMalformed(f"a global reference {arg!r} lacks a module or a name")
    return module, name
