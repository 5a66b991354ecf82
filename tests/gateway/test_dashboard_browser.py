"""The dashboard as an operator sees it: real headless Chromium against a running gateway.

Signs in through the form, reads the charts and tables, opens a sample, checks what the
browser holds (an HttpOnly, SameSite=Strict session cookie that is not the token) and saves a
full-page screenshot to ``docs/images/dashboard.png`` for the README.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, Page

from gateway.dashboard.auth import COOKIE_NAME
from tests.browser import chromium_browser_fixture  # noqa: F401  (fixture)
from tests.gateway.conftest import EvalGateway
from tests.helpers import ADMIN_TOKEN, ROOT

SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
VIEWPORT = {"width": 1280, "height": 900}


def _assert_charts_drawn(page: Page) -> None:
    charts = page.locator("svg.chart")
    assert charts.count() >= 2  # requests per minute + at least one score chart
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
    paths = page.locator("svg.chart path.series")
    assert paths.count() >= 2
    shapes = [paths.nth(i).get_attribute("d") or "" for i in range(paths.count())]
    assert all(re.match(r"M[\d.]+,[\d.]+", d) for d in shapes), shapes
    assert any(" L" in d for d in shapes)  # at least one drawn line, not only single points
    assert page.locator(".score-chart svg.chart path.series").count() >= 1


def test_operator_signs_in_reads_the_dashboard_and_opens_a_sample(
    chromium_browser: Browser, eval_gateway: EvalGateway, tmp_path: Path
) -> None:
    base = eval_gateway.url
    context = chromium_browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"{base}/dashboard")
        assert page.url == f"{base}/dashboard/login"
        assert page.locator("input[type=password][name=token]").is_visible()

        page.fill("input[name=token]", "not-the-admin-token")
        page.click("button[type=submit]")
        assert "That is not the admin token." in page.locator(".alert").inner_text()
        problems.clear()  # the browser logs that 401 as a failed load; it was meant

        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/dashboard")
        assert page.title().endswith("tuneloop dashboard")

        _assert_charts_drawn(page)
        body = page.locator("main").inner_text()
        for alias in eval_gateway.aliases:
            assert alias in body
        scores = page.locator("#quality .score").all_inner_texts()
        assert any(re.fullmatch(r"[01]\.\d{3}", text) for text in scores), scores
        assert page.locator("#quality .badge").count() >= 1
        # the stylesheet came from the gateway and applied under the page's CSP
        topbar = page.locator(".topbar").evaluate("e => getComputedStyle(e).backgroundColor")
        assert topbar == "rgb(23, 32, 43)"

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        cookies = [c for c in context.cookies() if c["name"] == COOKIE_NAME]
        assert len(cookies) == 1
        cookie = cookies[0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/dashboard"
        assert ADMIN_TOKEN not in cookie["value"]
        assert COOKIE_NAME not in page.evaluate("document.cookie")  # scripts cannot read it

        page.locator("a.sample-link").first.click()
        page.wait_for_url(re.compile(r".*/dashboard/samples/\d+$"))
        for heading in ("Request", "Response", "Checks", "Feedback"):
            assert page.get_by_role("heading", name=heading).is_visible()
        assert page.locator("#request pre").count() >= 1
        page.screenshot(path=str(tmp_path / "sample.png"), full_page=True)

        page.click("text=Sign out")
        page.wait_for_url(f"{base}/dashboard/login")
        assert not [c for c in context.cookies() if c["name"] == COOKIE_NAME]
    finally:
        context.close()

    assert requested and all(url.startswith(base) for url in requested), requested
    assert not any(ADMIN_TOKEN in url for url in requested)
    assert not problems, problems
