"""The one rule for class ids, whichever format carries them: whole numbers from 0 to
``MAX_CLASS_ID``, stored (in npz and safetensors) in a dtype torch can train on. The engine
(worker/engine/data.py, text.py) holds the same bounds for files uploaded before the rule."""

import numpy as np

from app.files.formats.errors import unsupported

MAX_CLASS_ID = 2**31 - 1
# torch has no comparison or cast kernels for uint16, uint32 and uint64 on the CPU.
CLASS_ID_DTYPES = ("int8", "uint8", "int16", "int32", "int64")


def check_class_id(value: int, where: str) -> None:
    """``where`` starts the message, e.g. "Line 3" or "Tensor 'y'"."""
    if not 0 <= value <= MAX_CLASS_ID:
        raise unsupported(
            "dataset",
            f"{where} has class id {_short(value)}; class ids are whole numbers from 0 to "
            f"{MAX_CLASS_ID}.",
        )


def check_class_id_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.name not in CLASS_ID_DTYPES:
        raise unsupported(
            "dataset",
            f"{where} holds class ids as {dtype.name}, which training cannot read; save them as "
            f"one of {', '.join(CLASS_ID_DTYPES)} (int64 is usual).",
        )


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"
