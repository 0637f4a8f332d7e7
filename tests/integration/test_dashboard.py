"""The dashboard in a real headless Chromium, against the API served over real HTTP (a
``distill serve`` process) and a real Celery worker.

The browser is Debian's chromium (``DISTILL_TEST_CHROMIUM``, default ``/usr/bin/chromium``);
Playwright never downloads one. A missing browser fails the test: ``scripts/install.sh``
installs it where it can.

Screenshots of the queue page and of a finished job's page are kept as test artifacts in
``test-artifacts/dashboard-queue.png`` and ``test-artifacts/dashboard-job.png`` at the
repository root, with ``test-artifacts/dashboard-login.png`` (a wrong key refused) and
``test-artifacts/dashboard-new-job.png`` (the new-job form showing the API's error).
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
    # Where the keys are, as app/cli.py and the API make them.
    where = page.locator("#where-keys")
    for words in ("DISTILL_ADMIN_KEY", "distill up", "var/admin_key", "POST /v1/teams"):
        expect(where).to_contain_text(words)

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

    # The queue: the worker busy with the blocker, the job waiting first in line. (The worker
    # names its job just after the job's running event: the page's next read shows it.)
    worker_row = page.locator("#queue tr[data-worker-id]", has_text=blocker["id"])
    expect(worker_row.locator(".badge")).to_have_text("busy")
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
    events = _all_events(team, job["id"])
    _check_curves(page, team, job["id"], events)
    _check_results(page, final["metrics"])
    _check_downloads(page, team, job["id"], tmp_path)
    expect(page.locator('#job-events tr[data-type="status"]')).to_have_count(3)
    _check_epoch_updates(page, events)
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


def _all_events(team: Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        listed = team.get(f"/v1/jobs/{job_id}/events", params=params).json()
        events += listed["data"]
        if not listed["has_more"]:
            return events
        params["after"] = events[-1]["id"]


def _epoch_updates(events: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    """The job's "<Phase> epoch k/N done." log events, oldest first."""
    starts = f"{phase.capitalize()} epoch "
    return [
        e
        for e in events
        if e["type"] == "log"
        and e["message"].startswith(starts)
        and e["message"].endswith(" done.")
    ]


def _check_curves(page: Page, team: Client, job_id: str, events: list[dict[str, Any]]) -> None:
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
    labels = page.evaluate("distillery.charts.accuracy.series.map((s) => s.label)")
    assert drawn[0] == [p["step"] for p in validation]
    assert drawn[labels.index("validation accuracy")] == [p["val_accuracy"] for p in validation]
    # The baseline's curve, from its epoch events' data, beside the student's at the same
    # epochs (no sweep here: the student's epoch k ends at step k * steps per epoch).
    baseline = _epoch_updates(events, "baseline")
    assert len(baseline) == 4
    assert drawn[labels.index("baseline accuracy (labels only)")] == [
        e["data"]["val_accuracy"] for e in baseline
    ]
    assert drawn[labels.index("baseline agreement with the teacher")] == [
        e["data"]["val_agreement"] for e in baseline
    ]
    # Losses are positive: a log scale, so the first points do not flatten the rest.
    assert all(p["train_loss"] > 0 for p in points if p.get("train_loss") is not None)
    assert page.evaluate("distillery.charts.loss.scales.y.distr") == 3  # uPlot's log
    expect(page.locator("#chart-loss canvas")).to_have_count(1)
    expect(page.locator("#chart-accuracy canvas")).to_have_count(1)


def _check_epoch_updates(page: Page, events: list[dict[str, Any]]) -> None:
    """Each phase's per-epoch log events: one row, its latest, until asked for the rest."""
    log = page.locator("#job-events")
    for phase in ("student", "baseline"):
        updates = _epoch_updates(events, phase)
        assert len(updates) == 4
        row = log.locator(f'tr[data-epoch-updates="{phase}"]')
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-event-id", updates[-1]["id"])
        expect(row).to_contain_text(updates[-1]["message"])
        unfolded = log.locator(f'tr[data-in-epoch-updates="{phase}"]')
        expect(unfolded).to_have_count(0)
        button = row.locator("button.fold")
        expect(button).to_have_text("4 epoch updates")
        button.click()
        expect(button).to_have_attribute("aria-expanded", "true")
        expect(unfolded).to_have_count(3)
        ids = [unfolded.nth(i).get_attribute("data-event-id") for i in range(3)]
        assert ids == [e["id"] for e in reversed(updates[:-1])]  # newest first, as the log
        button.click()
        expect(unfolded).to_have_count(0)


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


