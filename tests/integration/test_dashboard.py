"""The dashboard in a real headless Chromium, against the API served over real HTTP (a
``distill serve`` process) and a real Celery worker.

The browser is Debian's chromium (``DISTILL_TEST_CHROMIUM``, default ``/usr/bin/chromium``);
Playwright never downloads one. A missing browser fails the test: ``scripts/install.sh``
installs it where it can.

Screenshots of the queue page and of a finished job's page are kept as test artifacts in
``test-artifacts/dashboard-queue.png`` and ``test-artifacts/dashboard-job.png`` at the
repository root, with ``test-artifacts/dashboard-login.png`` (a wrong key refused).
"""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from tests.conftest import ADMIN_KEY, ROOT, Client, make_team
from tests.integration import flow
from tests.integration.cluster import distill_serve
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("DISTILL_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts"
JOB_TIMEOUT_MS = 240_000
UI_TIMEOUT_MS = 30_000
MARKUP_NAME = '<img src=x onerror="document.title=1"> blocker'


@pytest.fixture(scope="module")
def server(service_env: dict[str, str]) -> Iterator[str]:
    """``distill serve`` on this session's database and queue; its base URL."""
    log_path = Path(service_env["DISTILL_STORAGE_DIR"]) / "dashboard-api.log"
    with distill_serve(service_env, log_path) as (base, _):
        yield base


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}: install it (apt-get install chromium, or run "
            "scripts/install.sh as root) or point DISTILL_TEST_CHROMIUM at one."
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def page_errors(page: Page) -> list[str]:
    """Uncaught errors and console errors (a CSP violation among them) the page reports from
    now on. Chromium also logs each 4xx answer to fetch(), which the tests cause on purpose."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def sign_in(page: Page, key: str, remember: bool = False) -> None:
    page.fill("#api-key", key)
    if remember:
        page.check("#remember")
    page.click("form.login button[type=submit]")


def test_a_wrong_key_is_refused_and_a_revoked_one_signs_out(
    server: str, http: httpx.Client, context: BrowserContext
) -> None:
    admin = Client(http, ADMIN_KEY, "team_default")
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server + "/")  # redirects to /ui
    assert page.url.startswith(server + "/ui")
    expect(page.locator("#api-key")).to_be_visible()

    wrong = http.get("/v1/queue", headers={"Authorization": "Bearer dk_not_a_key"})
    assert wrong.status_code == 401
    sign_in(page, "dk_not_a_key")
    expect(page.locator("#login-error")).to_have_text(wrong.json()["error"]["message"])
    expect(page.locator("header.top")).to_be_hidden()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard-login.png")

    team = make_team(admin)
    key = admin.post(f"/v1/teams/{team.team_id}/keys", json={"name": "to revoke"}).json()
    sign_in(page, key["key"])
    expect(page.locator("header.top")).to_be_visible()
    expect(page.locator("#queue h2").first).to_contain_text("Workers")

    assert admin.delete(f"/v1/keys/{key['id']}").status_code == 204
    revoked = http.get("/v1/queue", headers={"Authorization": f"Bearer {key['key']}"})
    assert revoked.status_code == 401
    # The queue page polls; its next read gets 401, and the page asks for a key again.
    expect(page.locator("#login-error")).to_have_text(revoked.json()["error"]["message"])
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    assert errors == []


@pytest.mark.usefixtures("worker_process")
def test_the_dashboard_follows_a_job_to_its_artifacts(
    server: str, http: httpx.Client, context: BrowserContext, digits: Digits, tmp_path: Path
) -> None:
    team = make_team(Client(http, ADMIN_KEY, "team_default"), max_running_jobs=2)
    try:
        _follow_a_job(server, team, context, digits, tmp_path)
    finally:
        for job in team.get("/v1/jobs", params={"limit": 100}).json()["data"]:
            if job["status"] in ("queued", "running"):
                team.post(f"/v1/jobs/{job['id']}/cancel")


def _follow_a_job(
    server: str, team: Client, context: BrowserContext, digits: Digits, tmp_path: Path
) -> None:
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]
    # A job that would run for minutes holds the only worker, so the job to watch waits in the
    # queue while the page opens: everything after that, the page sees live.
    blocker = flow.submit(team, flow.spec(
        teacher, train, validation, name=MARKUP_NAME,
        hyperparameters={"epochs": 1000, "batch_size": 4},
    ))  # fmt: skip
    flow.events_until(team, blocker["id"], "running")
    job = flow.submit(team, flow.spec(
        teacher, train, validation, name="digits-dashboard", baseline=True,
        hyperparameters={"epochs": 4},
    ))  # fmt: skip
    assert job["status"] == "queued"

    page = context.new_page()
    errors = page_errors(page)
    page.goto(server + "/ui")
    sign_in(page, team.key, remember=True)  # remembered: the second tab below shares it

    # The queue: the worker busy with the blocker, the job waiting first in line.
    queue = team.get("/v1/queue").json()
    worker = next(w for w in queue["workers"] if w["job_id"] == blocker["id"])
    worker_row = page.locator(f'#queue tr[data-worker-id="{worker["id"]}"]')
    expect(worker_row.locator(".badge")).to_have_text("busy")
    expect(worker_row).to_contain_text(blocker["id"])
    expect(page.locator(f'#queue tr[data-job-id="{job["id"]}"][data-position="0"]')).to_be_visible()
    running_row = page.locator(f'#queue tr[data-job-id="{blocker["id"]}"]')
    expect(running_row.locator("[role=progressbar]")).to_be_visible()  # at its first report
    expect(page.locator(f'#queue tr[data-team-id="{team.team_id}"]')).to_contain_text("1 / 2")
    # A name that looks like markup is shown as text, and runs nothing.
    expect(running_row).to_contain_text(MARKUP_NAME)
    expect(page.locator("#queue img")).to_have_count(0)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard-queue.png", full_page=True)

    _check_job_list(page, job["id"], blocker["id"])

    page.click(f'#jobs a[href="#/jobs/{job["id"]}"]')
    expect(page.locator("#job-status")).to_have_text("queued")
    expect(page.locator("#queue-position")).to_contain_text("Place in the queue: 0")

    # Cancel the blocker from its own page, in a second tab; the job then runs.
    other = context.new_page()
    other_errors = page_errors(other)
    other.goto(f"{server}/ui#/jobs/{blocker['id']}")
    expect(other.locator("#job-status")).to_have_text("running")
    expect(other.locator("h1")).to_have_text(MARKUP_NAME)
    other.click("#cancel-job")
    other.click("#confirm-cancel")
    expect(other.locator("#job-status")).to_have_text("cancelled")
    other.close()
    assert other_errors == []

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    # A function, not an expression: Playwright evals a bare expression in the page on every
    # poll, which the dashboard's CSP (no 'unsafe-eval') rightly refuses.
    page.wait_for_function("() => distillery.job.streamEnded")
    final = team.get(f"/v1/jobs/{job['id']}").json()
    _check_movement(page, final)
    _check_curves(page, team, job["id"])
    _check_results(page, final["metrics"])
    _check_downloads(page, team, job["id"], tmp_path)
    expect(page.locator('#job-events tr[data-type="status"]')).to_have_count(3)
    page.screenshot(path=SCREENSHOTS / "dashboard-job.png", full_page=True)
    assert errors == []


def _check_job_list(page: Page, job_id: str, blocker_id: str) -> None:
    rows = page.locator("#jobs tbody tr")
    page.click('header a[href="#/jobs"]')
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-job-id", job_id)  # newest first
    # One job a page: walk to the older one and back.
    page.goto(page.url.split("#")[0] + "#/jobs?limit=1")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", job_id)
    page.click("#page-older")
    expect(rows.first).to_have_attribute("data-job-id", blocker_id)
    expect(page.locator("#page-older")).to_be_disabled()
    page.click("#page-newer")
    expect(rows.first).to_have_attribute("data-job-id", job_id)
    # The status filter.
    page.select_option("#status-filter", "running")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", blocker_id)
    page.select_option("#status-filter", "queued")
    expect(rows.first).to_have_attribute("data-job-id", job_id)


def _check_movement(page: Page, final: dict[str, Any]) -> None:
    """What the page showed while it watched: statuses, and a bar that only moved forward."""
    seen = page.evaluate("distillery.job")
    assert seen["streamed"] == ["queued", "running", "succeeded"], seen
    assert seen["statuses"][0] == "queued" and seen["statuses"][-1] == "succeeded", seen
    fractions = seen["progress"]
    assert len(set(fractions)) > 1, fractions
    assert fractions == sorted(fractions), fractions
    assert fractions[-1] == final["progress"]["fraction"] == 1.0
    bar = page.locator("#job-progress [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "100.0")


def _check_curves(page: Page, team: Client, job_id: str) -> None:
    points: list[dict[str, Any]] = []
    params: dict[str, int] = {"limit": 100}
    while True:
        listed = team.get(f"/v1/jobs/{job_id}/metrics", params=params)
        assert listed.status_code == 200, listed.text
        points += listed.json()["data"]
        if not listed.json()["has_more"]:
            break
        params["after"] = points[-1]["step"]
    validation = [p for p in points if p.get("val_accuracy") is not None]
    assert len(validation) == 4  # one per epoch
    # Points between epochs come once a second, so how many there are depends on the machine's
    # speed: the loss chart is checked against however many there are.
    page.wait_for_function(
        "([loss, acc]) => distillery.charts.loss?.data[0].length === loss"
        " && distillery.charts.accuracy?.data[0].length === acc",
        arg=[len(points), len(validation)],
    )
    drawn = page.evaluate("distillery.charts.accuracy.data")
    assert drawn[0] == [p["step"] for p in validation]
    assert drawn[1] == [p["val_accuracy"] for p in validation]
    expect(page.locator("#chart-loss canvas")).to_have_count(1)
    expect(page.locator("#chart-accuracy canvas")).to_have_count(1)


def _check_results(page: Page, metrics: dict[str, Any]) -> None:
    for key in (
        "teacher_accuracy", "student_accuracy", "baseline_accuracy", "agreement",
        "kl_divergence", "teacher_params", "student_params", "student_size_bytes",
        "teacher_latency_ms", "student_latency_ms", "speedup", "compression_ratio",
    ):  # fmt: skip
        cell = page.locator(f'#results td[data-metric="{key}"]')
        assert float(cell.get_attribute("data-value") or "nan") == metrics[key], key
    for key in ("teacher_params", "student_params"):
        expect(page.locator(f'#results td[data-metric="{key}"]')).to_have_text(f"{metrics[key]:,}")
    for key in ("teacher_accuracy", "student_accuracy", "baseline_accuracy", "agreement"):
        shown = page.locator(f'#results td[data-metric="{key}"]').inner_text()
        assert shown.endswith("%") and abs(float(shown[:-1]) - 100 * metrics[key]) <= 0.005


def _check_downloads(page: Page, team: Client, job_id: str, folder: Path) -> None:
    artifacts = team.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    names = {a["name"] for a in artifacts}
    assert {"student.pt", "student.safetensors", "student.json", "metrics.json"} <= names
    for artifact in artifacts:
        with page.expect_download() as download:
            page.click(f'button[data-download="{artifact["name"]}"]')
        assert download.value.suggested_filename == artifact["name"]
        saved = folder / artifact["name"]
        download.value.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact["sha256"]
        assert saved.stat().st_size == artifact["bytes"]
