"""`python -m bench.server_log`: a run page with a 50 MB log, opened in headless Chromium.

A real `polycrate workflows run` writes a 50 MB log (a script step printing 505,000 lines); a real
`polycrate serve` shows its run page; Debian's Chromium (through chromedriver) opens it, logged in as
a viewer. Measured: the time to first paint (the browser's own Paint Timing: `first-contentful-paint`),
the page's load time (navigation start to the load event, Navigation Timing) and its size, for the
paged page (`/runs/ID`, the newest 256 KiB of each step's log) and, as the baseline in the same run,
the page with the whole log (`/runs/ID?tail=...`, what the page was before the log was paged).
Results go to bench/server_log.json and a row of bench/SERVER.md, with the load average (the machine
is shared: figures are read against the baseline of the same run).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = 50_000_000

WORKSPACE = """name: biglog
blocks:
  - name: sh
workflows:
  - name: big
    steps:
      - {name: print, block: sh, action: big}
"""
BLOCK = f"""name: sh
version: 1.0.0
actions:
  - name: big
    script:
      - 'head -c {SIZE} /dev/zero | tr "\\\\0" x | fold -w 99'
      - echo "the last line"
"""


def open_page(driver, url: str) -> dict:
    driver.get(url)
    timing = driver.execute_script(
        "const t = performance.getEntriesByType('navigation')[0];"
        "const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');"
        "return {load: t.loadEventEnd - t.startTime, paint: p ? p.startTime : null,"
        " bytes: t.decodedBodySize || t.transferSize || t.encodedBodySize};")
    paint = timing["paint"]
    return {"first_paint_seconds": round(paint / 1000, 3) if paint is not None else None,
            "seconds": round(timing["load"] / 1000, 3), "bytes": timing["bytes"]}


def load_average() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def record_row(result: dict) -> None:
    """A row of bench/SERVER.md's table of the 50 MB log (the table is made on the first run)."""
    head = ("\n## A 50 MB log in Chromium\n\n`python -m bench.server_log`: a real run writes a 50 MB log; "
            "headless Chromium opens its run page (paged: the newest 256 KiB of each step) three times, then the "
            "page with the whole log once (the baseline, as the page was before paging).\n\n"
            "| when (UTC) | load avg | first paint (paged, best) | load (paged, best) | page bytes (paged) | "
            "load (whole log) | page bytes (whole) | whole / paged |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    path = HERE / "SERVER.md"
    text = path.read_text()
    if "## A 50 MB log in Chromium" not in text:
        text = text.rstrip("\n") + "\n" + head
    best = min(result["paged"], key=lambda p: p["seconds"])
    paints = [p["first_paint_seconds"] for p in result["paged"] if p.get("first_paint_seconds") is not None]
    whole = result["whole"]
    whole_load = f"{whole['seconds']} s" if whole.get("seconds") is not None else \
        f"gave up after {whole.get('gave_up_after')} s"
    row = (f"| {result['when']} | {result['loadavg_at_start']} / {result['loadavg_at_end']} | "
           f"{min(paints) if paints else '-'} s | {best['seconds']} s | {best['bytes']:,} | {whole_load} | "
           f"{format(whole['bytes'], ',') if whole.get('bytes') else '-'} | {result['ratio_whole_over_paged']}x |\n")
    path.write_text(text.rstrip("\n") + "\n" + row)


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from tests.conftest import run_cli
    from tests.server_fixtures import start_server

    base = Path(tempfile.mkdtemp(prefix="bench-log-"))
    loadavg_at_start = load_average()
    try:
        root = base / "ws"
        (root / "blocks" / "sh").mkdir(parents=True)
        (root / "workspace.poly").write_text(WORKSPACE)
        (root / "blocks" / "sh" / "block.poly").write_text(BLOCK)
        started = time.monotonic()
        r = run_cli("-w", str(root), "workflows", "run", "big", "--runtime", "local")
        assert r.returncode == 0, r.output[-2000:]
        print(f"the 50 MB run took {time.monotonic() - started:.1f} s", file=sys.stderr)
        server = start_server(base, [root])
        try:
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,900"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            driver.set_page_load_timeout(600)
            try:
                driver.get(server.url + "/login")
                driver.find_element(By.CSS_SELECTOR, "#username").send_keys("viewer")
                driver.find_element(By.CSS_SELECTOR, "#password").send_keys(server.passwords["viewer"])
                driver.find_element(By.CSS_SELECTOR, "#login").click()
                time.sleep(1)
                import httpx

                runs = httpx.get(server.url + "/api/v1/runs",
                                 headers={"Authorization": f"Bearer {server.tokens['viewer']}"}).json()["runs"]
                run_id = runs[0]["run_id"]
                paged = [open_page(driver, f"{server.url}/runs/{run_id}") for _ in range(3)]
                assert re.search("the last line", driver.page_source)
                print(json.dumps({"paged": paged}), file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    whole = open_page(driver, f"{server.url}/runs/{run_id}?tail={SIZE * 2}")
                except Exception as exc:  # chromedriver gives up after 120 s (a urllib3 or WebDriver error)
                    whole = {"seconds": None, "gave_up_after": round(time.monotonic() - started, 1),
                             "error": type(exc).__name__}
            finally:
                driver.quit()
        finally:
            server.stop()
        best = min(p["seconds"] for p in paged)
        result = {"when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "log_bytes": SIZE,
                  "loadavg_at_start": loadavg_at_start, "loadavg_at_end": load_average(),
                  "paged": paged, "whole": whole,
                  "ratio_whole_over_paged": round((whole.get("seconds") or whole["gave_up_after"]) / best, 1)
                  if best else None}
        (HERE / "server_log.json").write_text(json.dumps(result, indent=2) + "\n")
        record_row(result)
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
