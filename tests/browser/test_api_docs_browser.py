"""The API docs in a real headless browser with no internet (SPEC §8 "Web").

Every request that would leave 127.0.0.1 is blocked and recorded: Swagger UI
and ReDoc must render from the project's own files, under its
Content-Security-Policy (a violation is a console error, which fails the test).
"""

import re
from urllib.parse import urlsplit

import pytest

TITLE = "Distributed Task Scheduler API"
# ReDoc's sidebar footer always shows Redocly's logo from their CDN (no option
# turns it off); the Content-Security-Policy blocks it before any request, and
# ReDoc hides the image. That one report is expected; any other fails the test.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# The page is drawn once the schema is generated and a megabyte of script has
# run: allow for a busy machine (this is a ceiling, not a timing assertion).
RENDER_TIMEOUT_MS = 120_000


@pytest.fixture
def page(browser, scheduler_server):
    """A fresh tab, as in conftest.py; JavaScript errors fail the test, except
    the CSP report of ReDoc's logo."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=scheduler_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield tab
    context.close()
    unexpected = [error for error in errors if not (REDOC_LOGO in error and "Content Security Policy" in error)]
    assert not unexpected, f"JavaScript errors in the browser: {unexpected}"


@pytest.fixture
def offline(page):
    """Abort every request to a host other than 127.0.0.1; the list says which."""
    blocked = []

    def route(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.context.route("**/*", route)
    return blocked


def test_it_renders_swagger_ui_offline(page, offline, sync_api):
    expect = sync_api.expect

    page.goto("/api/docs/")

    expect(page.locator(".swagger-ui .information-container .title")).to_contain_text(TITLE, timeout=RENDER_TIMEOUT_MS)
    operation = page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/tasks$")).first
    expect(operation).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    operation.click()
    expect(page.locator(".opblock.is-open")).to_be_visible()
    assert offline == []


def test_it_renders_redoc_offline(page, offline, sync_api):
    expect = sync_api.expect

    page.goto("/api/redoc/")

    expect(page.locator("h1", has_text=TITLE)).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    assert offline == []
