"""A real headless Chromium for the gallery page, driven by Selenium.

Why it is built this way
------------------------
* **Debian's browser and driver, never a download.** ``/usr/bin/chromium`` and
  ``/usr/bin/chromedriver`` come from the ``chromium`` and ``chromium-driver``
  packages (``make test`` installs them). Handing Selenium the driver's path makes
  it skip Selenium Manager, the part that would otherwise look up and fetch a
  browser and driver over the network (:func:`driver_paths` checks both exist and
  fails the test, naming the packages, when they do not: a skip would hide a broken
  set-up).
* **A fake microphone fed from a real recording.** ``--use-fake-device-for-media-stream``
  with ``--use-file-for-fake-audio-capture=<wav>%noloop`` makes ``getUserMedia``
  capture the WAV once, from the moment the page opens the microphone, then silence;
  ``--use-fake-ui-for-media-stream`` answers the permission prompt. The flags cost
  nothing on pages that never ask for the microphone, so every browser gets them.
* **The console is part of the test.** An uncaught exception, a ``console.error``
  or a refused content-security-policy rule in the page fails the test at teardown
  (:meth:`Browser.console_errors`); failed network loads are only logged, because a
  test may delete what a thumbnail was about to load.
* **A screenshot per test, pass or fail,** in ``tests/artifacts/`` (the issue asks
  for one kept as an artifact): taken at teardown, after the test's last step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import soundfile
import soxr
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DATA = Path(__file__).resolve().parents[1] / "data"
WINDOW = (1280, 900)
# The fake microphone's WAV: plain 16-bit PCM at the rate Chromium captures at.
FAKE_MIC_RATE = 48_000
# Console entries that fail a test: uncaught errors ("javascript"), console.error
# ("console-api" at SEVERE) and content-security-policy refusals ("security").
FAILING_SOURCES = frozenset({"javascript", "console-api", "security"})
# Where tests/e2e/conftest.py's report hook leaves each phase's report.
CALL_REPORT = pytest.StashKey[pytest.TestReport]()

T = TypeVar("T")
# What a wait treats as "not yet": the element was replaced, is not there yet, or is
# covered or not interactable for a moment (a toast sliding over it).
RETRIED = (
    StaleElementReferenceException,
    NoSuchElementException,
    ElementClickInterceptedException,
    ElementNotInteractableException,
)


class BrowserError(AssertionError):
    """The page did not do what the test waited for; the message says what and shows the page."""


def driver_paths() -> tuple[Path, Path]:
    """Debian's chromium and chromedriver, or a test failure naming what to install."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the browser tests drive Debian's Chromium; "
            "`make test` installs it (apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return CHROMIUM, CHROMEDRIVER


