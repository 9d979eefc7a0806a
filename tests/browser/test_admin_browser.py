"""The admin in a real headless browser against a real scheduler (SPEC §6).

One journey, as an operator makes it: log in, create a task (a bad cron first),
trigger it, follow its run live to the end, then read the dashboard. Each
step leaves a screenshot in test-artifacts/browser/.
"""

import re

from tests.browser.conftest import ADMIN_USERNAME

TASK_NAME = "browser-hello"
# Long enough for the run page to open while the run is still in flight.
COMMAND = "sleep 3; echo hello-from-browser"
RUN_TIMEOUT_MS = 60_000


def test_it_creates_triggers_follows_and_charts_a_task(page, scheduler_server, screenshot, sync_api):
    expect = sync_api.expect

    # Log in.
    page.goto("/admin/")
    expect(page).to_have_title(re.compile("Log in"))
    page.fill("#id_username", ADMIN_USERNAME)
    page.fill("#id_password", scheduler_server.password)
    screenshot(page, "01-login")
    page.click("input[type=submit]")
    expect(page.locator("#dashboard-module a", has_text="Dashboard")).to_be_visible()

    # A bad cron is refused with a readable message.
    page.goto("/admin/tasks_app/task/add/")
    page.fill("#id_name", TASK_NAME)
    page.select_option("#id_executor", "shell")
    page.fill("#id_command", COMMAND)
    page.fill("#id_schedule", "61 * * * *")
    page.click("input[name=_save]")
    expect(page.locator(".field-schedule .errorlist")).to_contain_text("minute field: 61 is out of range 0-59")
    screenshot(page, "02-bad-cron")

    # Fixed: no schedule, so it runs only when triggered.
    page.fill("#id_schedule", "")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    row = page.locator("#result_list tbody tr", has_text=TASK_NAME)
    expect(row).to_be_visible()
    screenshot(page, "03-task-list")

    # Trigger it with the admin action.
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "trigger")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Triggered 1 task(s).")

    # Its run page follows the run live, without a reload by hand, to the end.
    page.goto("/admin/tasks_app/taskrun/")
    page.locator("#result_list tbody tr", has_text=TASK_NAME).first.locator("th.field-id a").click()
    expect(page.locator("#run-live")).to_be_visible()
    screenshot(page, "04-run-following")
    status = page.locator(".field-status_label .readonly")
    expect(status).to_have_text("Completed", timeout=RUN_TIMEOUT_MS)
    expect(page.locator(".field-stdout_block pre")).to_contain_text("hello-from-browser")
    expect(page.locator("#run-live")).to_have_count(0)
    screenshot(page, "05-run-detail")

    # The dashboard draws its charts from the data, including this run.
    page.goto("/admin/dashboard/")
    expect(page.locator("#chart-runs svg path.bars-completed")).to_have_count(1)
    expect(page.locator("#chart-success svg rect.rate")).to_have_count(1)
    expect(page.locator("#dash-kpis .dash-kpi").first).to_contain_text("1")
    expect(page.locator("#chart-lag svg circle").first).to_be_visible()
    expect(page.locator("#dash-workers tbody tr").first).to_contain_text("active")
    expect(page.locator(".dash-range button.selected")).to_have_text("1 h")  # it opens on the last hour
    screenshot(page, "06-dashboard")
    page.click(".dash-range button[data-minutes='1440']")
    expect(page.locator(".dash-range button.selected")).to_have_text("24 h")
    expect(page.locator("#chart-runs svg path.bars-completed")).to_have_count(1)
    screenshot(page, "07-dashboard-last-day")
