"""A real headless Chromium for the browser tests (Debian's chromium and
chromium-driver, driven by Selenium 4; .ci/run installs them): the skip
marker, the driver and the check that no script ran an alert."""

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
