"""The whole holder's appeal in a real headless Chromium (Debian's chromium
and chromium-driver, Selenium 4) against six real in-process nodes: from the
number's page to the code (read from the serving carrier's outbox file), the
statement (with a script in it, which never runs nor reaches a page), the
appeal's page; then the institute's decision by `markex decide`, until the
page says "applied on 6 of 6 nodes".

Screenshot: `MARKEX_SCREENSHOTS=docs/screenshots pytest
tests/test_web_appeal_browser.py` rewrites docs/screenshots/appeal-applied.png
(by default it goes to a tmp dir)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.connect import TlsConnect
from node.sms import OUTBOX_FILE, read_outbox
from node.web.app import create_app
from node.web.appeals import AppealRelay, install_relay
from node.web.ratelimit import RateLimit
from node.webcli import WebServer, node_reader
from tests.browser import chromium, click_to, needs_chromium, no_alert
from tests.test_cli import InProcessNet

NUMBER = "+8613812360001"
SCRIPT = '<script>alert("x")</script>'

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with chromium(1100) as drv:
        yield drv


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessNet, str]]:
    net = InProcessNet(tmp_path_factory.mktemp("appealweb") / "c", carriers=3, internet=2,
                       sync_interval=0.2)
    net.start_all()
    tls = TlsConnect()
    try:
        assert len(net.consortium.witnesses) == 6
        assert net.consortium.carrier_for(NUMBER) == "carrier-1"
        net.mark("internet-1", NUMBER, "fraud", 70, 3)
        net.mark("internet-2", NUMBER, "harassment", 60, 2)
        net.wait_converged(timeout=60)
        # carrier-2 runs this front end: the appeal goes to carrier-1, the number's carrier
        reader = node_reader(net.dir, net.consortium, "carrier-2", "carrier-2", tls)
        app = create_app(net.consortium, reader, rate=RateLimit(per_minute=0))
        install_relay(app, AppealRelay.tls(net.dir, net.consortium, "carrier-2", "carrier-2"))
        with WebServer(app) as srv:
            yield net, srv.url
    finally:
        tls.close()
        net.stop_all()



def test_the_holders_appeal_until_applied_on_every_node(
    driver: Any, six: tuple[InProcessNet, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    net, site = six
    driver.get(f"{site}/numbers/{NUMBER}")
    click_to(driver, "holder-appeal", "appeal-number")
    assert driver.find_element(By.ID, "appeal-number").get_attribute("value") == NUMBER
    click_to(driver, "send-code", "code-sent")
    assert NUMBER in driver.find_element(By.ID, "code-sent").text
    sms = [m for m in read_outbox(net.dir / "carrier-1" / OUTBOX_FILE) if m["to"] == NUMBER]
    assert len(sms) == 1
    code = re.search(r"\d{6}", sms[0]["text"]).group(0)  # type: ignore[union-attr]
    driver.find_element(By.ID, "code").send_keys(code)
    driver.find_element(By.ID, "statement").send_keys(f"这是我们公司的送餐电话 {SCRIPT}")
    click_to(driver, "file-appeal", "filed-id")
    aid = driver.find_element(By.ID, "filed-id").text
    assert re.fullmatch(r"[0-9a-f]{64}", aid)
    no_alert(driver)
    assert driver.find_element(By.ID, "status").get_attribute("data-status") == "pending"
    assert driver.find_element(By.ID, "deadline").text
    assert "送餐电话" not in driver.page_source and "alert(" not in driver.page_source

    net.wait_converged(timeout=60)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["decide", "--as", "institute", aid, "--uphold", "--reason",
                     "R07 a delivery firm's line", "--consortium", str(net.dir), "--json"]) == 0
    assert json.loads(out.getvalue())["issuer"] == "institute"

    page = f"{site}/appeals/{aid}"

    def applied(d: Any) -> bool:
        d.get(page)
        found = d.find_elements(By.ID, "applied")
        return bool(found) and "applied on 6 of 6 nodes" in found[0].text

    deadline = time.monotonic() + 90
    while not applied(driver):
        assert time.monotonic() < deadline, driver.find_element(By.TAG_NAME, "main").text
        time.sleep(0.5)
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "decided"))
    assert "institute" in driver.find_element(By.ID, "decided").text
    assert "R07" in driver.find_element(By.ID, "reason").text
    rows = driver.find_elements(By.CSS_SELECTOR, "#applied-table tr.ok")
    assert len(rows) == 6
    no_alert(driver)
    shots = Path(os.environ.get("MARKEX_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / "appeal-applied.png"
    driver.save_screenshot(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
