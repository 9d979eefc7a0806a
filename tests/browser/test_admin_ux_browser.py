"""The operator's daily tools in a real browser: the live fire-time preview,
the Trigger, Cancel and Retry buttons, a task list that fits the screen.
Screenshots go to test-artifacts/browser/ux-*.png."""

import re

import pytest

from tests.browser.conftest import ADMIN_USERNAME

RUN_TIMEOUT_MS = 60_000


@pytest.fixture
def logged_in(page, scheduler_server, sync_api):
    page.goto("/admin/login/")
    page.fill("#id_username", ADMIN_USERNAME)
    page.fill("#id_password", scheduler_server.password)
    page.click("input[type=submit]")
    sync_api.expect(page.locator("#site-name")).to_be_visible()
    return page


def add_task(page, name, command, schedule=""):
    page.goto("/admin/tasks_app/task/add/")
    page.fill("#id_name", name)
    page.select_option("#id_executor", "shell")
    page.fill("#id_command", command)
    page.fill("#id_schedule", schedule)
    page.click("input[name=_continue]")
    match = re.search(r"/task/(\d+)/change/", page.url)
    assert match, page.url
    return int(match.group(1))


def test_it_previews_fire_times_as_you_type(logged_in, screenshot, sync_api):
    page, expect = logged_in, sync_api.expect
    page.goto("/admin/tasks_app/task/add/")
    preview = page.locator(".schedule-preview")
    expect(preview).to_contain_text("Type a schedule")

    page.fill("#id_schedule", "*/45 * * * *")
    expect(preview.locator(".schedule-words")).to_have_text("In words: every hour at minutes 0 and 45 (UTC)")
    expect(preview.locator(".schedule-fires li")).to_have_count(5)
    expect(preview.locator(".schedule-warning")).to_contain_text("not every 45 minutes")
    screenshot(page, "ux-01-preview-uneven-step")

    page.fill("#id_schedule", "0 9 * * 1-5")
    page.fill("#id_timezone", "Europe/Berlin")
    expect(preview.locator(".schedule-words")).to_contain_text("at 09:00 on Monday through Friday (Europe/Berlin)")
    expect(preview.locator(".schedule-fires li").first).to_contain_text(re.compile(r"09:00:00 \(UTC\+0[12]:00\)"))
    expect(preview.locator(".schedule-warning")).to_have_count(0)
    screenshot(page, "ux-02-preview-berlin")

    page.fill("#id_schedule", "61 * * * *")
    expect(preview.locator(".schedule-error")).to_have_text("schedule: minute field: 61 is out of range 0-59")
    page.fill("#id_schedule", "0 9 * * *")
    page.fill("#id_timezone", "Mars/Olympus")
    expect(preview.locator(".schedule-error")).to_contain_text("timezone:")
    screenshot(page, "ux-03-preview-errors")


def test_it_triggers_with_overrides_then_cancels_from_the_run_page(logged_in, screenshot, sync_api):
    page, expect = logged_in, sync_api.expect
    task_id = add_task(page, "ux-long", "sleep 60; echo")
    page.click("a.button-trigger")
    expect(page.locator("h1")).to_have_text("Trigger ux-long")
    page.fill("#id_arguments", '["never-printed"]')
    page.select_option("#id_priority", "high")
    screenshot(page, "ux-04-trigger-form")
    page.click("input[name=_trigger]")
    expect(page.locator(".messagelist .success")).to_contain_text("Triggered ux-long")
    expect(page.locator(".field-priority .readonly")).to_have_text("High")
    cancel = page.locator("button.button-cancel-run")
    expect(cancel).to_be_visible()
    screenshot(page, "ux-05-active-run-with-cancel")
    cancel.click()
    # No check of the message: the page reloads itself once the run is final.
    expect(page.locator(".field-status_label .readonly")).to_have_text("Cancelled", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("button.button-cancel-run")).to_have_count(0)
    expect(page.locator("button.button-retry-run")).to_be_visible()
    screenshot(page, "ux-06-cancelled-run")
    assert task_id


def test_it_refuses_a_bad_override_on_the_trigger_page(logged_in, sync_api):
    page, expect = logged_in, sync_api.expect
    add_task(page, "ux-bad-override", "true")
    page.click("a.button-trigger")
    page.fill("#id_parameters", "[1, 2]")
    page.click("input[name=_trigger]")
    expect(page.locator(".errorlist")).to_contain_text("Must be a JSON object.")


