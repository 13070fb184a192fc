"""`reasonrag ui` in a real browser (headless Chromium driven by Selenium): ask, watch the scored steps and
the answer arrive, reject a step, browse and compare predictions files; a corpus cannot inject markup."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the page needs the serve extra: pip install "reasonrag[serve]"')
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="the browser test needs selenium (the test extra)"
)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from reasonrag.cli.main import main  # noqa: E402

DATA = Path(__file__).parent / "data"
INJECTED = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and its driver: apt-get install chromium chromium-driver (CI installs them)",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny corpus with one passage whose text is markup that would run if the page trusted it."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = (DATA / "tiny_corpus.jsonl").read_text().splitlines()
    evil = f"The Quiet Orchard is a 1994 novel by Tomas Varga {INJECTED}."
    lines.append(json.dumps({"id": "Orchard notes", "contents": f"Orchard notes {INJECTED}\n{evil}"}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def page(corpus, tmp_path_factory):
    """`reasonrag ui` on a free port, as a user starts it."""
    env = dict(os.environ, REASONRAG_CACHE=str(tmp_path_factory.mktemp("cache")))
    cmd = [sys.executable, "-m", "reasonrag", "ui", "--corpus", str(corpus), "-k", "3", "--max-hops", "2"]
    proc = subprocess.Popen([*cmd, "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    url = None
    deadline = time.monotonic() + 180
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "reasonrag ui exited before serving"
        found = re.search(r"(http://\S+/) ", line)
        url = found.group(1) if found else None
    assert url, "reasonrag ui did not say where the page is"
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(browser, condition, seconds: float = 120):
    return WebDriverWait(browser, seconds).until(condition)


def test_ask_watch_the_scored_steps_and_reject_one(page, browser):
    browser.get(page)
    browser.find_element(By.ID, "question").send_keys("Who wrote the novel The Quiet Orchard?")
    browser.find_element(By.ID, "ask-button").click()
    answer = _wait(browser, EC.visibility_of_element_located((By.ID, "answer-text")))
    assert answer.text == "Tomas Varga"
    steps = browser.find_elements(By.CSS_SELECTOR, "#steps li.step")
    assert len(steps) >= 3
    heads = [s.find_element(By.CSS_SELECTOR, ".stage").text for s in steps[:3]]
    assert heads == ["1. retrieve", "2. extract", "3. synthesize"]
    assert all(re.fullmatch(r"\d\.\d\d", s.find_element(By.CSS_SELECTOR, ".score-value").text) for s in steps)
    # The corpus's markup is shown as text and never runs.
    assert browser.execute_script("return window.pwned") is None
    assert INJECTED in browser.find_element(By.ID, "steps").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#steps img, #steps script")

    if os.environ.get("REASONRAG_SCREENSHOT"):
        browser.save_screenshot(os.environ["REASONRAG_SCREENSHOT"])
    before = [s.find_element(By.CSS_SELECTOR, ".action").text for s in steps]
    reject = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button.reject") if b.is_enabled())
    number = int(
        reject.find_element(By.XPATH, "./ancestor::li")
        .find_element(By.CSS_SELECTOR, ".stage")
        .text.split(".")[0]
    )
    reject.click()
    _wait(browser, EC.text_to_be_present_in_element((By.ID, "status"), "1 backtrack(s)"))
    banner = browser.find_element(By.CSS_SELECTOR, "#steps li.backtrack").text
    assert f"back to step {number}" in banner and "rejected by the user" in banner
    after = [
        s.find_element(By.CSS_SELECTOR, ".action").text
        for s in browser.find_elements(By.CSS_SELECTOR, "#steps li.step")
    ]
    assert after[: number - 1] == before[: number - 1] and after[number - 1] != before[number - 1]


def test_open_and_compare_predictions_files(page, browser, corpus, tmp_path):
    files = []
    for extra in ([], ["--no-prm"]):
        out = tmp_path / f"predictions{len(files)}.jsonl"
        args = [
            "eval",
            "--corpus",
            str(corpus),
            "--questions",
            str(DATA / "tiny_questions.jsonl"),
            "--split",
            "dev",
        ]
        assert (
            main([*args, "-k", "3", "--max-hops", "2", "--no-progress", "--predictions", str(out), *extra])
            == 0
        )
        files.append(out)
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    browser.get(page)
    browser.find_element(By.ID, "tab-predictions").click()
    browser.find_element(By.ID, "file-a").send_keys(str(files[0]))
    rows = _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#questions tr.question"))
    assert len(rows) == len(records)
    shown = [r.find_element(By.CSS_SELECTOR, "td").text for r in rows]
    wrong = [r["question"] for r in records if r["em"] < 1]
    assert shown[: len(wrong)] == sorted(wrong, key=lambda q: shown.index(q))  # wrong answers first
    assert all(r.find_elements(By.CSS_SELECTOR, "svg.chart rect") for r in rows)  # each path's step scores

    browser.find_element(By.ID, "file-b").send_keys(str(files[1]))
    _wait(browser, EC.visibility_of_element_located((By.ID, "head-b")))
    assert "on the 2 questions of both files" in browser.find_element(By.ID, "summary").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#questions tr.question")
    assert all(len(r.find_elements(By.CSS_SELECTOR, "td")) == 4 for r in rows)
    rows[0].click()
    detail = browser.find_element(By.CSS_SELECTOR, "#questions tr.detail:not([hidden])")
    assert len(detail.find_elements(By.CSS_SELECTOR, "h3")) == 2  # the two paths side by side

    score = browser.find_element(By.ID, "filter-score")
    score.clear()
    score.send_keys("0")  # no step scores 0 or less: nothing left to show
    _wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, "#questions tr.question"))
