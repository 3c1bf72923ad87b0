"""One block action launched from the web, and schedules applied or not, in a real headless Chromium."""
from __future__ import annotations

import pytest

from tests.browser.test_web import css, css_all, log_in, settle, shot
from tests.conftest import run_cli
from tests.server_fixtures import apply_schedules, make_workspace, start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-controls")
    ops = make_workspace(tmp / "ops", "ops")
    lab = make_workspace(tmp / "lab", "lab")
    assert run_cli("-w", str(ops), "workflows", "run", "green").returncode == 0
    units = apply_schedules(ops, tmp / "units")  # ops's schedules applied; lab's only declared
    server = start_server(tmp, [ops, lab], extra_args=("--schedule-dest", str(units)))
    yield server
    server.stop()


def test_an_operator_launches_one_action_in_check_mode_on_one_host(served, browser):
    log_in(browser, served, "operator")
    browser.get(served.url + "/blocks")
    link = next(a for a in css_all(browser, "a.action-link") if a.get_attribute("href").endswith(
        "/workspaces/ops/blocks/sh/actions/disk"))
    link.click()
    settle(lambda: css_all(browser, "#action-launch-form"), what="the action's page")
    css(browser, "#action-launch-form input[name=check]").click()
    css(browser, "#action-launch-form input[name=limit]").send_keys("localhost")
    shot(browser, "action-launch")
    css(browser, "#launch-action").click()
    settle(lambda: "/runs/" in browser.current_url and css_all(browser, "#run-status")
           and not css_all(browser, "#log[data-events]") and "failed" in css(browser, "#run-status").text,
           what="the action's run page, ended")
    assert "action sh disk (check mode)" in css(browser, "h1").text
    assert css(browser, "#run-user").text == "web:operator" and css(browser, "#run-limit").text == "localhost"
    assert css(browser, "#failed-task").text == "check free disk space"
    audit = run_cli("server", "audit", "--state", str(served.state), "--action", "launch-action").stdout
    assert "ops/sh/disk" in audit and "ok" in audit


def test_a_viewer_sees_the_action_but_no_launch_form(served, browser):
    log_in(browser, served, "viewer")
    browser.get(served.url + "/workspaces/ops/blocks/sh/actions/disk")
    assert "sh disk" in css(browser, "h1").text and not css_all(browser, "#action-launch-form")


def test_schedules_say_whether_they_are_applied_and_only_applied_ones_have_a_next_run(served, browser):
    log_in(browser, served, "viewer")
    browser.get(served.url + "/schedules")
    rows = {r.get_attribute("data-schedule"): r for r in css_all(browser, "tr[data-schedule]")}
    assert rows["ops/green"].get_attribute("data-applied") == "applied"
    assert "applied" in rows["ops/green"].find_element("css selector", "td.applied").text
    assert rows["lab/green"].get_attribute("data-applied") == "not applied"
    assert "not applied" in rows["lab/green"].find_element("css selector", "td.applied").text
    shot(browser, "schedules-applied")
    browser.get(served.url + "/")
    overview = {r.get_attribute("data-workflow"): r for r in css_all(browser, "tr[data-workflow]")}
    next_ops = overview["ops/green"].find_elements("css selector", "td")[5].text
    next_lab = overview["lab/green"].find_elements("css selector", "td")[5].text
    assert "in " in next_ops and next_lab == ""
    assert "(not applied)" in overview["lab/green"].text
