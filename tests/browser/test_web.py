"""`polycrate serve` in a real headless Chromium (Debian's chromium, driven through its chromedriver).

The server is the real `polycrate serve` on loopback; the runs it shows were made by real `polycrate
workflows run` processes. Each test saves a screenshot of the page it checks into docs/screenshots/.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli
from tests.server_fixtures import SECRET, apply_schedules, make_workspace, seed_runs, start_server, wait_for

pytestmark = pytest.mark.browser

SHOTS = REPO / "docs" / "screenshots"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    ops = make_workspace(tmp / "ops", "ops")
    seed_runs(ops)
    for args in (("green",), ("nightly", "--step", "backup"), ("nightly",), ("nightly", "--step", "backup")):
        r = run_cli("-w", str(ops), "workflows", "run", *args)
        assert r.returncode == (1 if args == ("nightly",) else 0), r.output
    units = apply_schedules(ops, tmp / "units")
    server = start_server(tmp, [ops], extra_args=("--schedule-dest", str(units)))
    yield server
    server.stop()


def settle(predicate, what: str = "the page"):
    """wait_for on the page: an element replaced while the page navigates or updates is read again."""
    from selenium.common.exceptions import WebDriverException

    def safely():
        try:
            return predicate()
        except WebDriverException:
            return None

    return wait_for(safely, what=what)


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 40, 500), 2400))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1280, 900)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def log_in(driver, served, role: str) -> None:
    driver.get(served.url + "/login")
    css(driver, "#username").send_keys(role)
    css(driver, "#password").send_keys(served.passwords[role])
    css(driver, "#login").click()
    settle(lambda: css_all(driver, "#whoami"), what="the logged-in page")
    assert css(driver, "#whoami").text == f"{role} ({role})"


def fetch(driver, method: str, path: str, headers: dict | None = None, body: str | None = None) -> dict:
    """A request from the page's own JavaScript context (same origin, its cookies)."""
    return driver.execute_async_script(
        "const [method, path, headers, body, done] = arguments;"
        "fetch(path, {method, headers, body, credentials: 'same-origin'})"
        ".then(async r => done({status: r.status, text: await r.text()}))"
        ".catch(e => done({status: -1, text: String(e)}));",
        method, path, headers or {}, body)


def test_log_in_and_see_the_overview(served, browser):
    browser.get(served.url + "/")
    assert css(browser, "h1").text == "Log in"  # anonymous: the login page (status 401)
    shot(browser, "login")
    log_in(browser, served, "viewer")
    assert css(browser, "h1").text == "Overview"
    rows = {r.get_attribute("data-workflow"): r for r in css_all(browser, "tr[data-workflow]")}
    assert set(rows) >= {"ops/nightly", "ops/green", "ops/slow", "ops/guarded", "ops/stale"}
    assert "failed" in rows["ops/nightly"].text and "succeeded" in rows["ops/green"].text
    assert "*-*-* 02:00:00" in rows["ops/green"].text and "in " in rows["ops/green"].text  # next run
    assert "overdue" in rows["ops/stale"].get_attribute("class") and "never succeeded" in rows["ops/stale"].text
    stale_success = css_all(rows["ops/stale"], "td")[3].text  # said once: "overdue", then why, not "overdue never"
    assert stale_success.split() == ["●", "overdue", "never", "succeeded"], stale_success
    assert "overdue" not in rows["ops/green"].get_attribute("class")
    shot(browser, "overview")


def test_open_a_failed_run_and_read_its_failing_task(served, browser):
    log_in(browser, served, "viewer")
    browser.get(served.url + "/runs?status=failed")
    links = css_all(browser, "tr[data-run] a")
    assert links and all("failed" in r.text for r in css_all(browser, "tr[data-run]"))
    shot(browser, "runs")
    links[0].click()
    settle(lambda: css_all(browser, "#failure"), what="the run page")
    assert css(browser, "#failed-task").text == "check free disk space"
    assert css(browser, "#failed-host").text == "localhost"
    assert "disk /var is full on purpose" in css(browser, "#failed-message").text
    assert "localhost" in css(browser, "#hosts").text
    log = css(browser, "#log").text
    assert "hello from backup" in log and SECRET not in browser.page_source
    shot(browser, "run-failed")


