"""A real headless Chromium for the browser tests (Debian's chromium and
chromium-driver, driven by Selenium 4; .ci/run installs them): the skip
marker, the driver, a click that waits for the page it leads to, and the
check that no script ran an alert."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are needed (.ci/run installs them)",
)


@contextmanager
def chromium(height: int) -> Iterator[Any]:
    """A headless Chromium window 1280 wide and `height` high, Chinese first."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size=1280,{height}", "--lang=zh-CN"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_script_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()


def no_alert(drv: Any) -> None:
    """Fails when a script on the page opened an alert."""
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        drv.switch_to.alert.text  # noqa: B018


def click_to(drv: Any, button: str, expect: str, timeout: float = 30) -> None:
    """Click the element with id `button` and wait for the page it leads to,
    the one holding id `expect` (a click returns before a form's answer
    has loaded); an error page instead fails with its text."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = drv.find_element(By.TAG_NAME, "html")
    drv.find_element(By.ID, button).click()

    def gone() -> bool:
        try:
            old.tag_name  # noqa: B018 - raises once the old page is gone
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            # Asked while the new document replaces the old one, chromedriver
            # answers this instead of "stale element reference" (seen with
            # Chromium 156 in a CI run): the old page is gone all the same.
            if "does not belong to the document" in (e.msg or ""):
                return True
            raise

    def arrived(d: Any) -> bool:
        return gone() and bool(d.find_elements(By.ID, expect) or d.find_elements(By.ID, "error"))

    WebDriverWait(drv, timeout).until(arrived, f"clicking #{button} led to no page")
    found = drv.find_elements(By.ID, expect)
    assert found, f"clicking #{button} led to: {drv.find_element(By.TAG_NAME, 'body').text}"
