"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, never a
browser of Playwright's own) against a real server process (uvicorn serving conveyor.web.create_app)
and a real `conveyor worker` process on one SQLite store.

It proves what a person would check: signing in with a token; a job enqueued by another process
appearing on the jobs page live (no reload); its detail page with its progress moving as the worker
runs it; cancelling one; retrying a failed one; a bulk cancel whose dry run shows the count first;
pausing a queue; and that a user without view-others sees only their own jobs. Screenshots of each
page are saved under the test's tmp directory (and, with CONVEYOR_DOCS_SCREENSHOTS=1, into docs/img
for docs/web.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import App, Status

from .conftest import serve, stop_process

playwright_api = pytest.importorskip("playwright.sync_api")
playwright_api.expect.set_options(timeout=15_000)  # a shared 2-core machine can be slow; a pass is usually instant

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

pytestmark = pytest.mark.slow

#: The app the server and the worker load: a task that reports progress slowly, one that fails, one
#: that returns at once; a schedule and a service, so that those pages have something to show.
APP_SOURCE = textwrap.dedent(
    '''
    import os
    import time

    from conveyor import App, Message, current_job

    app = App(os.environ["CONVEYOR_URL"], lease=1.0)


    @app.task(name="reports.crunch")
    def crunch(rows, pause=0.3, steps=20):
        """Crunch ``rows`` rows in ``steps`` steps, reporting progress after each."""
        job = current_job()
        for step in range(1, steps + 1):
            time.sleep(pause)
            job.progress(100 * step / steps, f"crunched {rows * step // steps} of {rows} rows")
        return {"rows": rows}


    @app.task(name="billing.charge", max_retries=0)
    def charge(invoice):
        """Always fails: the card is declined."""
        raise RuntimeError(f"card declined for invoice {invoice}")


    @app.task(name="mail.send")
    def send(to, subject="hello"):
        return {"sent": to}


    app.pipeline(crunch.s(1200, pause=0.1, steps=3), Message("approve"),
                 send.s("boss@example.com", subject="report ready"), name="monthly-report")


    @app.periodic(every=300, name="nightly-cleanup")
    def cleanup():
        return 0


    def make_web():
        """uvicorn's factory (tests/web/conftest.py's serve): the API and the dashboard."""
        from conveyor.web import create_app

        return create_app(app)


    @app.service(queue="default")
    def price_feed(ctx):
        """A long-running service: polls a price feed until asked to stop."""
        while not ctx.wait(0.5):
            pass
    '''
)