def test_follow_a_running_runs_log_as_lines_arrive(served, browser):
    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    run = subprocess.Popen([sys.executable, "-m", "polycrate", "-w", str(ops), "workflows", "run", "slow"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log_in(browser, served, "viewer")
        # the run is the newest of workflow slow, running
        import httpx

        api = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['viewer']}"})
        run_id = settle(lambda: next((r["run_id"] for r in api.get("/api/v1/runs", params={"status": "running"}).json()["runs"]
                                        if r["name"] == "slow"), None), what="the slow run")
        browser.get(f"{served.url}/runs/{run_id}")
        browser.execute_script("window.__samePage = true;")  # gone if the page reloaded
        settle(lambda: "first line of the slow step" in css(browser, "#log").text, what="the first line")
        assert "second line after the gate" not in css(browser, "#log").text
        (ops / "gate").touch()
        settle(lambda: "second line after the gate" in css(browser, "#log").text, what="a line arriving live")
        assert browser.execute_script("return window.__samePage === true")
        shot(browser, "run-live")
        (ops / "gate2").touch()
        # the run page finishes live: at the end event it reads as the ended run (steps, summary), not live
        settle(lambda: not css_all(browser, "#log[data-events]") and "succeeded" in css(browser, "#run-status").text,
               what="the page of the ended run")
        assert "done" in css(browser, "#log").text
        assert "succeeded" in css(browser, "tr[data-step=wait]").text
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_launch_a_workflow_as_operator_and_watch_it_finish(served, browser):
    log_in(browser, served, "operator")
    browser.get(served.url + "/workspaces/ops/workflows/guarded")
    assert "really touch production?" in css(browser, "fieldset.prompts").text
    css(browser, "#launch").click()  # the prompt is not confirmed: the browser refuses the form (required)
    assert "/workflows/guarded" in browser.current_url and css_all(browser, "#launch")
    browser.refresh()  # clears the browser's "please check this box" bubble before the screenshot
    css(browser, "input[name=confirm-0]").click()
    shot(browser, "workflow-launch")
    css(browser, "#launch").click()
    settle(lambda: "/runs/" in browser.current_url, what="the new run's page")
    run_id = browser.current_url.rsplit("/", 1)[1]
    settle(lambda: (browser.refresh() or True) and "succeeded" in css(browser, "#run-status").text,
             what="the launched run to succeed")
    assert css(browser, "#run-user").text == "web:operator"
    shot(browser, "run-launched")
    shown = run_cli("-w", str(served.workspaces[0]), "runs", "show", run_id)
    assert "by web:operator@" in shown.stdout
    # the chart of the workflow now has a bar for it
    browser.get(served.url + "/workspaces/ops/workflows/nightly")
    assert len(css_all(browser, "#chart svg rect[data-status=failed]")) == 2
    assert len(css_all(browser, "#chart svg rect[data-status=succeeded]")) == 2
    shot(browser, "workflow-chart")


def test_a_viewer_is_refused(served, browser):
    log_in(browser, served, "viewer")
    browser.get(served.url + "/workspaces/ops/workflows/green")
    assert not css_all(browser, "#launch") and not css_all(browser, "#launch-form")
    csrf = css(browser, "form.whoami input[name=csrf]").get_attribute("value")
    answer = fetch(browser, "POST", "/workspaces/ops/workflows/green/launch",
                   {"Content-Type": "application/x-www-form-urlencoded"}, f"csrf={csrf}")
    assert answer["status"] == 403 and "needs the operator role" in answer["text"]
    for path in ("/audit", "/admin"):
        browser.get(served.url + path)
        assert css(browser, "h1").text == "Not allowed"


def test_a_post_without_the_csrf_token_is_refused(served, browser):
    log_in(browser, served, "operator")
    browser.get(served.url + "/workspaces/ops/workflows/green")
    before = len(css_all(browser, "table.grid tbody tr"))
    answer = fetch(browser, "POST", "/workspaces/ops/workflows/green/launch",
                   {"Content-Type": "application/x-www-form-urlencoded"}, "check=yes")
    assert answer["status"] == 403 and "CSRF" in answer["text"]
    answer = fetch(browser, "POST", "/api/v1/workspaces/ops/workflows/green/runs",
                   {"Content-Type": "application/json"}, "{}")
    assert answer["status"] == 403 and "CSRF" in answer["text"]
    browser.refresh()
    assert len(css_all(browser, "table.grid tbody tr")) == before  # nothing was launched


def test_an_api_token_works_and_a_wrong_one_does_not(served, browser):
    browser.get(served.url + "/login")  # a page of the server's origin, no session
    good = fetch(browser, "GET", "/api/v1/runs", {"Authorization": f"Bearer {served.tokens['viewer']}"})
    assert good["status"] == 200 and '"workspace": "ops"' in good["text"].replace('":"', '": "')
    wrong = fetch(browser, "GET", "/api/v1/runs", {"Authorization": "Bearer pcs_not-a-real-token"})
    assert wrong["status"] == 401 and "invalid" in wrong["text"]
    none = fetch(browser, "GET", "/api/v1/runs")
    assert none["status"] == 401


def test_schedules_blocks_and_audit_pages(served, browser):
    log_in(browser, served, "admin")
    browser.get(served.url + "/schedules")
    assert "*-*-* 02:00:00" in css(browser, "table.grid").text and "02:00:00" in css(browser, "table.grid").text
    shot(browser, "schedules")
    browser.get(served.url + "/blocks")
    assert "1.2.3" in css(browser, "table.grid").text
    shot(browser, "blocks")
    browser.get(served.url + "/audit")
    text = css(browser, "table.grid").text
    assert "login" in text and "launch" in text
    shot(browser, "audit")


def test_pages_have_no_inline_script(served, browser):
    log_in(browser, served, "operator")
    for path in ("/", "/runs", "/schedules", "/blocks", "/workspaces/ops/workflows/nightly"):
        browser.get(served.url + path)
        scripts = css_all(browser, "script")
        assert scripts and all(s.get_attribute("src") for s in scripts), path
        assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")], path


def test_an_admin_makes_and_revokes_a_token(served, browser):
    log_in(browser, served, "admin")
    browser.get(served.url + "/admin")
    assert "operator" in css(browser, "#users").text and "viewer-token" in css(browser, "#tokens").text
    css(browser, "#token-name").send_keys("from-the-browser")
    css(browser, "#token-add").click()
    token = settle(lambda: css_all(browser, "#new-token"), what="the new token")[0].text
    assert token.startswith("pcs_")
    shot(browser, "admin")
    ok = fetch(browser, "GET", "/api/v1/whoami", {"Authorization": f"Bearer {token}"})
    assert ok["status"] == 200 and "from-the-browser" in ok["text"]
    browser.get(served.url + "/admin")
    assert token not in browser.page_source  # shown once
    css(browser, "tr[data-token=from-the-browser] button").click()
    settle(lambda: "from-the-browser" not in css(browser, "#tokens").text, what="the revoked token gone")
    assert fetch(browser, "GET", "/api/v1/whoami", {"Authorization": f"Bearer {token}"})["status"] == 401


def _run_page_ended(browser, status: str = "succeeded") -> str:
    """Wait (without reloading: the page does it itself at the run's end) for the run page of an ended run."""
    settle(lambda: "/runs/" in browser.current_url and css_all(browser, "#run-status")
           and not css_all(browser, "#log[data-events]") and status in css(browser, "#run-status").text,
           what=f"the run page reading {status}")
    return browser.current_url.rsplit("/", 1)[1]


def test_a_typed_launch_form_then_relaunch_with_the_same_values(served, browser):
    log_in(browser, served, "operator")
    browser.get(served.url + "/workspaces/ops/workflows/echo")
    assert css(browser, "input[name=var-note]").get_attribute("type") == "text"
    assert css(browser, "input[name=var-password]").get_attribute("type") == "password"
    count = css(browser, "input[name=var-count]")
    assert count.get_attribute("type") == "number" and count.get_attribute("max") == "5"
    assert css(browser, "input[name=var-loud]").get_attribute("type") == "checkbox"
    assert [o.text for o in css_all(browser, "select[name=var-target] option")] == ["staging", "production"]
    assert not css_all(browser, "textarea[name=extra_vars]")  # free-form: admins only
    css(browser, "input[name=var-note]").send_keys("{{ 7 * 6 }} from the form")
    css(browser, "input[name=var-password]").send_keys("Form-Secret-99")
    count.clear()
    count.send_keys("4")
    css(browser, "input[name=var-loud]").click()
    next(o for o in css_all(browser, "select[name=var-target] option") if o.text == "production").click()
    shot(browser, "workflow-typed-launch")
    css(browser, "#launch").click()
    first = _run_page_ended(browser)
    params = css(browser, "#launch-params").text
    assert "note={{ 7 * 6 }} from the form" in params and "password=********" in params and "count=4" in params
    log = css(browser, "#log").text
    assert "note=[{{ 7 * 6 }} from the form] password=[********] count=[4] loud=[True] target=[production]" in log
    assert "Form-Secret-99" not in browser.page_source
    shot(browser, "run-typed-launch")
    css(browser, "#relaunch").click()
    second = _run_page_ended(browser)
    assert second != first
    assert "password=[********] count=[4] loud=[True] target=[production]" in css(browser, "#log").text
    assert "note={{ 7 * 6 }} from the form" in css(browser, "#launch-params").text


def test_a_refused_launch_shows_the_form_again_with_the_reason_and_the_values_typed(served, browser):
    """A value the server refuses (the browser's own checks set aside) answers with the workflow's page: the
    reason at the top, every value as typed but the secret's, which is typed again; then the launch runs."""
    log_in(browser, served, "operator")
    browser.get(served.url + "/workspaces/ops/workflows/echo")
    browser.execute_script("document.getElementById('launch-form').noValidate = true")
    css(browser, "input[name=var-note]").send_keys("kept <b>note</b>")
    css(browser, "input[name=var-password]").send_keys("Refused-Form-Secret-7")
    count = css(browser, "input[name=var-count]")
    count.clear()
    count.send_keys("9")
    css(browser, "input[name=var-loud]").click()
    next(o for o in css_all(browser, "select[name=var-target] option") if o.text == "production").click()
    css(browser, "input[name=check]").click()
    css(browser, "input[name=limit]").send_keys("localhost")
    css(browser, "#launch").click()
    settle(lambda: css_all(browser, "#message") and css_all(browser, "#launch-form"), what="the form again")
    assert css(browser, "#message").text.startswith("vars.count: ")
    assert "echo" in css(browser, "h1").text
    assert css(browser, "input[name=var-note]").get_attribute("value") == "kept <b>note</b>"
    assert css(browser, "input[name=var-count]").get_attribute("value") == "9"
    assert css(browser, "input[name=var-loud]").is_selected() and css(browser, "input[name=check]").is_selected()
    assert css(browser, "select[name=var-target]").get_attribute("value") == "production"
    assert css(browser, "input[name=limit]").get_attribute("value") == "localhost"
    assert css(browser, "input[name=var-password]").get_attribute("value") == ""
    assert "Refused-Form-Secret-7" not in browser.page_source
    shot(browser, "workflow-launch-refused")
    count = css(browser, "input[name=var-count]")
    count.clear()
    count.send_keys("3")
    css(browser, "input[name=var-password]").send_keys("Refused-Form-Secret-7")
    css(browser, "#launch").click()
    _run_page_ended(browser)
    params = css(browser, "#launch-params").text
    assert "note=kept <b>note</b>" in params and "count=3" in params and "password=********" in params
    assert "(check mode)" in css(browser, "h1").text


def test_relaunch_on_the_failed_hosts_only(served, browser):
    import httpx

    log_in(browser, served, "operator")
    api = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['viewer']}"})
    failed = api.get("/api/v1/runs", params={"status": "failed", "workflow": "nightly"}).json()["runs"][0]["run_id"]
    browser.get(f"{served.url}/runs/{failed}")
    assert "localhost" in css(browser, "#relaunch-failed").text
    css(browser, "#relaunch-failed").click()
    again = _run_page_ended(browser, "failed")
    assert again != failed
    run = api.get(f"/api/v1/runs/{again}").json()
    assert run["ansible_options"]["limit"] == "localhost"
    assert run["steps"][1]["hosts"]["localhost"]["failed"] == 1


def test_stop_asks_first(served, browser):
    import httpx

    ops = served.workspaces[0]
    for gate in ("gate", "gate2"):
        (ops / gate).unlink(missing_ok=True)
    api = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['operator']}"})
    run_id = api.post("/api/v1/workspaces/ops/workflows/slow/runs", json={}).json()["run_id"]
    try:
        log_in(browser, served, "operator")
        browser.get(f"{served.url}/runs/{run_id}")
        css(browser, "#stop").click()
        settle(lambda: css_all(browser, "#confirm-stop"), what="the confirmation")
        assert css(browser, "h1").text == f"Stop run {run_id}?"
        shot(browser, "confirm-stop")
        assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"  # asking stopped nothing
        css(browser, "#keep-running").click()
        settle(lambda: css_all(browser, "#stop"), what="the run page again")
        assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
        css(browser, "#stop").click()
        settle(lambda: css_all(browser, "#confirm-stop"), what="the confirmation")
        css(browser, "#confirm-stop").click()
        _run_page_ended(browser, "interrupted")
    finally:
        (ops / "gate").touch()
        (ops / "gate2").touch()
