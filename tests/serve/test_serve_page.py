"""The web page at ``/`` in a real headless browser (Debian's chromium through selenium; nothing downloads a
browser): token, paste a document, live progress to ready, icl beside lift+icl, a file upload."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import DOCS, TOKEN, Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="needs Debian's chromium and chromedriver (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_server(tiny_model_dir, tmp_path_factory):
    s = Server(tiny_model_dir, tmp_path_factory.mktemp("serve-page")).start()
    yield s
    s.stop()


def wait_for(fn, timeout: float = 120.0, every: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rows(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#documents tr.doc')).map(tr => ({id: tr.dataset.id, "
        "status: tr.dataset.status, title: tr.cells[0].textContent, "
        "progress: tr.querySelector('.progress-text').textContent}))")


def test_page_paste_watch_progress_ask_and_upload(browser, page_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    s = page_server
    browser.get(s.url + "/")
    assert browser.title == "liftlm serve"
    # the server wants a token: the page says so and opens the token box
    wait_for(lambda: "access token" in browser.find_element(By.ID, "message").text, 30, what="the 401 hint")
    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN + Keys.TAB)
    wait_for(lambda: browser.find_element(By.ID, "message").text == "" or
             "access token" not in browser.find_element(By.ID, "message").text, 10, what="the hint to go")

    text = DOCS[0] + " The keeper's name was Ansel Brannock."
    browser.find_element(By.ID, "doc-text").send_keys(text)
    browser.find_element(By.ID, "doc-title").send_keys("Varnholm ledger")
    browser.find_element(By.ID, "doc-settings").send_keys('{"epochs": 100}')  # seconds of training: the page shows it live
    browser.find_element(By.ID, "submit-doc").click()

    seen = []

    def ready():
        for r in rows(browser):
            if r["title"] == "Varnholm ledger":
                if not seen or seen[-1] != (r["status"], r["progress"]):
                    seen.append((r["status"], r["progress"]))
                return r if r["status"] in ("ready", "failed") else None
        return None

    row = wait_for(ready, 180, what="the document to be ready in the page")
    assert row["status"] == "ready", seen
    assert any(st == "training" and "step" in p for st, p in seen), seen  # live progress was shown
    steps = [int(p.split("step ")[1].split("/")[0]) for st, p in seen if st == "training" and "step " in p]
    assert steps == sorted(steps)
    assert row["progress"].startswith("ready in")

    question = browser.find_element(By.ID, "question")
    question.send_keys("What was the keeper's name?")
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("8")
    browser.find_element(By.ID, "ask").click()
    wait_for(lambda: browser.execute_script(
        "return document.getElementById('answer-icl').dataset.done && "
        "document.getElementById('answer-lift').dataset.done"), 120, what="both answers")
    shown = {m: browser.execute_script(f"return document.getElementById('{e}').textContent")
             for m, e in (("icl", "answer-icl"), ("lift+icl", "answer-lift"))}
    for mode, answer in shown.items():
        r = s.ask(row["id"], "What was the keeper's name?", mode=mode, max_tokens=8)
        assert r.status_code == 200 and answer == r.json()["choices"][0]["message"]["content"], mode

    # a file upload, and the same text again: known, no second training
    f = tmp_path / "museum.txt"
    f.write_text(DOCS[1], encoding="utf-8")
    browser.find_element(By.ID, "doc-text").clear()
    browser.find_element(By.ID, "doc-settings").clear()
    browser.find_element(By.ID, "doc-title").clear()
    browser.find_element(By.ID, "doc-file").send_keys(str(f))
    browser.find_element(By.ID, "submit-doc").click()
    uploaded = wait_for(lambda: next((r for r in rows(browser) if r["title"] == "museum.txt"), None), 60,
                        what="the uploaded file's row")
    job = httpx.get(f"{s.url}/v1/documents/{uploaded['id']}", headers=s.headers, timeout=30).json()
    assert job["title"] == "museum.txt" and job["tokens"] > 10
    wait_for(lambda: next((r for r in rows(browser) if r["title"] == "museum.txt" and r["status"] == "ready"), None),
             180, what="the upload to be ready")

    browser.find_element(By.ID, "doc-file").send_keys(str(f))
    browser.find_element(By.ID, "submit-doc").click()
    wait_for(lambda: "already known" in browser.find_element(By.ID, "message").text, 30, what="'already known'")
    assert len([r for r in rows(browser) if r["title"] == "museum.txt"]) == 1

    # bad input shows the server's error and adds nothing
    before = len(rows(browser))
    browser.find_element(By.ID, "doc-text").send_keys("   ")
    browser.find_element(By.ID, "submit-doc").click()
    wait_for(lambda: "empty" in browser.find_element(By.ID, "message").text, 30, what="the empty-document error")
    assert len(rows(browser)) == before
