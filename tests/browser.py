"""What the browser tests share: Debian's Chromium as Playwright launches it, and signing in."""

from __future__ import annotations

from tests.console_fixtures import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sign_in(page, password: str = PASSWORD) -> None:
    page.goto("/console/login")
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main button[type=submit]")
