"""Where the client finds its server and key, in this order:

1. the arguments given to ``Client(base_url, api_key)``;
2. ``DISTILL_URL`` and ``DISTILL_API_KEY`` in the environment;
3. the config file that ``distill login`` writes (``$XDG_CONFIG_HOME/distillery/config.toml``,
   else ``~/.config/distillery/config.toml``; ``DISTILL_CONFIG`` names another), whose key is
   used only for the server it was saved for;
4. for a server on this machine (``distill up``, run from the current folder): the URL it
   records in ``./var/url`` while it runs, else ``http://127.0.0.1:8000``; the key
   ``DISTILL_ADMIN_KEY``, then the admin key ``distill up`` keeps in ``./var/admin_key``.
"""

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from distillery.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8000"
# As `distill up` (app/launch.py) keeps them, relative to the current folder.
LOCAL_ADMIN_KEY_FILE = Path("var") / "admin_key"
LOCAL_URL_FILE = Path("var") / "url"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Saved:
    url: str | None = None
    api_key: str | None = None


def config_path() -> Path:
    if explicit := os.environ.get("DISTILL_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "distillery" / "config.toml"


def load_saved(path: Path | None = None) -> Saved:
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Saved()
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigurationError(f"Cannot read {path}: {e}. Fix it or run `distill login`.") from e
    return Saved(url=data.get("url"), api_key=data.get("api_key"))


def save(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write the config file, readable by its owner only (the key is a secret)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    # A JSON string (without \u escapes of non-ASCII) is a valid TOML basic string.
    fields = {"url": url, "api_key": api_key}
    text = "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in fields.items())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Written by `distill login`. Holds a secret: keep it mode 0600.\n" + text)
    os.chmod(tmp, 0o600)  # in case the file existed with wider bits
    os.replace(tmp, path)
    return path


def forget(path: Path | None = None) -> bool:
    """Remove the config file; False when there was none."""
    try:
        (path or config_path()).unlink()
    except FileNotFoundError:
        return False
    return True


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """(base URL, API key) from the arguments, the environment, the config file, ./var."""
    url, key = (
        base_url or os.environ.get("DISTILL_URL"),
        api_key or os.environ.get("DISTILL_API_KEY"),
    )
    saved = load_saved() if not (url and key) else Saved()
    url = normalise_url(url or saved.url or _read(LOCAL_URL_FILE) or DEFAULT_URL)
    if not key and saved.api_key and saved.url and normalise_url(saved.url) == url:
        key = saved.api_key
    if not key and is_local(url):
        key = os.environ.get("DISTILL_ADMIN_KEY") or _read(LOCAL_ADMIN_KEY_FILE)
    if not key:
        raise ConfigurationError(
            f"No API key for {url}: pass api_key=, set DISTILL_API_KEY, or run `distill login`."
        )
    return url, key


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
