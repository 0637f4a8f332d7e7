"""Settings, read once from the environment (prefix ``DISTILL_``)."""

import re
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VAR_DIR = Path("var")
_HOST_NAME = re.compile(r"(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    database_url: str = f"sqlite:///{VAR_DIR / 'distill.db'}"
    # The embedded broker is kombu's filesystem transport: a real Celery worker and no server
    # to install.
    broker_url: str = "filesystem://"
    # This machine's directory: the store itself with the local backend (shared by every process,
    # e.g. over NFS); with S3, where this machine keeps temporary uploads and its copies of objects.
    storage_dir: Path = VAR_DIR / "storage"
    # Where uploads, checkpoints, teacher-output caches and artifacts live: "local" (storage_dir)
    # or "s3" (any S3-compatible object store, settings below).
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""  # keys go under it, e.g. "distill/"
    s3_endpoint_url: str | None = None  # unset: AWS; else e.g. http://minio:9000
    s3_region: str | None = None
    # Unset: boto3's standard credential chain (environment, ~/.aws, an instance role).
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # Larger files go up in parts of this size; S3 accepts no part under 5 MiB.
    s3_multipart_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2)
    admin_key: str | None = None
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    # A Hugging Face teacher archive may unpack to at most this much on the worker (zip bombs).
    max_unpacked_bytes: int = Field(default=4 * 1024**3, gt=0)
    # Upload checks (app/files/checking.py): each upload's format check runs in a process of its
    # own, at most this many at once (more uploads wait their turn).
    upload_checks_at_once: int = Field(default=2, ge=1)
    # One check's CPU seconds (RLIMIT_CPU; the wall-clock limit is twice this plus 10 s); past it
    # the upload is refused as unsafe_file.
    upload_check_seconds: float = Field(default=60.0, gt=0)
    # One check's address space (RLIMIT_AS), in bytes.
    upload_check_memory_bytes: int = Field(default=2 * 1024**3, ge=512 * 1024**2)
    # Pickle opcodes one upload's pickles may hold in all (a state dict costs ~30 per tensor).
    upload_max_pickle_opcodes: int = Field(default=2_000_000, ge=1000)
    # An archive whose members list more than this many times its size (once past 1 MiB) is a bomb.
    upload_max_expansion_ratio: float = Field(default=100.0, gt=1)
    # A safetensors header's bytes (the format itself allows 100 MB) and tensors.
    upload_max_safetensors_header_bytes: int = Field(default=100_000_000, ge=1024, le=100_000_000)
    upload_max_safetensors_tensors: int = Field(default=100_000, ge=1)
    # "auto" picks CUDA when present; "cpu", "cuda", "cuda:1" pin it.
    device: str = "auto"
    # CPU threads torch may use in a worker process; unset keeps torch's default (one per core).
    # Set it where the worker shares its cores: spinning threads slow everyone down.
    torch_threads: int | None = Field(default=None, ge=1)
    # Celery queue the API sends jobs to and workers consume.
    queue_name: str = "distill"
    # How long a worker's claim on a job lasts without a heartbeat.
    lease_seconds: int = Field(default=60, gt=0)
    # The shared queue (app/queue/): a job whose worker is lost is retried from its last
    # checkpoint until it has been started this many times, then fails with worker_lost.
    max_attempts: int = Field(default=3, ge=1)
    # A job handed to the broker but not taken by a worker within this long is handed out again
    # (the broker lost the message: Redis restarted or flushed). The lease refuses duplicates.
    dispatch_timeout_seconds: float = Field(default=30.0, gt=0)
    # How often each API process runs a scheduling pass (besides the passes on submit, on a job's
    # end and on a worker's arrival), to notice lost workers and lost messages.
    scheduler_interval_seconds: float = Field(default=2.0, gt=0)
    # Fair share: GPU time counts half after this long; a started job is charged this many
    # GPU-seconds ahead of its real use, so a team's next job waits behind others' first ones.
    fair_share_half_life_seconds: float = Field(default=2 * 3600.0, gt=0)
    fair_share_job_seconds: float = Field(default=300.0, gt=0)
    # The most devices (GPUs, or CPU worker processes) any worker host of this fleet has, when
    # the operator knows it: a job asking for more is refused at submit (422). Unset: the fleet
    # may grow, so such a job waits, with a warning event naming the shortfall.
    fleet_devices_per_host: int | None = Field(default=None, ge=1)
    # A worker without a heartbeat for this long is offline and gives no slot.
    worker_offline_seconds: float = Field(default=30.0, gt=0)
    # Each job trains in a process of its own (worker/sandbox/). On a CPU device its address
    # space is bounded to this many bytes (unset: three quarters of the machine's memory); a job
    # over it fails with out_of_memory. Not applied to CUDA jobs: see docs/operations.md.
    job_memory_bytes: int | None = Field(default=None, gt=0)
    # Wall-clock limit of one job's training process; past it the job fails with
    # time_limit_exceeded. A day by default.
    job_timeout_seconds: float | None = Field(default=24 * 3600, gt=0)
    # The training process's sandbox (worker/sandbox/confine.py, bubblewrap): "auto" uses it
    # where the host can build it, "bwrap" runs no job without it, "off" never uses it. Where a
    # job runs unsandboxed, a teacher that is a program (TorchScript, torch.export) is refused
    # unless the operator sets allow_unconfined_code_teachers, accepting that such a teacher can
    # read and change whatever the worker's user can.
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    allow_unconfined_code_teachers: bool = False
    # Logs (app/logs.py): "text" for people, "json" (one object per line) for a log pipeline.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # Webhooks (app/webhooks/): a delivery is tried up to this many times, waiting the backoff
    # after the first failure and twice as long after each further one (up to the cap); each
    # attempt gets the timeout. Each API process looks for due deliveries this often.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_seconds: float = Field(default=10.0, gt=0)
    webhook_max_backoff_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    # Each API process sends at most this many deliveries at once, and at most the per-team number
    # of one team's, so that one team's slow receivers hold up no other team's.
    webhook_concurrency: int = Field(default=8, ge=1, le=64)
    webhook_concurrency_per_team: int = Field(default=2, ge=1)
    # Webhooks go to public addresses only. These hosts and networks are allowed even though they
    # are private (an internal receiver), comma-separated: host names (exact), addresses, CIDRs,
    # e.g. "hooks.internal,10.20.0.0/16".
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    # Exposure: what the API shows to whom.
    # GET /v1/queue shows other teams' usage rows without their names (a team sees its own name,
    # the admin key every name); true shows every team's name to every team.
    queue_shows_team_names: bool = False
    # GET /metrics answers "Authorization: Bearer <this>" (or the admin key); unset, only the
    # admin key. The series name every team, so the endpoint is the operator's, never a team's.
    metrics_token: SecretStr | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, hosts: object) -> object:
        if isinstance(hosts, str):
            return tuple(h.strip() for h in hosts.split(",") if h.strip())
        return hosts

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _hosts_or_networks(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            try:
                ip_network(host, strict=False)
            except ValueError:
                if not _HOST_NAME.fullmatch(host):
                    raise ValueError(
                        f"DISTILL_WEBHOOK_ALLOWED_HOSTS: {host!r} is neither a host name, "
                        "an address nor a CIDR network"
                    ) from None
        return hosts

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if not url.startswith(("postgresql", "postgres://", "sqlite")):
            raise ValueError("DISTILL_DATABASE_URL must be a postgresql:// or sqlite:/// URL")
        return url

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Self:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("DISTILL_STORAGE_BACKEND=s3 needs DISTILL_S3_BUCKET")
        return self

    @property
    def database_files(self) -> tuple[Path, ...]:
        """The embedded database's file, which no training process may reach; none on a
        server."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix) or ":memory:" in self.database_url:
            return ()
        return (Path(self.database_url.removeprefix(prefix).split("?")[0]).resolve(),)

    @property
    def broker_folder(self) -> Path:
        """Where the filesystem broker keeps its messages (embedded mode only)."""
        return VAR_DIR / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