def chromium_options(profile: Path, fake_mic: Path | None) -> webdriver.ChromeOptions:
    """Headless Chromium with a private profile, a fixed window and, optionally, a fake mic."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where the sandbox cannot start
        "--disable-dev-shm-usage",  # /dev/shm is small in containers
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--no-default-browser-check",
        # Nothing may try the network. Measured with strace: Chromium looks up
        # accounts.google.com and clients2.google.com at start whatever the
        # --disable-* flags say; resolving every name but localhost to "not found"
        # stops the lookups themselves (pages here are served from 127.0.0.1).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-breakpad",
        "--metrics-recording-only",
        "--no-service-autorun",
        "--password-store=basic",
        "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    if fake_mic is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_mic}%noloop")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


def make_fake_mic_wav(path: Path, before_s: float = 1.0, after_s: float = 2.0) -> Path:
    """``tests/data/jfk.flac`` as a mono 16-bit WAV at 48 kHz with silence around it.

    The silence before it covers the moment between the page opening the
    microphone and MediaRecorder starting; the silence after lets the recording end
    on quiet, as a person stops talking before pressing Stop.
    """
    audio, rate = soundfile.read(DATA / "jfk.flac", dtype="float32", always_2d=True)
    mono = soxr.resample(audio.mean(axis=1), rate, FAKE_MIC_RATE)
    pad = [np.zeros(int(s * FAKE_MIC_RATE), dtype=np.float32) for s in (before_s, after_s)]
    soundfile.write(path, np.concatenate([pad[0], mono, pad[1]]), FAKE_MIC_RATE, "PCM_16")
    return path


class Browser:
    """One Chromium window: open pages, wait for elements, read text, click, look."""

    def __init__(self, driver: webdriver.Chrome, name: str) -> None:
        self.driver = driver
        self.name = name
        self.console: list[dict[str, Any]] = []
        self.allowed: list[re.Pattern[str]] = []

    def open(self, url: str) -> None:
        self.driver.get(url)

    def reload(self) -> None:
        self.driver.refresh()

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait_for(self, css: str, timeout: float = 10.0, visible: bool = True) -> WebElement:
        """The first element matching ``css`` once it exists (and is displayed)."""

        def found() -> WebElement | None:
            for element in self.find_all(css):
                if not visible or element.is_displayed():
                    return element
            return None

        return self.wait_until(found, timeout, f"{'a visible ' if visible else ''}{css!r}")

    def wait_gone(self, css: str, timeout: float = 10.0) -> None:
        """Until no element matches ``css`` (or none is displayed)."""
        self.wait_until(
            lambda: not any(e.is_displayed() for e in self.find_all(css)),
            timeout,
            f"{css!r} to disappear",
        )

    def wait_until(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``probe`` until it returns something truthy; BrowserError after ``timeout``.

        Elements replaced while being looked at (a live update re-rendering a card)
        count as "not yet", not as an error.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if result := probe():
                    return result
            except RETRIED:
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"waited {timeout} s for {what}; {self.describe()}")
            time.sleep(0.05)

    def text(self, css: str) -> str:
        """The rendered text of the first element matching ``css`` (read in one step in
        the page, so a live update replacing the element cannot make it stale)."""
        found = self.js(
            "const e = document.querySelector(arguments[0]); return e && e.innerText;", css
        )
        if found is None:
            raise NoSuchElementException(f"no element matches {css!r}")
        return str(found)

    def attributes(self, css: str, name: str) -> list[str]:
        """Attribute ``name`` of every element matching ``css``, in document order."""
        values: list[str] = self.js(
            "const [css, name] = arguments;"
            "return [...document.querySelectorAll(css)].map((e) => e.getAttribute(name));",
            css,
            name,
        )
        return values

    def click(self, css: str, timeout: float = 10.0) -> None:
        """Click the first visible element matching ``css`` once it is there and free.

        Found and clicked in one attempt, retried while a live update replaces the
        element or something (a toast) still covers it.
        """

        def attempt() -> bool:
            for element in self.find_all(css):
                if element.is_displayed():
                    element.click()
                    return True
            return False

        self.wait_until(attempt, timeout, f"a visible {css!r} to click")

    def type(self, css: str, text: str) -> None:
        self.wait_for(css).send_keys(text)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, label: str = "") -> Path:
        """A PNG of the window in tests/artifacts/, named after the test (and ``label``)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name + (f"-{label}" if label else ""))
        path = ARTIFACTS / f"{stem.strip('-')}.png"
        self.driver.save_screenshot(str(path))
        return path

    def allow_console(self, pattern: str) -> None:
        """Console messages matching ``pattern`` (a regex) do not fail the test."""
        self.allowed.append(re.compile(pattern))

    def collect_console(self) -> list[dict[str, Any]]:
        """Everything the page logged since the last call (Chromium hands each entry once)."""
        entries: list[dict[str, Any]] = list(self.driver.get_log("browser"))  # type: ignore[no-untyped-call]
        self.console.extend(entries)
        return entries

    def console_errors(self) -> list[str]:
        """The console entries that mean the page misbehaved (see FAILING_SOURCES)."""
        self.collect_console()
        return [
            f"{entry.get('source')}: {entry['message']}"
            for entry in self.console
            if entry.get("level") == "SEVERE"
            and entry.get("source") in FAILING_SOURCES
            and not any(p.search(entry["message"]) for p in self.allowed)
        ]

    def describe(self) -> str:
        """The page's address, the start of its text and its last console lines, for failures."""
        try:
            body = str(self.find("body").text)
            self.collect_console()
        except WebDriverException as exc:
            return f"the page could not be read ({exc.msg})"
        console = "".join(f"\n  {e.get('source')}: {e['message']}" for e in self.console[-10:])
        return f"page {self.driver.current_url} shows: {body[:600]!r}; console:{console or ' -'}"


