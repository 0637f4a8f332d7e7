"""Errors as types. Each carries a contract error ``code`` and a ``message`` a person can act on."""

# A rank of a job on several devices died: the gang stopped, and the worker queues the job again.
RANK_LOST = "rank_lost"


class EngineError(Exception):
    """A job failed for a reason worth telling the user; ``code`` goes into the job's ``error``."""

    code = "engine_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class TeacherLoadError(EngineError):
    code = "teacher_load_failed"


class DataLoadError(EngineError):
    code = "data_load_failed"


class ShapeMismatch(EngineError):
    code = "shape_mismatch"


class TrainingDiverged(EngineError):
    code = "training_diverged"


class OutOfMemory(EngineError):
    code = "out_of_memory"


class UnsupportedInput(EngineError):
    """An input this engine cannot handle yet: codes ``unsupported_teacher``, ``unsupported_data``,
    ``unsupported_arch``."""

    code = "unsupported_input"


class LabelsRequired(EngineError):
    code = "labels_required"


class DeviceUnavailable(EngineError):
    code = "device_unavailable"


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or the CPU allocator's RuntimeError, which a job bounded in address
    space (the worker's RLIMIT_AS) also gets. CUDA's is ``torch.cuda.OutOfMemoryError``."""
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def last_line(error: BaseException) -> str:
    """The cause of a library's error for a message: TorchScript, transformers and the ONNX
    exporters put a long trace first and the cause on the last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


class JobCancelled(Exception):
    """``should_stop()`` said so; the checkpoint was saved first, so the job can resume."""
