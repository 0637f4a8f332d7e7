"""The job spec: what a user submits, validated and defaulted; the job echoes it in ``spec``."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

PositiveSize = Annotated[int, Field(ge=1, le=65536)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlpArch(_Strict):
    arch: Literal["mlp"] = "mlp"
    hidden_sizes: list[PositiveSize] = Field(default_factory=lambda: [128], max_length=16)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class CnnArch(_Strict):
    arch: Literal["cnn"]
    channels: list[Annotated[int, Field(ge=1, le=2048)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=8
    )
    kernel_size: int = Field(default=3, ge=1, le=15)
    hidden_sizes: list[PositiveSize] = Field(default_factory=lambda: [64], max_length=16)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


def _arch_tag(value: Any) -> str:
    # An arch spec without "arch" is an MLP, as the defaults promise.
    if isinstance(value, dict):
        return str(value.get("arch", "mlp"))
    return str(getattr(value, "arch", "mlp"))


Arch = Annotated[
    Annotated[MlpArch, Tag("mlp")] | Annotated[CnnArch, Tag("cnn")],
    Discriminator(_arch_tag),
]


class TeacherSpec(_Strict):
    file_id: str = Field(min_length=1, max_length=40)
    arch: Arch | None = None


class DataSpec(_Strict):
    train_file_id: str = Field(min_length=1, max_length=40)
    validation_file_id: str | None = Field(default=None, max_length=40)
    validation_split: float = Field(default=0.1, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _has_validation(self) -> "DataSpec":
        if self.validation_file_id is None and self.validation_split <= 0:
            raise ValueError("validation_split must be above 0 when no validation_file_id is given")
        return self


class Hyperparameters(_Strict):
    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class JobSpec(_Strict):
    name: str | None = Field(default=None, max_length=200)
    teacher: TeacherSpec
    student: Arch = Field(default_factory=MlpArch)
    data: DataSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    baseline: bool = False
    priority: int = Field(default=0, ge=-1000, le=1000)