@pytest.mark.usefixtures("worker_process")
def test_a_job_uploaded_and_submitted_from_the_page_runs(
    server: str, http: httpx.Client, context: BrowserContext, digits: Digits
) -> None:
    team = make_team(Client(http, ADMIN_KEY, "team_default"))
    page = context.new_page()
    errors = page_errors(page)
    page.goto(server + "/ui")
    sign_in(page, team.key)
    page.click('header a[href="#/new"]')
    form = page.locator("#submit-form")
    error = page.locator("#submit-error")
    submit = form.locator("button[type=submit]")

    # No teacher chosen: said at the teacher's field, before anything is sent.
    submit.click()
    expect(error).to_have_attribute("data-param", "teacher.file_id")
    expect(form.locator('.field[data-param="teacher.file_id"]')).to_have_class("field invalid")

    # A data set given as the teacher: the upload's own refusal, at the teacher's field.
    with digits.train.open("rb") as f:
        refused = team.post("/v1/files", files={"file": ("x", f)}, data={"purpose": "teacher"})
    assert refused.status_code == 422, refused.text
    page.set_input_files("#file-teacher", digits.train)
    page.set_input_files("#file-train", digits.train)
    submit.click()
    expect(error).to_contain_text(refused.json()["error"]["message"])
    expect(error).to_have_attribute("data-param", "teacher.file_id")
    expect(error).to_have_attribute("data-code", refused.json()["error"]["code"])

    # The real files, and a temperature the API refuses: its message and param, at that field.
    page.set_input_files("#file-teacher", digits.teacher)
    page.set_input_files("#file-validation", digits.validation)
    page.fill("#job-name", "from the form")
    page.select_option("#student-arch", "mlp")
    page.fill("#hidden-sizes", "64, 32")
    page.fill("#hp-epochs", "2")
    page.fill("#hp-temperature", "0")
    page.fill("#more-spec", '{"hyperparameters": {"seed": 3}}')
    submit.click()
    expect(error).to_have_attribute("data-param", "hyperparameters.temperature")
    expect(error).to_have_attribute("data-code", "invalid_request")
    expect(error).to_contain_text("greater than 0")
    expect(page.locator("#hp-temperature")).to_have_attribute("aria-invalid", "true")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard-new-job.png", full_page=True)
    # Nothing was queued, and the three files are up once each.
    assert team.get("/v1/jobs").json()["data"] == []

    page.fill("#hp-temperature", "2")
    submit.click()
    page.wait_for_url(f"{server}/ui#/jobs/job_*")
    job_id = page.url.split("#/jobs/")[1]
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)

    # What the form sent: the files uploaded once each (the refused one never stored), and
    # the spec as filled in.
    uploads = {f["filename"]: f for f in team.get("/v1/files").json()["data"]}
    assert sorted(uploads) == sorted(
        p.name for p in (digits.teacher, digits.train, digits.validation)
    )
    assert uploads[digits.teacher.name]["purpose"] == "teacher"
    spec = team.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert spec["name"] == "from the form"
    assert spec["teacher"]["file_id"] == uploads[digits.teacher.name]["id"]
    assert spec["data"]["train_file_id"] == uploads[digits.train.name]["id"]
    assert spec["data"]["validation_file_id"] == uploads[digits.validation.name]["id"]
    assert spec["student"]["arch"] == "mlp" and spec["student"]["hidden_sizes"] == [64, 32]
    hyperparameters = spec["hyperparameters"]
    assert (hyperparameters["epochs"], hyperparameters["temperature"]) == (2, 2.0)
    assert hyperparameters["seed"] == 3
    assert spec["baseline"] is False
    assert errors == []
