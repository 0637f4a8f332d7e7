"""docker-compose.yml, docker-compose.worker.yml and the Dockerfile, read as Compose would read
them (no Docker engine on the test machines): the structure a team install relies on."""

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML: a dependency of the dev tools, not of the service

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = re.compile(r"\$\{(\w+):\?")  # ${VAR:?message}: Compose refuses to start without it


def _compose(name: str) -> dict:
    # PyYAML's safe loader resolves anchors and "<<" merge keys as Compose does.
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _compose("docker-compose.yml")


def _env(service: dict) -> dict:
    return service.get("environment") or {}


def _gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


def test_every_part_of_a_team_install_is_there(compose: dict) -> None:
    assert {"postgres", "redis", "migrate", "api", "worker", "flower"} <= compose["services"].keys()


def test_everything_on_the_database_waits_for_the_migration(compose: dict) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    users = [n for n, s in services.items() if "DISTILL_DATABASE_URL" in _env(s) and n != "migrate"]
    assert set(users) >= {"api", "worker"}
    for name in users:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    # and they all reach the same database, broker and store
    urls = {_env(services[n])["DISTILL_DATABASE_URL"] for n in [*users, "migrate"]}
    assert len(urls) == 1 and "@postgres:5432/" in urls.pop()
    assert {_env(services[n])["DISTILL_BROKER_URL"] for n in users} == {"redis://redis:6379/0"}
    assert all("storage:/data" in services[n]["volumes"] for n in [*users, "migrate"])


def test_the_worker_reserves_the_gpus_and_supervises_one_process_per_gpu(compose: dict) -> None:
    worker = compose["services"]["worker"]
    (device,) = _gpu_devices(worker)
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == "all" and worker["command"] == ["distill", "worker", "--gpus", "all"]
    assert "utility" in _env(worker)["NVIDIA_DRIVER_CAPABILITIES"]  # NVML, nvidia-smi
    assert "DISTILL_ADMIN_KEY" not in _env(worker)  # a worker has no use for it


def test_healthchecks_and_restart_policies(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "api", "flower"):
        assert services[name]["healthcheck"]["test"], name
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])
    for name, service in services.items():
        expected = "no" if name == "migrate" else "unless-stopped"
        assert service["restart"] == expected, name


def test_third_party_images_are_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if image.startswith("distillery:"):
            assert "build" in service, name
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"


def test_flower_watches_the_broker_behind_basic_auth(compose: dict) -> None:
    flower = compose["services"]["flower"]
    assert flower["image"].startswith("mher/flower:")
    assert _env(flower)["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert REQUIRED.search(_env(flower)["FLOWER_BASIC_AUTH"])


def test_every_required_setting_is_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#?\s*(\w+)=", example, flags=re.M))
    required = set(REQUIRED.findall((ROOT / "docker-compose.yml").read_text()))
    assert required == {"DISTILL_ADMIN_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    assert required <= names


def test_declared_volumes_are_the_ones_used(compose: dict) -> None:
    used = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("/", ".", "$"))
    }
    assert used == set(compose["volumes"])


def test_a_worker_only_host_needs_the_broker_the_database_and_the_store() -> None:
    services = _compose("docker-compose.worker.yml")["services"]
    assert set(services) == {"worker"}
    worker = services["worker"]
    assert worker["command"][:2] == ["distill", "worker"]
    assert _gpu_devices(worker)[0]["driver"] == "nvidia"
    assert worker["env_file"] == ["worker.env"] and worker["restart"] == "unless-stopped"
    assert any(v.endswith(":/data") for v in worker["volumes"])
    example = (ROOT / "worker.env.example").read_text()
    assert "DISTILL_DATABASE_URL=" in example and "DISTILL_BROKER_URL=" in example
    assert "DISTILL_STORAGE_BACKEND=s3" in example


def _built_services() -> dict[str, dict]:
    """Every service that runs our image, in both compose files (third-party images aside)."""
    return {
        f"{name} ({file})": service
        for file in ("docker-compose.yml", "docker-compose.worker.yml")
        for name, service in _compose(file)["services"].items()
        if "build" in service or service.get("image", "").startswith("distillery:")
    }


def _is_root(user: str) -> bool:
    name, _, group = str(user).partition(":")
    return name in ("", "0", "root") or group in ("0", "root")


def test_every_service_we_build_runs_as_the_image_user_not_root() -> None:
    services = _built_services()
    assert len(services) == 4  # migrate, api, worker; the worker-only host's worker
    for name, service in services.items():
        assert "user" in service and not _is_root(service["user"]), name
    assert {s["user"] for s in services.values()} == {"1000:1000"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1] == "1000:1000"  # also for a plain `docker run`
    assert re.search(r"useradd .*--uid 1000 --gid 1000 distill", dockerfile)
    assert "chown distill:distill /data" in dockerfile


def test_workers_may_make_the_user_namespaces_of_the_sandbox() -> None:
    """bwrap, as a non-root user, needs unprivileged user namespaces: Docker's default seccomp
    profile and Ubuntu's AppArmor refuse them. Only the workers get them."""
    for name, service in _built_services().items():
        options = set(service.get("security_opt", []))
        if service["command"][:2] == ["distill", "worker"]:
            assert {"seccomp=unconfined", "apparmor=unconfined"} <= options, name
        else:
            assert not options, name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"apt-get install .*\bbubblewrap\b", dockerfile)


def test_the_image_has_what_the_services_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # the API and the worker; exports need the onnx extra
    assert 'pip install ".[server,worker,onnx]"' in dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert {"app", "worker", "distillery", "jobspec"} <= set(packages)
    for copied in ("alembic.ini", *packages):  # every package the wheel has; alembic: migrate
        assert re.search(rf"^COPY .*\b{copied}\b", dockerfile, flags=re.M), copied
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and "worker.env" in ignored


def test_the_compose_snippets_in_deploy_md_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs/deploy.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    parsed = [yaml.safe_load(textwrap.dedent(b)) for b in blocks]
    per_gpu = next(p for p in parsed if "worker-0" in p["services"])
    for name in ("worker-0", "worker-1"):
        worker = per_gpu["services"][name]
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        (device,) = _gpu_devices(worker)
        assert device["device_ids"] == [name[-1]] and worker["command"][-1].startswith(
            "distill-gpu"
        )
        assert worker["user"] == "1000:1000"
        assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(worker["security_opt"])
