#!/usr/bin/env python3
"""edge-agent's web UI in a real browser: Debian's chromium, driven through
chromedriver by selenium (pinned in tests/peers/requirements.txt).

    ui_browser.py PARAMS_JSON

PARAMS_JSON: {"url": "http://127.0.0.1:PORT", "guarded_url": "https://127.0.0.1:PORT",
"out_dir": DIR, "live_signal": NAME, "bad_tag": NAME, "script_tag": NAME,
"script_text": TEXT, "trend_alert": ID}

Run by tests/tests/web_ui_browser.rs against a real agent (sim plant, a pymodbus
peer that was stopped, a trend alert). Prints one `ok ...` line per check and a
screenshot per page into out_dir; exits 1 at the first failed check.
"""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

P = json.loads(sys.argv[1])
OUT = P["out_dir"]
os.makedirs(OUT, exist_ok=True)


def fail(msg):
    print("FAILED: " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok " + msg, flush=True)


def browser():
    o = Options()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000", "--ignore-certificate-errors"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def wait(d, what, cond, secs=20):
    try:
        return WebDriverWait(d, secs, poll_frequency=0.2).until(lambda _: cond())
    except Exception as e:  # a timeout, with what was awaited
        shot(d, "failed")
        fail(f"timed out waiting for {what}: {e!r}")


def shot(d, name):
    d.save_screenshot(os.path.join(OUT, name + ".png"))


def cell(d, tag, cls):
    rows = d.find_elements(By.CSS_SELECTOR, f'tr[data-tag="{tag}"] td.{cls}')
    return rows[0].text if rows else None


def no_dialog(d):
    try:
        a = d.switch_to.alert
        fail(f"a dialog opened: {a.text!r} (a payload ran as script)")
    except NoAlertPresentException:
        pass


def csp_violations(d):
    return [e["message"] for e in d.get_log("browser") if "Content Security Policy" in e["message"]]


def main():
    d = browser()
    try:
        url = P["url"]
        # The overview: drivers with their state, the cards.
        d.get(url + "/#/")
        wait(d, "the drivers table", lambda: d.find_elements(By.CSS_SELECTOR, 'tr[data-driver="plant"]'))
        wait(d, "the live indicator", lambda: "on" in d.find_element(By.ID, "live").get_attribute("class"))
        state = d.find_element(By.CSS_SELECTOR, 'tr[data-driver="plant"] td:nth-child(3)').text
        if state != "running":
            fail(f"plant is {state!r}")
        shot(d, "overview")
        ok("the overview loads, drivers with their state, live")

        # A live value changes on screen without a reload.
        d.get(url + "/#/signals?filter=" + P["live_signal"])
        live = P["live_signal"]
        first = wait(d, "a live value", lambda: cell(d, live, "value") not in (None, "—") and cell(d, live, "value"))
        d.execute_script("window.__same_page = 42;")
        wait(d, "the value to change", lambda: cell(d, live, "value") not in (first, None), secs=15)
        if d.execute_script("return window.__same_page") != 42:
            fail("the page was reloaded")
        ok(f"{live} changed on screen from {first} to {cell(d, live, 'value')} without a reload")

        # A tag whose peer is gone: bad (or stale) with its reason; and a payload with
        # markup shows as the characters it is.
        d.get(url + "/#/signals?filter=line1")
        bad, script = P["bad_tag"], P["script_tag"]
        wait(d, "the Modbus tags", lambda: cell(d, bad, "quality") and cell(d, script, "value"))
        q, reason = cell(d, bad, "quality"), cell(d, bad, "reason")
        if q not in ("bad", "stale") or not reason:
            fail(f"{bad} is {q!r} ({reason!r}), expected bad or stale with a reason")
        ok(f"{bad} shows {q} with the reason {reason!r}")
        shown = cell(d, script, "value")
        if shown != P["script_text"]:
            fail(f"{script} shows {shown!r}, expected the text {P['script_text']!r}")
        if d.find_elements(By.CSS_SELECTOR, "#tags tbody script"):
            fail("a <script> element was created from device data")
        no_dialog(d)
        shot(d, "signals")
        ok(f"{script} shows {shown!r} as text; no script element, no dialog")

        # The signal page: the history plot.
        d.get(url + "/#/signal/" + live)
        wait(d, "the signal plot", lambda: d.execute_script(
            "const i = document.querySelector('img.plot'); return i && i.complete && i.naturalWidth > 0"))
        wait(d, "the detectors' evaluation plots", lambda: d.execute_script(
            "const i = [...document.querySelectorAll('[data-detector] img')];"
            "return i.length >= 1 && i.every(x => x.complete && x.naturalWidth > 0)"))
        wait(d, "the window's feature plot", lambda: d.execute_script(
            "const i = document.querySelector('[data-window] img');"
            "return i && i.complete && i.naturalWidth > 0 && i.src.includes('feature=mean')"))
        d.execute_script(
            "const s = document.querySelector('[data-window] select'); s.value = 'kurtosis';"
            "s.dispatchEvent(new Event('change'))")
        wait(d, "another window feature, read by no detector", lambda: d.execute_script(
            "const i = document.querySelector('[data-window] img');"
            "return i && i.complete && i.naturalWidth > 0 && i.src.includes('feature=kurtosis')"))
        d.find_element(By.CSS_SELECTOR, "[data-span=long]").click()
        wait(d, "the detectors' evaluations over hours", lambda: d.execute_script(
            "const i = [...document.querySelectorAll('[data-detector] img')];"
            "return i.length >= 1 && i.every(x => x.src.includes('span=long') && x.complete && x.naturalWidth > 0)"))
        shot(d, "signal")
        ok(f"{live}: history plot, its detectors' evaluations (last ones and hours) and any window feature over hours shown")

        # The trend alert's evidence: the plot with the limit, the fitted curve, the
        # predicted crossing and its interval.
        d.get(url + "/#/alert/" + P["trend_alert"])
        wait(d, "the evidence plot", lambda: d.execute_script(
            "const i = document.getElementById('evidence'); return i && i.complete && i.naturalWidth > 0"))
        svg = d.execute_async_script(
            "const done = arguments[0];"
            "fetch(document.getElementById('evidence').src).then(r => r.text()).then(done, e => done(String(e)));")
        for want in ("limit 85", "predicted crossing", 'class="mean"', 'class="eta-range"', "between "):
            if want not in svg:
                fail(f"the evidence plot has no {want!r}")
        page = d.find_element(By.TAG_NAME, "main").text
        for want in ("trend", "predicted time to limit", "interval", "fitted curve", "Window features"):
            if want not in page:
                fail(f"the alert page has no {want!r}:\n{page}")
        shot(d, "alert")
        ok("the trend alert's page shows the plot with the limit, the fitted curve, the predicted crossing and its interval")

        # The models page: versions, training quality, the binding's scores over hours.
        d.get(url + "/#/models")
        wait(d, "the model's version history", lambda: d.execute_script(
            "return !!document.querySelector('[data-version-event=loaded]')"))
        wait(d, "the binding's scores over hours", lambda: d.execute_script(
            "const i = document.querySelector('[data-binding=\"pump/wear\"] img');"
            "return i && i.complete && i.naturalWidth > 0"))
        page = d.find_element(By.TAG_NAME, "main").text
        for want in ("bearing_rf: versions", "loaded", "Training quality", "scores over hours"):
            if want not in page:
                fail(f"the models page has no {want!r}:\n{page}")
        shot(d, "models")
        ok("the models page shows the version history, the training quality and the binding's scores over hours")

        violations = csp_violations(d)
        if violations:
            fail(f"the page broke its own CSP: {violations}")
        ok("no Content-Security-Policy violation")

        # A UI bound with users and TLS refuses a request without credentials.
        g = P["guarded_url"]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            urllib.request.urlopen(g + "/api/status", context=ctx, timeout=10)
            fail("the guarded UI answered without credentials")
        except urllib.error.HTTPError as e:
            if e.code != 401:
                fail(f"the guarded UI answered {e.code}, expected 401")
        d.get(g + "/")
        time.sleep(1)
        if d.find_elements(By.CSS_SELECTOR, "tr[data-driver]") or "Drivers" in d.page_source:
            fail("the guarded UI rendered without credentials")
        shot(d, "guarded")
        ok("the guarded UI refuses a browser and a client without credentials (401)")
    finally:
        d.quit()


main()
