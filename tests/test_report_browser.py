"""The HTML report in a real browser: headless Chromium through selenium + chromedriver.

Checks that the metrics table, the curves and every image render (no broken
image, no SEVERE console entry), that a sort header reorders the gallery and
that a click opens the full-size panel; saves screenshots under tmp_path.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_report import make_run

pytestmark = pytest.mark.browser

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


def _driver(tmp_path: Path):
    if not (Path(CHROMEDRIVER).is_file() or shutil.which("chromedriver")):
        msg = (f"chromedriver not found at {CHROMEDRIVER}: install Debian's chromium and chromium-driver "
               "(.ci/run does) or set CHROMEDRIVER")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(flag)
    for binary in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(binary).is_file():
            opts.binary_location = binary
            break
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    path = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    return webdriver.Chrome(service=Service(path), options=opts)


IMAGES_OK = """
var imgs = Array.prototype.slice.call(document.images);
imgs.forEach(function(i){ i.loading = 'eager'; });
return imgs.map(function(i){ return [i.getAttribute('src'), i.complete, i.naturalWidth]; });
"""


def _gallery_order(driver) -> list[str]:
    return driver.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('#gallery tbody tr'),"
        " function(r){ return r.dataset.id; });")


@pytest.mark.slow
def test_report_renders_in_chromium(shared, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from sml.report import build_report

    run = make_run(shared, tmp_path / "run", n_frames=5, unlabelled=1)
    index = build_report(run, show_progress=False)
    driver = _driver(tmp_path)
    try:
        driver.set_page_load_timeout(60)
        driver.get(index.resolve().as_uri())
        # metrics table with every method
        rows = driver.find_elements(By.CSS_SELECTOR, "#metrics tbody tr th")
        assert [r.text for r in rows] == ["sml", "max_logit", "msp"]
        assert driver.find_element(By.ID, "stats").is_displayed()
        assert not driver.find_elements(By.CSS_SELECTOR, "#gallery .warn")  # no frame lost its labels
        # every image, lazy ones included, loads (scroll to the end, then force eager loading)
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
        driver.execute_script(IMAGES_OK)
        WebDriverWait(driver, 30).until(
            lambda d: all(c and w > 0 for _, c, w in d.execute_script(IMAGES_OK)))
        images = driver.execute_script(IMAGES_OK)
        srcs = [s for s, _, _ in images]
        assert "img/curves.png" in srcs and "img/legend.png" in srcs
        assert sum("thumbs/" in s for s in srcs) == 6
        # sorting: AP of sml, worst first, then reversed; the unlabelled frame stays last
        before = _gallery_order(driver)
        header = driver.find_element(By.CSS_SELECTOR, '#gallery th[data-key="ap0"]')
        driver.execute_script("arguments[0].scrollIntoView();", header)
        header.click()
        asc = _gallery_order(driver)
        aps = driver.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#gallery tbody tr'),"
            " function(r){ return r.dataset.ap0; });")
        values = [float(v) for v in aps if v]
        assert asc != before and values == sorted(values) and aps[-1] == ""
        header.click()
        desc = _gallery_order(driver)
        assert desc[:5] == asc[:5][::-1] and desc[-1] == asc[-1]
        shot_top = tmp_path / "report_top.png"
        driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(shot_top))
        header.click()
        driver.execute_script("document.getElementById('gallery').scrollIntoView();")
        driver.save_screenshot(str(tmp_path / "report_gallery.png"))
        # a click on a thumbnail opens the full-size panel in the lightbox
        driver.find_element(By.CSS_SELECTOR, "#gallery a.full").click()
        WebDriverWait(driver, 15).until(lambda d: d.execute_script(
            "var i=document.querySelector('#lightbox.open img'); return i && i.complete && i.naturalWidth > 0;"))
        full_w = driver.execute_script("return document.querySelector('#lightbox img').naturalWidth;")
        assert full_w > 1000
        driver.save_screenshot(str(tmp_path / "report_lightbox.png"))
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    for name in ("report_top.png", "report_gallery.png", "report_lightbox.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    print(f"screenshots: {tmp_path / 'report_top.png'}, {tmp_path / 'report_gallery.png'}, "
          f"{tmp_path / 'report_lightbox.png'}")
    out = os.environ.get("SML_SCREENSHOT_DIR")
    if out:  # keep a copy where a person can look at it
        Path(out).mkdir(parents=True, exist_ok=True)
        for name in ("report_top.png", "report_gallery.png", "report_lightbox.png"):
            shutil.copy(tmp_path / name, Path(out) / name)


NO_OVERFLOW = """
var w = document.documentElement.clientWidth, out = [];
document.querySelectorAll('body *').forEach(function(e){
  var r = e.getBoundingClientRect();
  if (r.width && r.right > w + 1 && !e.closest('.scroll')) out.push(e.tagName + '#' + e.id + ' ' + Math.round(r.right));
});
return [document.documentElement.scrollWidth, w, out.slice(0, 10)];
"""


@pytest.mark.slow
def test_report_with_diagnostics_at_1280_px(shared, tmp_path):
    """The diagnostics section, component columns and five methods: every image loads, nothing sticks out
    of a 1280 px wide window, the settings stay folded until opened."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from sml.report import build_report
    from sml.utils.atomic import write_json
    from test_diagnostics import _person_case
    from test_report import _with_components

    run = make_run(shared, tmp_path / "run", n_frames=2, unlabelled=0)
    m = json.loads((run / "metrics.json").read_text())
    for extra in ("entropy", "energy"):  # five methods, as `sml eval` evaluates by default
        m["methods"][extra] = dict(m["methods"]["msp"], settings={"temperature": 1.0, "long": "x" * 300})
    write_json(run / "metrics.json", m)
    _with_components(run)
    _person_case(True, sml=True).save(run / "diagnostics.json")
    index = build_report(run, show_progress=False)
    driver = _driver(tmp_path)
    try:
        driver.set_window_size(1280, 1000)
        driver.set_page_load_timeout(60)
        driver.get(index.resolve().as_uri())
        assert driver.execute_script("return window.innerWidth;") == 1280
        heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#metrics thead th")]
        assert heads[1] == "AUROC %" and heads[-3:] == ["sIoU %", "PPV %", "mean F1 %"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")) == 5
        settings = driver.find_element(By.ID, "settings")
        assert settings.get_attribute("open") is None  # folded away
        reading = driver.find_element(By.ID, "diag-reading")
        assert reading.is_displayed() and "predicted as person" in reading.text
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
        driver.execute_script(IMAGES_OK)
        WebDriverWait(driver, 30).until(lambda d: all(c and w > 0 for _, c, w in d.execute_script(IMAGES_OK)))
        srcs = [s for s, _, _ in driver.execute_script(IMAGES_OK)]
        assert "img/diagnostics.png" in srcs and "img/curves.png" in srcs
        width, natural = driver.execute_script(
            "var i = document.getElementById('diagnostics-img'); return [i.getBoundingClientRect().width, i.naturalWidth];")
        assert abs(width - natural / 1.5) <= 1 and width <= 1280  # 150 dpi drawing shown at 100 dpi
        scroll_w, client_w, sticking_out = driver.execute_script(NO_OVERFLOW)
        assert scroll_w <= client_w and not sticking_out, (scroll_w, client_w, sticking_out)
        settings.find_element(By.TAG_NAME, "summary").click()  # opened, long settings still wrap
        scroll_w, client_w, sticking_out = driver.execute_script(NO_OVERFLOW)
        assert scroll_w <= client_w and not sticking_out, sticking_out
        driver.execute_script("document.getElementById('sec-diagnostics').scrollIntoView();")
        driver.save_screenshot(str(tmp_path / "report_diagnostics.png"))
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    assert (tmp_path / "report_diagnostics.png").stat().st_size > 10_000
    out = os.environ.get("SML_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report_diagnostics.png", Path(out) / "report_diagnostics.png")
