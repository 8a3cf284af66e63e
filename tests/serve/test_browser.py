"""`uscl serve`'s page in a real headless browser (Debian's chromium + chromedriver through selenium; no browser
is downloaded): upload a synth clip, read the prediction, see the overlay load; upload a text file, see the error.
Skips, saying why, when chromium, chromedriver or selenium is missing (`.ci/run` installs them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

CHROMIUM = next((p for p in (os.environ.get("USCL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
CHROMEDRIVER = next((p for p in (os.environ.get("USCL_CHROMEDRIVER"), "/usr/bin/chromedriver",
                                 shutil.which("chromedriver")) if p and os.path.exists(p)), None)
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,1500")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium "
                                    "(the test extra: pip install -e '.[test]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("the browser test needs Debian's chromium and chromedriver (apt-get install chromium "
                    f"chromium-driver); found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)  # no selenium-manager
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, test, timeout=90, what="the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(test, message=f"timed out waiting for {what}")


def _visible(driver, id_):
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.ID, id_)
    return el if el.is_displayed() else False


def test_page_predicts_an_uploaded_clip_and_shows_errors(server, serve_data, clip_of, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    _wait(browser, lambda d: "classification model" in d.find_element(By.ID, "model-info").text, 20, "the model")
    clip = clip_of(serve_data)
    browser.find_element(By.ID, "file-input").send_keys(str(clip))
    predicted = _wait(browser, lambda d: _visible(d, "predicted-class"), what="#predicted-class").text
    api = browser.execute_script("return fetch('/api/jobs/' + arguments[0]).then(r => r.status)", "x")
    assert api == 404
    assert predicted in ("covid", "pneumonia", "regular")
    bars = browser.find_elements(By.CSS_SELECTOR, "#probabilities .bar")
    assert len(bars) == 3
    for img in ("overlay-img", "sheet-img", "plot-img"):
        _wait(browser, lambda d: d.execute_script(
            "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0", img),
            20, f"#{img} to load")
    assert browser.find_element(By.ID, "download-json").get_attribute("href").endswith("/predictions.json")
    assert browser.find_element(By.ID, "download-csv").get_attribute("href").endswith("/frames.csv")
    shot = Path(os.environ.get("USCL_SERVE_SCREENSHOT") or tmp_path / "serve_result.png")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    browser.find_element(By.ID, "file-input").send_keys(str(text))
    error = _wait(browser, lambda d: _visible(d, "error"), 30, "#error").text
    assert "415" in error and "not a video, DICOM or image" in error
    assert not browser.find_element(By.ID, "result").is_displayed()
    browser.save_screenshot(str(shot.with_name(shot.stem + "_error.png")))

    browser.find_element(By.ID, "file-input").send_keys(str(clip))  # and it goes on
    _wait(browser, lambda d: _visible(d, "predicted-class"), what="#predicted-class again")
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_page_shows_a_segmentation_models_mask_overlay(serve_data, clip_of, live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    with live_server(serve_data / "seg" / "model.safetensors") as s:
        browser.get(s.url + "/")
        browser.find_element(By.ID, "file-input").send_keys(str(clip_of(serve_data)))
        _wait(browser, lambda d: _visible(d, "predicted-class"), what="#predicted-class")
        _wait(browser, lambda d: d.execute_script(
            "const i = document.getElementById('overlay-img'); return i.complete && i.naturalWidth > 0"),
            20, "the mask overlay to load")
        assert browser.find_element(By.ID, "overlay-caption").text == "mask overlay"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#probabilities .bar")) == 2  # lesion, pleura
        shot = os.environ.get("USCL_SERVE_SCREENSHOT")
        browser.save_screenshot(str(Path(shot).with_name(Path(shot).stem + "_segment.png") if shot
                                    else tmp_path / "serve_segment.png"))
