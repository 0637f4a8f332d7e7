"""The two refusals detection raises, and the messages that tell the uploader what to do."""

import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from app.files.formats.accepted import FORMAT_DESCRIPTIONS, Purpose, accepted_formats


class UnsupportedFormat(Exception):
    """Not a format this service accepts for the purpose; the message says what would be."""

    code = "unsupported_format"


class UnsafeFile(Exception):
    """Loading the file would run code (or escape its archive); nothing in it was executed."""

    code = "unsafe_file"


def unsupported(purpose: Purpose, reason: str) -> UnsupportedFormat:
    return UnsupportedFormat(f"{reason} {accepted_formats(purpose)}")


def wrong_purpose(found: str, purpose: Purpose) -> UnsupportedFormat:
    other: Purpose = "dataset" if purpose == "teacher" else "teacher"
    what = "a csv or jsonl text file" if found == "text" else FORMAT_DESCRIPTIONS[found]
    kind = "teacher" if other == "teacher" else "data set"
    return UnsupportedFormat(
        f"This is {what}, which is a {kind} format; upload it with purpose '{other}'. "
        f"{accepted_formats(purpose)}"
    )


def unsafe_pickle(where: str | None, offenders: list[str], advice: str) -> UnsafeFile:
    """``where`` names the archive member holding the pickle; None when the upload is one."""
    subject = "This file is a pickle that" if where is None else f"The pickle in '{where}'"
    return UnsafeFile(
        f"{subject} imports {', '.join(offenders)}, so loading it would run code; {advice}"
    )


STATE_DICT_ADVICE = (
    "only tensors are accepted. Save model.state_dict() rather than the model object, or use "
    "torch.jit.save, torch.export.save or safetensors."
)
TORCHSCRIPT_ADVICE = (
    "a TorchScript archive may reference only tensors and its own compiled classes. Re-save "
    "the model with torch.jit.save."
)
EXPORT_ADVICE = (
    "only tensors are accepted. Export a model whose weights, constants and sample inputs are "
    "plain tensors."
)
OVER_BUDGET_ADVICE = (
    "It was refused rather than let one upload hold the server; models and data sets saved by "
    "torch, safetensors or numpy stay far below these bounds."
)
ARCHIVE_ADVICE = (
    "only tensors are accepted. Remove that file from the archive, or re-save it as safetensors."
)


@contextmanager
def readable(purpose: Purpose, what: str) -> Iterator[None]:
    """Turn the errors of a damaged container into an answer the uploader can act on."""
    try:
        yield
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
        struct.error,
    ) as exc:
        raise unsupported(purpose, f"The {what} is truncated or corrupt ({exc}).") from exc
