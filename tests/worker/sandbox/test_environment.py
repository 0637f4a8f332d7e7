"""What a training process may see of the worker's environment."""

from pathlib import Path

from worker.sandbox.environment import CODE_ROOT, child_environment

WORKER = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "CUDA_VISIBLE_DEVICES": "2",
    "OMP_NUM_THREADS": "4",
    "PYTHONPATH": "/opt/extra",
    "HOME": "/home/distill",
    "DISTILL_DATABASE_URL": "postgresql://distill:hunter2@db/distill",
    "DISTILL_BROKER_URL": "redis://:pw@redis:6379/0",
    "DISTILL_ADMIN_KEY": "dk_admin_secret",
    "DISTILL_DEVICE": "cuda",
    "AWS_ACCESS_KEY_ID": "AKIA...",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "HF_TOKEN": "hf_secret",
    "LD_PRELOAD": "/tmp/evil.so",
}


def test_only_the_allow_list_passes_and_home_is_the_jobs_scratch(tmp_path: Path) -> None:
    env = child_environment(WORKER, tmp_path)

    assert {k: env[k] for k in ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES")} == {
        k: WORKER[k] for k in ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES")
    }
    assert env["OMP_NUM_THREADS"] == "4"
    dropped = {k for k in WORKER if k.startswith(("DISTILL_", "AWS_", "HF_TOKEN", "LD_PRELOAD"))}
    assert not dropped & env.keys()
    assert env["HOME"] == str(tmp_path / "home") and env["TMPDIR"] == str(tmp_path / "tmp")
    assert (tmp_path / "home").is_dir() and (tmp_path / "tmp").is_dir()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    # this checkout's code first, so the child runs what the worker runs
    assert env["PYTHONPATH"].split(":") == [str(CODE_ROOT), "/opt/extra"]
