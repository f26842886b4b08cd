"""The operator console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium) against a real site in this process: simulators, edges and the central service (lab.consolesite).

One site and one browser for the module; each test opens the page afresh."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from lab.consolesite import ConsoleSite

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
T = TypeVar("T")

pytestmark = [
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
    pytest.mark.timeout(300),
]


def new_browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with ConsoleSite(tmp_path_factory.mktemp("console-browser"), cabinets=3) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = new_browser()
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except WebDriverException as exc:  # an element replaced while it was read: try again
            value, last = None, exc
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what} (last error: {last})")


def open_console(browser: WebDriver, site: ConsoleSite, token: str | None) -> None:
    browser.get(site.url + "/")
    browser.execute_script("sessionStorage.clear()")
    if token is not None:
        browser.execute_script("sessionStorage.setItem('hybrid-ems-token', arguments[0])", token)
    browser.get(site.url + "/")
    wait_for(lambda: browser.find_element(By.ID, "stream-state").text == "live", 20.0, "the stream is live")
    assert browser.find_element(By.ID, "stream-banner").get_attribute("hidden") is not None


def card_state(browser: WebDriver, cabinet_id: str) -> str:
    return str(browser.find_element(By.ID, f"card-{cabinet_id}").get_attribute("data-state"))


def visible(element: WebElement) -> bool:
    return bool(element.is_displayed())


def reset_all(site: ConsoleSite) -> None:
    """Clear every injected fault and latched interlock (the edges may latch a comm-loss trip at start
    on a busy machine)."""

    def clear() -> None:
        assert site.local is not None
        for cabinet_id in site.site.cabinet_ids:
            site.local.simulator.cabinet(cabinet_id).faults.clear_all()

    site.call(clear)
    for cabinet_id in site.site.cabinet_ids:
        for _ in range(40):
            edge = site.call(lambda c=cabinet_id: site.local.edges[c].controller)  # type: ignore[union-attr]
            if edge is None or site.call(lambda e=edge: e.reset_interlock().accepted):
                break
            time.sleep(0.25)


def test_every_card_appears_with_its_mode_and_an_upload_draws_the_plan(
    site: ConsoleSite, browser: WebDriver
) -> None:
    reset_all(site)
    open_console(browser, site, site.tokens.operator)
    cards = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#cabinets .card"), 10.0, "cards")
    assert [c.get_attribute("data-cabinet") for c in cards] == site.site.cabinet_ids
    wait_for(
        lambda: all(card_state(browser, c) in ("fallback", "schedule") for c in site.site.cabinet_ids),
        20.0,
        "every card shows its edge's mode",
    )
    assert "operator" in browser.find_element(By.ID, "who").text
    assert visible(browser.find_element(By.ID, "actions"))

    # Upload the example day-ahead through the page's file input (the drop zone's chooser).
    body = json.loads((EXAMPLES / "day-ahead.json").read_text())
    body["start"] = site.day_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    day_file = site.directory / "day-ahead.json"
    day_file.write_text(json.dumps(body))
    browser.find_element(By.ID, "upload-file").send_keys(str(day_file))
    plan_id = wait_for(
        lambda: browser.find_element(By.ID, "plan-chart").get_attribute("data-plan-id"), 60.0, "a plan"
    )
    assert site.service is not None and site.service.state.plan is not None
    assert plan_id == site.call(lambda: site.service.state.plan.plan.plan_id)  # type: ignore[union-attr]
    chart = browser.find_element(By.ID, "plan-chart")
    assert chart.find_elements(By.CSS_SELECTOR, "svg path.latest\\ plan, svg path")
    assert "Accepted" in browser.find_element(By.ID, "action-result").text
    wait_for(
        lambda: all(card_state(browser, c) == "schedule" for c in site.site.cabinet_ids),
        30.0,
        "every card in schedule mode",
    )
    events = browser.find_element(By.ID, "events").text
    assert "upload" in events and "plan" in events


def test_a_trip_shows_within_2_s_and_the_reset_button_clears_it(
    site: ConsoleSite, browser: WebDriver
) -> None:
    reset_all(site)
    open_console(browser, site, site.tokens.operator)
    wait_for(lambda: card_state(browser, "cab-2") in ("fallback", "schedule"), 20.0, "cab-2 running")
    assert not browser.find_elements(By.CSS_SELECTOR, "#card-cab-2 button.reset")
    assert site.local is not None
    site.call(lambda: site.local.simulator.cabinet("cab-2").faults.over_temperature(70.0))  # type: ignore[union-attr]

    def edge_tripped() -> float | None:
        t = site.call(lambda: site.local.edges["cab-2"].telemetry())  # type: ignore[union-attr]
        return time.monotonic() if t is not None and t.mode.value == "tripped" else None

    tripped_at = wait_for(edge_tripped, 20.0, "the edge trips")
    wait_for(lambda: card_state(browser, "cab-2") == "tripped", 5.0, "the card shows tripped")
    shown_after_s = time.monotonic() - tripped_at
    assert shown_after_s <= 2.0, f"the card turned tripped {shown_after_s:.2f} s after the trip"
    assert "temperature" in browser.find_element(By.ID, "card-cab-2").text.lower()

    site.call(lambda: site.local.simulator.cabinet("cab-2").faults.clear_all())  # type: ignore[union-attr]
    time.sleep(0.5)  # fresh, valid data reaches the edge
    for _ in range(20):
        browser.find_element(By.CSS_SELECTOR, "#card-cab-2 button.reset").click()
        browser.find_element(By.CSS_SELECTOR, "#card-cab-2 button.reset-confirm").click()
        result = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, "#card-cab-2 .reset-result").text, 15.0, "answer"
        )
        if result.startswith("Accepted"):
            break
        assert result.startswith("Refused"), result  # the edge's own answer, shown as it is
        time.sleep(0.5)
    assert "interlock reset" in result
    wait_for(lambda: card_state(browser, "cab-2") != "tripped", 10.0, "the card leaves tripped")
    events = browser.find_element(By.ID, "events").text
    assert "reset" in events and "tripped" in events


def test_a_bad_upload_shows_each_problem(site: ConsoleSite, browser: WebDriver) -> None:
    open_console(browser, site, site.tokens.uploader)
    lines = (EXAMPLES / "day-ahead.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "cheap", 1)
    bad = site.directory / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    assert not visible(browser.find_element(By.ID, "optimize"))  # an uploader cannot re-optimize
    browser.find_element(By.ID, "upload-file").send_keys(str(bad))
    problems = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#action-result .problems li"), 15.0, "the problems"
    )
    texts = [p.text for p in problems]
    assert any("row" in t.lower() and "import_price_per_kwh" in t for t in texts), texts
    assert "Refused (422)" in browser.find_element(By.ID, "action-result").text


def test_a_viewer_sees_no_actions(site: ConsoleSite, browser: WebDriver) -> None:
    open_console(browser, site, site.tokens.viewer)
    wait_for(lambda: "viewer" in browser.find_element(By.ID, "who").text, 10.0, "whoami")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#cabinets .card"), 10.0, "cards")
    assert not visible(browser.find_element(By.ID, "actions"))
    # The page broke no rule of its Content-Security-Policy and loaded nothing that failed.
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [m for m in problems if "Content Security Policy" in m or "net::" in m], problems
    assert not [
        b
        for b in browser.find_elements(By.CSS_SELECTOR, "button")
        if visible(b) and b.text not in ("Use token", "Forget")
    ]


def test_stream_loss_shows_the_banner_and_recovers(site: ConsoleSite, browser: WebDriver) -> None:
    open_console(browser, site, site.tokens.viewer)
    site.restart_central(down_s=3.0)  # the page notices while the central is down
    wait_for(lambda: card_state(browser, "cab-1") != "", 5.0, "the page still shows the cabinets")
    wait_for(lambda: browser.find_element(By.ID, "stream-state").text == "live", 30.0, "reconnected")
    assert not visible(browser.find_element(By.ID, "stream-banner"))
    losses = browser.find_element(By.TAG_NAME, "body").get_attribute("data-stream-losses")
    assert int(losses or 0) >= 1, "the banner was never shown"
