"""Distillery's distillation engine: a pure PyTorch library. A job spec and file paths in;
artifacts, metrics and callbacks out. No database, broker or web framework in here."""

from worker.engine.artifacts import load_student
from worker.engine.errors import (
    DataLoadError,
    DeviceUnavailable,
    EngineError,
    JobCancelled,
    LabelsRequired,
    OutOfMemory,
    ShapeMismatch,
    TeacherLoadError,
    TrainingDiverged,
    UnsupportedInput,
)
from worker.engine.job import Callbacks, EngineJob, EngineResult, NullCallbacks, Progress
from worker.engine.losses import distillation_loss
from worker.engine.models import build_model
from worker.engine.run import run_job

__all__ = [
    "Callbacks",
    "DataLoadError",
    "DeviceUnavailable",
    "EngineError",
    "EngineJob",
    "EngineResult",
    "JobCancelled",
    "LabelsRequired",
    "NullCallbacks",
    "OutOfMemory",
    "Progress",
    "ShapeMismatch",
    "TeacherLoadError",
    "TrainingDiverged",
    "UnsupportedInput",
    "build_model",
    "distillation_loss",
    "load_student",
    "run_job",
]
