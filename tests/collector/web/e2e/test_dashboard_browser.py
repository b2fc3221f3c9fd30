"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

A real ``posture-collector serve --http-listen`` process, a real agent that enrolls over
TLS and reports this machine's facts, two analysts created with the CLI. The browser signs
in, reads the fleet overview, opens the failing host, reads the evidence of a failing
check, requests a waiver as one person and approves it as another, and downloads a CSV
report, saving a screenshot at every step (``test-artifacts/screenshots/`` at the repo
root, or ``$POSTURE_TEST_ARTIFACTS``). Selenium is pointed at ``/usr/bin/chromedriver``, so
Selenium Manager never downloads a browser or a driver.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[4]
PASSWORD = "correct horse battery staple"
#: How long the browser waits for a page element or a download before the test fails.
WAIT_SECONDS = 60

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1366,900",
)  # fmt: skip


def artifacts_dir(test_name: str) -> Path:
    base = os.environ.get("POSTURE_TEST_ARTIFACTS")
    root = Path(base) if base else ROOT / "test-artifacts"
    directory = root / "screenshots" / test_name
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory


class Browser:
    """One Chromium with a fresh profile, and the screenshots it takes."""

    def __init__(self, base_url: str, profile: Path, downloads: Path, shots: Path) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
        self.driver: WebDriver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        self.driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.base_url, self.downloads, self.shots = base_url, downloads, shots
        self.count = 0

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait_for(self, css: str) -> WebElement:
        return WebDriverWait(self.driver, WAIT_SECONDS).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def shot(self, name: str, full_page: bool = True) -> Path:
        """Save a screenshot: the whole page (up to 6,000 px) or what the window shows."""
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        if not full_page:
            self.driver.save_screenshot(str(path))
            return path
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1366, min(max(900, int(height)), 6000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1366, 900)
        return path

    def login(self, name: str) -> None:
        self.open("/")
        self.wait_for("#username").send_keys(name)
        self.find("#password").send_keys(PASSWORD)
        self.find("#password").submit()
        self.wait_for('[data-testid="fleet-score"]')

    def logout(self) -> None:
        self.find("header form button[type=submit]").click()
        self.wait_for("#username")

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(
    web_collector: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    shots = artifacts_dir(request.node.name)
    (tmp_path / "downloads").mkdir()
    opened = Browser(web_collector.web_url, tmp_path / "chromium", tmp_path / "downloads", shots)
    yield opened
    opened.quit()


def enroll_this_machine(collector: Any, agent: Any) -> None:
    secret = collector.cli("enroll-secret", "create", "laptops", "--group", "City Hall")
    result = agent.run(
        "enroll", "--collector", collector.address, "--ca-cert", str(collector.pki.ca_cert),
        "--secret", secret.stdout.strip(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    once = agent.run("once")
    assert once.returncode == 0, once.stderr


def add_people(collector: Any, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    for name in ("ana", "bob"):
        collector.cli(
            "user", "add", name, "--role", "analyst", "--password-file", str(password_file),
            "--user", "e2e-admin",
        )  # fmt: skip


def first_failing_with_evidence(browser: Browser) -> WebElement:
    rows = browser.driver.find_elements(By.CSS_SELECTOR, 'tr[data-status="fail"]')
    for row in rows:
        if row.find_elements(By.CSS_SELECTOR, "details.evidence"):
            return row
    raise AssertionError(f"none of the {len(rows)} failing checks on this machine has evidence")


def wait_for_download(directory: Path, suffix: str) -> Path:
    def done(_: object) -> Path | bool:
        files = [p for p in directory.iterdir() if p.name.endswith(suffix)]
        return files[0] if files else False

    found: Path = WebDriverWait(None, WAIT_SECONDS).until(done)  # type: ignore[arg-type]
    return found


def test_sign_in_read_evidence_waive_with_two_people_and_download_csv(
    web_collector: Any, agent: Any, browser: Browser, tmp_path: Path
) -> None:
    enroll_this_machine(web_collector, agent)
    add_people(web_collector, tmp_path)
    hostname = re.escape(os.uname().nodename)

    # Sign in: any page sends a visitor to the login form, then back.
    browser.open("/hosts")
    browser.wait_for("#username")
    assert browser.driver.title == "Sign in · Posture"
    browser.shot("login")
    browser.wait_for("#username").send_keys("ana")
    browser.find("#password").send_keys(PASSWORD)
    browser.find("#password").submit()
    browser.wait_for('[data-testid="host-count"]')
    assert browser.driver.current_url.endswith("/hosts")

    # The keyboard reaches the skip link first.
    browser.open("/")
    browser.wait_for('[data-testid="fleet-score"]')
    browser.find("body").send_keys(Keys.TAB)
    assert browser.driver.switch_to.active_element.text == "Skip to content"
    assert browser.driver.title == "Fleet overview · Posture"
    assert re.fullmatch(r"\d+\.\d %", browser.find('[data-testid="fleet-score"]').text)
    assert browser.driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    browser.shot("overview")

    # The failing host, and the evidence of one of its failing checks.
    browser.find('a[href="/hosts"]').click()
    browser.wait_for('[data-testid="host-count"]')
    assert browser.find('[data-testid="host-count"]').text == "1 host matches."
    browser.shot("hosts")
    link = browser.driver.find_element(By.XPATH, "//table//a[starts-with(@href, '/hosts/')]")
    assert re.fullmatch(hostname, link.text)
    link.click()
    browser.wait_for("#check-results")
    row = first_failing_with_evidence(browser)
    check_id = row.get_attribute("data-check")
    assert check_id
    row.find_element(By.CSS_SELECTOR, "details.evidence summary").click()
    evidence = row.find_element(By.CSS_SELECTOR, "details.evidence table")
    assert evidence.is_displayed()
    cells = evidence.find_elements(By.CSS_SELECTOR, "tbody td")
    assert cells and any(cell.text for cell in cells)
    browser.driver.execute_script("arguments[0].scrollIntoView()", row)
    browser.shot("host-evidence", full_page=False)

    # Ana requests a waiver for that check on this host, from the host page.
    row.find_element(By.LINK_TEXT, "Request a waiver").click()
    browser.wait_for("#waiver-form")
    assert browser.find("#w-check").get_attribute("value") == check_id
    expires = (datetime.now(UTC) + timedelta(days=30)).date()
    browser.driver.execute_script(
        "arguments[0].value = arguments[1]", browser.find("#w-expires"), expires.isoformat()
    )
    browser.find("#w-ticket").send_keys("CHG-2041")
    browser.find("#w-justification").send_keys("Accepted until the hardware refresh")
    browser.find("#w-control").send_keys("Device kept in a locked office")
    browser.shot("waiver-form")
    browser.find("#waiver-form button[type=submit]").click()
    browser.wait_for(".notice")
    requested = browser.find('tr[data-state="requested"]')
    assert check_id in requested.text
    assert not requested.find_elements(By.CSS_SELECTOR, 'form[action$="/approve"]')
    browser.shot("waiver-requested")
    browser.logout()

    # Bob approves it.
    browser.login("bob")
    browser.open("/waivers")
    browser.wait_for('tr[data-state="requested"]')
    browser.find('tr[data-state="requested"] form[action$="/approve"] button').click()
    browser.wait_for(".notice")
    effective = browser.find('tr[data-state="effective"]')
    assert "ana" in effective.text and "bob" in effective.text
    browser.shot("waiver-approved")
    browser.find('tr[data-state="effective"] a[href^="/hosts/"]').click()
    waived = browser.wait_for(f'tr[data-check="{check_id}"]')
    assert "waived" in waived.find_element(By.CSS_SELECTOR, "td").text

    # Bob downloads a CSV report of the fleet, and the file holds the host and check.
    browser.open("/reports")
    browser.wait_for("#report-form")
    assert browser.find("#r-format").get_attribute("value") == "csv"
    browser.shot("reports")
    browser.find("#report-form button[type=submit]").click()
    report = wait_for_download(browser.downloads, ".csv")
    assert report.name.startswith("posture-fleet-")
    rows = list(csv.reader(io.StringIO(report.read_text(encoding="utf-8"))))
    assert len(rows) > 2
    flat = [",".join(cells) for cells in rows]
    assert any(check_id in line and re.search(hostname, line) for line in flat)