# ------------------------------------------------------------------ the gallery page
# Selectors from the page's DOM contract (gallery/static/index.html and its scripts).


def card_css(image_id: str) -> str:
    """The grid card of one image (ids are paths: quoted as a CSS string)."""
    return f"a.card[data-id={json.dumps(image_id)}]"


def card_ids(browser: Browser) -> list[str]:
    """The ids of the cards on the page, in the order shown."""
    return browser.attributes("#grid a.card", "data-id")


def open_gallery(browser: Browser, url: str | None, timeout: float = 20.0) -> None:
    """Open the page (None: the one already open) and wait until it says it is ready:
    the first page of images shown and the live event stream open."""
    if url is not None:
        browser.open(url)
    browser.wait_for('body[data-ready="1"]', timeout, visible=False)


def detail_meta(browser: Browser) -> dict[str, str]:
    """The detail view's record (the ``dt``/``dd`` pairs of ``#detail-meta``)."""
    pairs: dict[str, str] = browser.js(
        """const out = {}; let key = null;
        for (const node of document.querySelector('#detail-meta').children) {
          if (node.tagName === 'DT') key = node.textContent.trim();
          else if (node.tagName === 'DD' && key !== null) out[key] = node.textContent.trim();
        }
        return out;"""
    )
    return pairs


def wait_detail_meta(browser: Browser, key: str, timeout: float = 10.0) -> dict[str, str]:
    """The detail view's record once it shows ``key`` (it fills in after the prompt)."""
    return browser.wait_until(
        lambda: meta if key in (meta := detail_meta(browser)) else None,
        timeout,
        f"{key!r} in the detail view",
    )


def launch(profile: Path, name: str, fake_mic: Path | None) -> Browser:
    """Start Chromium through Debian's chromedriver (no Selenium Manager, no network);
    ``fake_mic`` is the WAV its microphone plays, or None for no fake devices."""
    browser_path, driver_path = driver_paths()
    options = chromium_options(profile, fake_mic)
    options.binary_location = str(browser_path)
    service = Service(executable_path=str(driver_path), log_output=str(profile / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(*WINDOW)
    return Browser(driver, name)


def close(browser: Browser, passed: bool) -> None:
    """Screenshot, console check, quit: the window always closes, whatever failed.

    The console check fails only a test that otherwise passed, so a real failure
    is not hidden behind a page error it caused.
    """
    errors: list[str] = []
    try:
        with contextlib.suppress(NoAlertPresentException):  # a left-over alert() blocks all
            alert = browser.driver.switch_to.alert
            errors.append(f"an alert was left open: {alert.text!r}")
            alert.dismiss()
        path = browser.screenshot()
        log.info("screenshot kept: %s", path)
        errors += browser.console_errors()
        for entry in browser.console:
            log.info("console %s %s: %s", entry.get("level"), entry.get("source"), entry["message"])
    finally:
        browser.driver.quit()
    if errors and passed:
        pytest.fail("the page logged errors:\n" + "\n".join(errors), pytrace=False)


def call_passed(request: pytest.FixtureRequest) -> bool:
    """Whether the test's own call phase passed (the report conftest's hook stashed)."""
    report = request.node.stash.get(CALL_REPORT, None)
    return report is not None and report.passed


@pytest.fixture(scope="session")
def fake_mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JFK recording as the WAV Chromium's fake microphone plays (see make_fake_mic_wav)."""
    return make_fake_mic_wav(tmp_path_factory.mktemp("fake-mic") / "jfk.wav")


@pytest.fixture
def chromium(
    tmp_path: Path, fake_mic_wav: Path, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    """A fresh headless Chromium per test (private profile, fake microphone playing JFK).

    Teardown keeps a screenshot in tests/artifacts/ and fails a passing test whose
    page logged errors.
    """
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = launch(profile, request.node.name, fake_mic_wav)
    try:
        yield browser
    finally:
        close(browser, call_passed(request))
