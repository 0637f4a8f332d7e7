"""``pip install distillery`` alone, in a fresh virtual environment: the client and the ``distill``
client commands, none of the service's packages, and ``distill serve`` / ``worker`` / ``up``
naming the extra to install instead of a traceback. pip reads the machine's configured index."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "celery", "boto3", "torch", "numpy")
LEAKED = """
import importlib.util, sys
import distillery, distillery.cli, distillery.display
from distillery import Client
from app import cli  # the `distill` entry point
installed = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"worker", *sys.argv[1:]})
print("installed", installed, "loaded", loaded, "app.launch" in sys.modules)
"""


@pytest.fixture(scope="module")
def client_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install distillery`` (no extras) from a copy of the project's sources
    (the build would otherwise write into the working tree)."""
    where = tmp_path_factory.mktemp("client-only")
    source = where / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for package in ("app", "worker", "distillery", "jobspec", "file_rules", "migrations"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return venv


def run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "PYTHON"))}
    return subprocess.run(
        argv, cwd=venv, env={**env, "DISTILL_URL": "http://127.0.0.1:9", "DISTILL_API_KEY": "dk_x"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_the_client_installs_without_the_service_packages(client_only: Path) -> None:
    result = run(client_only, str(client_only / "bin" / "python"), "-c", LEAKED, *SERVICE_PACKAGES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "installed [] loaded [] False"


@pytest.mark.slow
def test_the_client_commands_run_and_the_service_commands_name_their_extra(
    client_only: Path,
) -> None:
    distill = str(client_only / "bin" / "distill")
    unreachable = run(client_only, distill, "jobs", "list")
    assert unreachable.returncode == 1
    assert "Cannot reach the server at http://127.0.0.1:9" in unreachable.stderr

    for command, extra in (("serve", "server"), ("worker", "worker"), ("up", "worker")):
        result = run(client_only, distill, command)
        assert result.returncode == 2, (command, result.stderr)
        assert f"pip install 'distillery[{extra}]'" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
