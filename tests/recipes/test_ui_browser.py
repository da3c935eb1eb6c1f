"""`radio-vlm ui` in a real browser: the server runs as a subprocess on a free loopback port,
headless Chromium (Debian's chromium + chromium-driver, driven by selenium) uploads a page,
asks a question, and the answer, the merge maps and the error table must appear; moving the
K slider must redraw them; picking a sample page must start over with it and its question.
Chromium may reach 127.0.0.1 only (--host-resolver-rules), so the
page provably needs nothing from the internet.

A screenshot is saved in the test's folder; to refresh the README's, after `make demo`:

    RADIO_VLM_UI_MODEL=runs/quickstart/runs/tome/stage3_sft \\
    RADIO_VLM_UI_SCREENSHOT=docs/ui.png pytest tests/recipes/test_ui_browser.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from recipes.ui.cli import sample_pages

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver; .ci/run installs them)",
    ),
]
REPO = Path(__file__).resolve().parents[2]
WAIT = 120  # s: a slow CI machine imports torch + gradio and loads the model in this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(chat_model_dir, tmp_path):
    """`radio-vlm ui` on a free loopback port; yields its URL, stops it afterwards."""
    model = os.environ.get("RADIO_VLM_UI_MODEL") or str(chat_model_dir)
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed below)
    argv = [sys.executable, "-m", "recipes.cli", "ui", "--pretrained", model]
    argv += ["--port", str(port), "--device", "cpu", "--max-new-tokens", "8"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the ui did not answer in time"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # loopback only
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_page_ask_and_see_the_answer_and_the_merge_maps(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT).until

    def text(selector: str) -> str:
        found = browser.find_elements(By.CSS_SELECTOR, selector)
        return found[0].text if found else ""

    def image_shown(elem_id: str) -> bool:
        imgs = browser.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
        return any((img.get_attribute("src") or "").strip() for img in imgs)

    page_image, question = sample_pages(64, count=1)[0]  # a held-out demo page, uploaded
    page_file = tmp_path / "page.png"
    page_image.save(page_file)
    started = time.monotonic()
    browser.get(server)
    upload = wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#page input[type=file]"))
    upload[0].send_keys(str(page_file))
    wait(lambda d: "visual tokens" in text("#page-cost"))
    assert "64x64 px, 8x8 = 64 patches" in text("#page-cost")
    for elem_id in ("map-tome", "map-avgpool", "map-unshuffle", "sizes"):
        wait(lambda d, e=elem_id: image_shown(e))
    table = text("#errors")
    assert "Encoder grid 8x8 = 64 patches" in table
    k = tokens_per_method(table)["ToMe"]
    assert tokens_per_method(table) == {"ToMe": k, "avg-pool": k, "pixel unshuffle": k}

    box = browser.find_element(By.CSS_SELECTOR, "#question textarea")
    box.send_keys(question.replace("\n", " "))
    browser.find_element(By.CSS_SELECTOR, "#ask").click()
    bot = '#chat [data-testid="bot"]'
    wait(lambda d: text(bot).strip())
    answer = settled(lambda: text(bot))  # the stream has ended
    assert question.split("\n")[0] in text('#chat [data-testid="user"]')

    shot = tmp_path / "ui.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        assert picture.size[0] >= 1000
    if target := os.environ.get("RADIO_VLM_UI_SCREENSHOT"):
        shutil.copyfile(shot, REPO / target)

    # the slider redraws the maps at another budget
    budget = text("#errors")
    number = browser.find_element(By.CSS_SELECTOR, "#k input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys("8", Keys.ENTER)
    wait(lambda d: text("#errors") != budget and tokens_per_method(text("#errors"))["ToMe"] == 8)
    wait(lambda d: text("#map-tome label") == "ToMe: 8 tokens")
    assert text("#map-avgpool label") == "avg-pool: 8 tokens"

    # picking a sample page starts over with that page and its question
    before = browser.find_element(By.CSS_SELECTOR, "#map-tome img").get_attribute("src")
    _, sample_question = sample_pages(64, count=2)[1]
    browser.find_element(By.CSS_SELECTOR, '[data-testid="dataset-cell-1-0"]').click()
    box = browser.find_element(By.CSS_SELECTOR, "#question textarea")
    wait(lambda d: box.get_attribute("value") == sample_question)
    wait(lambda d: d.find_element(By.CSS_SELECTOR, "#map-tome img").get_attribute("src") != before)
    wait(lambda d: not text(bot))  # a new page, a new conversation
    elapsed = time.monotonic() - started
    print(f"answer {answer!r}; browser steps took {elapsed:.1f} s")


def settled(read, quiet: float = 1.0, limit: float = WAIT) -> str:
    """``read()`` once it has not changed for ``quiet`` seconds."""
    last, since, deadline = read(), time.monotonic(), time.monotonic() + limit
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the answer kept changing"
        time.sleep(0.2)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


def tokens_per_method(table: str) -> dict[str, int]:
    """The tokens column of the error table as the browser shows it ("ToMe 16 96 0.2817")."""
    found = {}
    for line in table.splitlines():
        for method in ("ToMe", "avg-pool", "pixel unshuffle"):
            if line.startswith(method + " "):
                found[method] = int(line.removeprefix(method + " ").split()[0])
    return found
