"""Where a client without arguments finds its server and key."""

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from distillery import Client, ConfigurationError, config


def test_environment_then_config_file_then_what_distill_up_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DISTILL_ADMIN_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="distill login"):
        Client()

    # distill up's key, for a server on this machine
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "admin_key").write_text("dk_admin_local\n")
    assert config.resolve(None, None) == ("http://127.0.0.1:8000", "dk_admin_local")
    # ... on the port distill up records while it runs (the demo picks a free one)
    (tmp_path / "var" / "url").write_text("http://127.0.0.1:18765\n")
    assert config.resolve(None, None) == ("http://127.0.0.1:18765", "dk_admin_local")

    # the config file distill login writes: for its own server only
    path = config.save("https://distill.example.com/", "dk_saved")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.resolve(None, None) == ("https://distill.example.com", "dk_saved")
    with pytest.raises(ConfigurationError):
        config.resolve("https://other.example.com", None)

    # the environment over the file, and arguments over both
    monkeypatch.setenv("DISTILL_URL", "https://env.example.com")
    monkeypatch.setenv("DISTILL_API_KEY", "dk_env")
    assert config.resolve(None, None) == ("https://env.example.com", "dk_env")
    assert config.resolve("http://arg:9000/v1", "dk_arg") == ("http://arg:9000", "dk_arg")

    assert config.forget() and not path.exists() and not config.forget()


def test_the_client_loads_neither_the_service_nor_torch() -> None:
    code = (
        "import sys, distillery, distillery.cli, distillery.display\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(roots & {'torch', 'worker', 'app', 'fastapi', 'sqlalchemy', 'celery'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