def test_it_retries_a_failed_run_from_its_page(logged_in, screenshot, sync_api):
    page, expect = logged_in, sync_api.expect
    add_task(page, "ux-failing", "echo failing >&2; exit 3")
    page.click("a.button-trigger")
    page.click("input[name=_trigger]")
    expect(page.locator(".field-status_label .readonly")).to_have_text("Failed", timeout=RUN_TIMEOUT_MS)
    first_run = page.url
    retry = page.locator("button.button-retry-run")
    expect(retry).to_be_visible()
    screenshot(page, "ux-07-failed-run-with-retry")
    retry.click()
    # The new attempt's page. It fails fast too, and its page then reloads
    # itself, so the success message may be gone already, and the screenshot
    # waits for the final page: a page that navigates mid-capture never ends it.
    expect(page.locator(".field-trigger .readonly")).to_have_text("Retry")
    assert page.url != first_run
    expect(page.locator(".field-retry_count .readonly")).to_contain_text("1")
    expect(page.locator(".field-status_label .readonly")).to_have_text("Failed", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run-live")).to_have_count(0)
    screenshot(page, "ux-08-retry-attempt")


def test_it_fits_the_task_list_in_1280_pixels(logged_in, screenshot, sync_api):
    page = logged_in
    add_task(
        page,
        "a rather long task name for the nightly billing export of every region",
        "true",
        "0 9,17 * * MON-FRI",
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/admin/tasks_app/task/")
    sync_api.expect(page.locator("#result_list")).to_be_visible()
    screenshot(page, "ux-09-task-list-1280")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0


def api(server, method, path, body=None, token=None):
    """A call to the scheduler's REST API (the browser tests' server)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def test_it_draws_the_dependency_graph_and_the_run_grid(logged_in, scheduler_server, screenshot, sync_api):
    page, expect, server = logged_in, sync_api.expect, scheduler_server
    token = api(server, "POST", "/api/auth/login", {"username": ADMIN_USERNAME, "password": server.password})[
        "access_token"
    ]

    def task(name, command, dependencies=()):
        body = {"name": name, "executor": "shell", "command": command, "queue": "etl", "tags": ["etl"]}
        return api(server, "POST", "/api/tasks", {**body, "dependencies": list(dependencies)}, token)["id"]

    extract = task("etl-extract", "true")
    transform = task("etl-transform", "exit 1", [extract])
    load = task("etl-load", "true", [transform])
    task("etl-report", "true", [load])
    for task_id in (extract, transform, extract, transform):
        api(server, "POST", f"/api/tasks/{task_id}/trigger", {}, token)

    page.goto(f"/admin/tasks_app/task/{transform}/change/")
    graph = page.locator("#dependency-graph svg.dependency-graph")
    expect(graph).to_be_visible()
    expect(graph.locator("a.graph-node")).to_have_count(4)
    expect(graph.locator("path.graph-edge")).to_have_count(3)
    # The runs finish within seconds: the graph shows each task's latest one.
    for _ in range(60):
        page.reload()
        if (
            page.locator(f'a.graph-node[data-task="{transform}"][data-status="failed"]').count()
            and page.locator(f'a.graph-node[data-task="{extract}"][data-status="completed"]').count()
        ):
            break
        page.wait_for_timeout(500)
    expect(page.locator(f'a.graph-node[data-task="{transform}"]')).to_have_attribute("data-status", "failed")
    expect(page.locator(f'a.graph-node[data-task="{extract}"]')).to_have_attribute("data-status", "completed")
    page.locator("#dependency-graph").scroll_into_view_if_needed()
    screenshot(page, "ux-10-dependency-graph")

    page.click("#dependency-graph a:has-text('Run grid of the queue etl')")
    grid = page.locator("#run-grid")
    expect(grid.locator("tbody tr")).to_have_count(4)
    expect(grid.locator(f'tr[data-task="{transform}"] a.grid-cell.run-failed')).to_have_count(2)
    expect(grid.locator(f'tr[data-task="{extract}"] a.grid-cell.run-completed')).to_have_count(2)
    screenshot(page, "ux-11-run-grid")
    page.goto("/admin/tasks_app/task/grid/?tag=etl&runs=500")  # past the form's own max
    expect(page.locator(".errorlist")).to_contain_text("runs: a whole number from 1 to 50")