@dataclass
class Site:
    """The running system: the server's URL, an App on its store, the users' tokens by kind (the
    API tests' users: owner = alice, other = bob, admin = adam with modify-others, system = root)."""

    url: str
    app: App
    tokens: dict[str, str]
    users: dict[str, str]
    shots: Path  #: screenshots of this run (a test artifact)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The API tests' real server (``serve``: uvicorn in its own process, users and tokens made)
    serving this module's app, and a `conveyor worker` process running its jobs on the queue
    'default', on one SQLite store."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "dashapp.py").write_text(APP_SOURCE)
    url = f"sqlite:///{root / 'store.db'}"
    shots = root / "screenshots"
    shots.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    env.update(CONVEYOR_URL=url, PYTHONUNBUFFERED="1")
    with serve(url, root, factory="dashapp:make_web", app_dir=root, env={"CONVEYOR_URL": url},
               make_app=lambda store: App(store, lease=1.0)) as server:  # fmt: skip
        with open(root / "worker.log", "wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "worker", "dashapp", "-q", "default", "-c", "4", "--poll", "0.2",
                 "--grace", "1"],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield Site(url=server.url, app=server.app, tokens=server.tokens, users=server.users, shots=shots)
        finally:
            stop_process(worker, within=15)
            if os.environ.get("CONVEYOR_DOCS_SCREENSHOTS") == "1":
                DOCS_IMG.mkdir(parents=True, exist_ok=True)
                for picture in shots.glob("dashboard-*.png"):
                    shutil.copy(picture, DOCS_IMG / picture.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, started once for the module. Missing, it skips these tests on a
    developer's machine and fails them on CI (CI=true), where the dashboard must be tested."""
    if not Path(CHROMIUM).exists():
        message = f"DASHBOARD NOT TESTED: {CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page_for(site: Site, browser: Any) -> Iterator[Any]:
    """``page_for(user, mobile=False)``: a new tab signed in as ``user`` through the login form."""
    contexts: list[Any] = []
    errors: list[str] = []  #: uncaught exceptions of any page: the test fails with them

    def open_page(user: str, *, mobile: bool = False) -> Any:
        viewport = {"width": 390, "height": 844} if mobile else {"width": 1366, "height": 900}
        context = browser.new_context(viewport=viewport, device_scale_factor=2 if mobile else 1,
                                      is_mobile=mobile, has_touch=mobile, color_scheme="light")  # fmt: skip
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(site.url + "/")
        page.get_by_label("API token").fill(site.tokens[user])
        page.get_by_role("button", name="Sign in").click()
        playwright_api.expect(page.locator("#who")).to_contain_text(site.users[user])
        playwright_api.expect(page.locator("#live-state")).to_have_text("live")
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"the page raised: {errors}"


def wait_job(app: App, job_id: str, *statuses: Status, timeout: float = 20.0) -> Any:
    """The job once it is in one of ``statuses`` (read from the store), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        job = app.job(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job.status}, not {statuses}"
        time.sleep(0.05)


def shot(page: Any, site: Site, name: str, **options: Any) -> None:
    """A screenshot of the page, saved as ``dashboard-NAME.png`` among the run's artifacts."""
    page.screenshot(path=str(site.shots / f"dashboard-{name}.png"), **options)


def test_signing_in_by_keyboard_a_bad_token_refused_and_the_shell_holds_no_data(site: Site, browser: Any) -> None:
    import httpx

    shell = httpx.get(site.url + "/")
    assert shell.status_code == 200 and "API token" in shell.text
    assert "script-src 'self'" in shell.headers["content-security-policy"]
    assert httpx.get(site.url + "/static/app.js").status_code == 200
    assert httpx.get(site.url + "/api/me").status_code == 401
    context = browser.new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    assert page.evaluate("document.activeElement.id") == "token"  # the form has the focus
    page.keyboard.type("cv_000000000000_not-a-real-token-at-all")
    page.keyboard.press("Enter")
    playwright_api.expect(page.locator("#login-error")).to_contain_text("not accepted")
    assert page.locator("#top").is_hidden()
    assert page.evaluate("document.activeElement.id") == "token"
    page.locator("#token").fill(site.tokens["owner"])
    page.keyboard.press("Enter")
    playwright_api.expect(page.locator("#who")).to_have_text("alice")
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") == site.tokens["owner"]
    assert context.cookies() == []  # no cookie: the token travels in a header only
    page.get_by_role("link", name="Queues").focus()
    page.keyboard.press("Enter")
    playwright_api.expect(page.get_by_role("heading", name="Queues")).to_be_focused()  # focus follows the page
    page.reload()  # the tab keeps its session
    playwright_api.expect(page.locator("#who")).to_have_text("alice")
    page.get_by_role("button", name="Log out").click()
    playwright_api.expect(page.locator("#token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") is None
    context.close()


def test_a_job_appears_live_its_progress_moves_and_it_can_be_cancelled(site: Site, page_for: Any) -> None:
    page = page_for("owner")
    page.goto(site.url + "/#/jobs")
    playwright_api.expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.evaluate("window.__same_page = true")
    # enqueued by another process (this test's, through the store): the page is told by the stream
    job = site.app.enqueue("reports.crunch", [48_000], owner="alice")
    row = page.locator(f"tr[data-job-id='{job.id}']")
    playwright_api.expect(row).to_be_visible()
    assert page.evaluate("window.__same_page") is True  # no reload: the row came live
    wait_job(site.app, job.id, Status.RUNNING)
    shot(page, site, "jobs")
    row.get_by_role("link").click()
    playwright_api.expect(page.get_by_role("heading", name=f"Job {job.id}")).to_be_visible()
    bar = page.get_by_role("progressbar").first
    playwright_api.expect(bar).not_to_have_attribute("aria-valuenow", "0", timeout=10_000)
    first = float(bar.get_attribute("aria-valuenow") or 0)
    deadline = time.monotonic() + 10
    while float(bar.get_attribute("aria-valuenow") or 0) <= first:  # it moves, live, as the worker reports
        assert time.monotonic() < deadline, f"the progress stayed at {first}%"
        page.wait_for_timeout(100)
    assert page.evaluate("window.__same_page") is True
    playwright_api.expect(page.locator(".progress-message")).to_contain_text("rows")
    playwright_api.expect(page.locator("ol.timeline")).to_contain_text("progress")
    shot(page, site, "job-progress")
    page.get_by_role("button", name="Cancel").click()
    playwright_api.expect(page.locator(".page-head .badge")).to_have_text("cancelled")
    assert site.app.job(job.id).status is Status.CANCELLED
    playwright_api.expect(page.locator("ol.timeline")).to_contain_text("cancelled")


def test_a_failed_job_shows_its_traceback_and_can_be_retried(site: Site, page_for: Any) -> None:
    job = site.app.enqueue("billing.charge", ["INV-1042"], owner="alice", notify=True)
    wait_job(site.app, job.id, Status.FAILED)
    page = page_for("owner")
    page.goto(f"{site.url}/#/jobs/{job.id}")
    playwright_api.expect(page.locator(".err-head")).to_have_text("RuntimeError: card declined for invoice INV-1042")
    playwright_api.expect(page.locator("pre.traceback")).to_contain_text("Traceback")
    playwright_api.expect(page.locator("#unread")).to_have_text("1")
    shot(page, site, "job-failed")
    page.get_by_role("button", name="Retry", exact=True).click()
    playwright_api.expect(page.locator("ol.timeline")).to_contain_text("requeued")
    deadline = time.monotonic() + 20
    while site.app.job(job.id).attempts < 2:  # the worker ran it again (and it failed again)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    playwright_api.expect(page.locator(".page-head .badge")).to_have_text("failed")
    playwright_api.expect(page.locator("dl.facts")).to_contain_text("2 (retries")
    page.get_by_role("link", name="Notifications").click()
    playwright_api.expect(page.locator("tbody tr").first).to_contain_text("card declined")


def test_bulk_cancel_of_a_selection_and_of_the_filter_shows_the_dry_run_count_first(site: Site, page_for: Any) -> None:
    ids = [site.app.enqueue("mail.send", [f"user{i}@example.com"], queue="digests", owner="alice").id for i in range(4)]
    page = page_for("owner")
    page.goto(f"{site.url}/#/jobs?queue=digests&status=queued")  # a queue of its own: no worker serves it
    playwright_api.expect(page.locator("tbody tr[data-job-id]")).to_have_count(4)
    page.get_by_label(f"Select job {ids[0]}").check()  # a selection of one
    page.get_by_role("button", name="Cancel selected").click()
    playwright_api.expect(page.locator(".dry-run")).to_contain_text("Cancel 1 job (the 1 selected job(s))")
    assert site.app.job(ids[0]).status is Status.QUEUED  # a dry run changes nothing
    page.get_by_role("button", name="Cancel 1 job", exact=True).click()
    playwright_api.expect(page.locator("#toasts")).to_contain_text("Cancelled 1 of 1")
    playwright_api.expect(page.locator("tbody tr[data-job-id]")).to_have_count(3)
    assert site.app.job(ids[0]).status is Status.CANCELLED
    page.get_by_role("button", name="Cancel all matching…").click()  # everything the filter matches
    playwright_api.expect(page.locator(".dry-run")).to_contain_text("Cancel 3 jobs")
    assert all(site.app.job(i).status is Status.QUEUED for i in ids[1:])
    shot(page, site, "bulk-dry-run")
    page.get_by_role("button", name="Cancel 3 jobs").click()
    playwright_api.expect(page.locator("#toasts")).to_contain_text("Cancelled 3 of 3")
    assert all(site.app.job(i).status is Status.CANCELLED for i in ids)
    playwright_api.expect(page.locator("tbody tr[data-job-id]")).to_have_count(0)


def test_a_pipeline_shows_its_stages_and_takes_a_message(site: Site, page_for: Any) -> None:
    import httpx

    made = httpx.post(f"{site.url}/api/pipelines", json={"pipeline": "monthly-report"},
                      headers={"Authorization": f"Bearer {site.tokens['owner']}"})  # fmt: skip
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    wait_job(site.app, job_id, Status.WAITING)
    page = page_for("owner")
    page.goto(f"{site.url}/#/jobs/{job_id}")
    stages = page.locator("section[aria-labelledby='jd-stages'] tbody tr")
    playwright_api.expect(stages).to_have_count(3)
    playwright_api.expect(stages.nth(0)).to_contain_text("succeeded")
    playwright_api.expect(stages.nth(1)).to_contain_text("waiting for message 'approve'")
    page.get_by_text("Send a message").click()
    playwright_api.expect(page.get_by_label("Name")).to_have_value("approve")
    page.get_by_label("Payload (JSON, optional)").fill('{"approved_by": "carol"}')
    page.get_by_role("button", name="Send", exact=True).click()
    playwright_api.expect(page.locator("#toasts")).to_contain_text("Message 'approve' sent: resumed")
    wait_job(site.app, job_id, Status.SUCCEEDED)
    playwright_api.expect(page.locator(".page-head .badge")).to_have_text("succeeded")
    playwright_api.expect(stages.nth(1)).to_contain_text("carol")
    playwright_api.expect(stages.nth(2)).to_contain_text("succeeded")
    shot(page, site, "pipeline", full_page=True)


def test_an_admin_pauses_and_resumes_a_queue(site: Site, page_for: Any) -> None:
    site.app.enqueue("mail.send", ["ops@example.com"], queue="newsletters", owner="adam")
    page = page_for("admin")  # modify-others: may pause a queue
    page.goto(f"{site.url}/#/queues")
    row = page.locator("tr[data-queue='newsletters']")
    row.get_by_role("button", name="Pause newsletters").click()
    playwright_api.expect(row.locator(".badge")).to_have_text("paused")
    assert any(q.name == "newsletters" and q.paused for q in site.app.queues())
    shot(page, site, "queues")
    row.get_by_role("button", name="Resume newsletters").click()
    playwright_api.expect(row.locator(".badge")).to_have_text("active")
    assert not any(q.name == "newsletters" and q.paused for q in site.app.queues())


def test_a_user_without_view_others_sees_only_their_own_jobs(site: Site, page_for: Any) -> None:
    mine = site.app.enqueue("mail.send", ["bob@example.com"], queue="outbox", owner="bob")
    theirs = site.app.enqueue("mail.send", ["alice@example.com"], queue="outbox", owner="alice")
    page = page_for("other")
    page.goto(f"{site.url}/#/jobs?queue=outbox")
    playwright_api.expect(page.locator(f"tr[data-job-id='{mine.id}']")).to_be_visible()
    assert page.locator(f"tr[data-job-id='{theirs.id}']").count() == 0
    later = site.app.enqueue("mail.send", ["alice2@example.com"], queue="outbox", owner="alice")  # live: still hidden
    mine_later = site.app.enqueue("mail.send", ["bob2@example.com"], queue="outbox", owner="bob")
    playwright_api.expect(page.locator(f"tr[data-job-id='{mine_later.id}']")).to_be_visible()
    assert page.locator(f"tr[data-job-id='{later.id}']").count() == 0
    assert page.locator("tbody tr[data-job-id]").count() == 2  # only bob's
    assert page.get_by_label("Owner").count() == 0  # no owner filter for a user who sees only their own
    page.goto(f"{site.url}/#/jobs/{theirs.id}")
    playwright_api.expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    markup = "<img src=x onerror=window.__pwned=1>"  # data is shown as text, never as markup
    odd = site.app.enqueue("mail.send", [markup], kwargs={"subject": "<b>hi</b>"}, queue="outbox", owner="bob")
    page.goto(f"{site.url}/#/jobs/{odd.id}")
    playwright_api.expect(page.locator("dl.facts pre")).to_contain_text(markup)
    assert page.locator("#view img, #view dl b").count() == 0 and page.evaluate("window.__pwned") is None
    page.goto(f"{site.url}/#/queues")  # pausing a queue needs modify-others: no button offered
    playwright_api.expect(page.locator("tr[data-queue='outbox']")).to_be_visible()
    assert page.get_by_role("button", name="Pause outbox").count() == 0


def test_a_read_only_user_is_offered_no_change(site: Site, page_for: Any) -> None:
    job = site.app.enqueue("mail.send", ["rita@example.com"], queue="outbox", owner="rita")
    page = page_for("reader")
    page.goto(f"{site.url}/#/jobs/{job.id}")
    playwright_api.expect(page.locator("#view .note").first).to_contain_text("read-only")
    assert page.get_by_role("button", name="Cancel").count() == 0
    page.goto(f"{site.url}/#/jobs")
    playwright_api.expect(page.locator(f"tr[data-job-id='{job.id}']")).to_be_visible()
    assert page.get_by_role("button", name="Cancel all matching…").count() == 0
    assert page.get_by_label(f"Select job {job.id}").is_disabled()


def test_overview_and_the_other_pages_render(site: Site, page_for: Any) -> None:
    for i in range(6):
        site.app.enqueue("mail.send", [f"reader{i}@example.com"], owner="root")
    site.app.enqueue("billing.charge", ["INV-7"], owner="root")
    page = page_for("system")
    deadline = time.monotonic() + 20
    while any(q.queued for q in site.app.queues() if q.name == "default"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page.goto(f"{site.url}/#/overview")
    playwright_api.expect(page.locator(".chart svg")).to_be_visible()
    playwright_api.expect(page.locator(".chart .legend")).to_contain_text("succeeded:")
    playwright_api.expect(page.locator(".chart svg rect.ok").first).to_be_visible()
    shot(page, site, "overview", full_page=True)
    page.get_by_role("link", name="Workers").click()
    playwright_api.expect(page.locator("tbody")).to_contain_text("default")
    shot(page, site, "workers")
    page.get_by_role("link", name="Schedules").click()
    row = page.locator("tr[data-schedule='nightly-cleanup']")
    playwright_api.expect(row).to_contain_text("every 5.0 min")
    row.get_by_role("button", name="Pause").click()
    playwright_api.expect(row.locator(".badge")).to_have_text("paused")
    row.get_by_role("button", name="Resume").click()
    playwright_api.expect(row.locator(".badge")).to_have_text("active")
    shot(page, site, "schedules")
    page.get_by_role("link", name="Services").click()
    service = page.locator("tr[data-service='price_feed']")
    playwright_api.expect(service).to_contain_text("running")
    shot(page, site, "services")
    # a phone: the same jobs page, narrow
    phone = page_for("system", mobile=True)
    phone.goto(f"{site.url}/#/jobs")
    playwright_api.expect(phone.locator("tbody tr[data-job-id]").first).to_be_visible()
    shot(phone, site, "phone")


def test_the_dashboard_works_mounted_at_a_path_of_another_app(start_web_server: Any, browser: Any) -> None:
    server = start_web_server(mount="/ops/conveyor")  # the API tests' app, inside a host Starlette app
    job = server.app.enqueue("add", [1, 2], owner=server.name("system"))
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url)  # no trailing slash: redirected to the mount's root, where relative URLs work
    page.get_by_label("API token").fill(server.tokens["system"])
    page.get_by_role("button", name="Sign in").click()
    playwright_api.expect(page.locator("#live-state")).to_have_text("live")
    page.get_by_role("link", name="Jobs").click()
    playwright_api.expect(page.locator(f"tr[data-job-id='{job.id}']")).to_be_visible()
    assert page.url.startswith(server.url + "/#/jobs")
    context.close()
