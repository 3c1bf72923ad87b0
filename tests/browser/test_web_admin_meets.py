"""What a new admin meets in the web view, in a real headless Chromium: a scheduled run that never started, the
installed schedules' states (as `schedules list` tells them), and refused launches and relaunches."""
from __future__ import annotations

import json

import pytest

from tests.browser.test_web import css, css_all, fetch, log_in, settle, shot
from tests.conftest import run_cli
from tests.server_fixtures import apply_schedules, make_workspace, start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-admin")
    ops = make_workspace(tmp / "ops", "ops")
    assert run_cli("-w", str(ops), "workflows", "run", "stale").returncode == 0
    # a timer's run of a workflow with a prompt: refused before it starts (nobody answers), recorded as never started
    timer = run_cli("-w", str(ops), "workflows", "run", "--launched-by", "systemd:polycrate-ops-guarded.service",
                    "guarded")
    assert timer.returncode != 0, timer.output
    units = apply_schedules(ops, tmp / "units")
    poly = ops / "workspace.poly"  # after apply: workflow stale renamed, green's time changed
    poly.write_text(poly.read_text().replace("- name: stale\n", "- name: stale-renamed\n")
                    .replace('schedule: "*-*-* 02:00:00"', 'schedule: "*-*-* 04:30:00"')
                    .replace("description: a 3 MB log\n", 'description: a 3 MB log\n    schedule: "*-*-* 05:00:00"\n'))
    # big: declared in workspace.poly, installed by hand at another time (`workflows schedule`): a one-off
    one_off = run_cli("-w", str(ops), "workflows", "schedule", "big", "--on-calendar", "Sat 04:00", "--dest", str(units))
    assert one_off.returncode == 0, one_off.output
    server = start_server(tmp, [ops], extra_args=("--schedule-dest", str(units)))
    server.units = units  # type: ignore[attr-defined]
    yield server
    server.stop()


def _runs(served) -> list[dict]:
    return json.loads(run_cli("-w", str(served.workspaces[0]), "runs", "list", "-o", "json").stdout)["runs"]


def test_a_run_that_never_started_says_so_and_why_with_no_empty_steps_or_log(served, browser):
    """Its page showed an empty Steps table and an empty log box under the facts; `runs show` already left the
    steps out. Now the page says plainly that the run never started, and why, by the same rule (nothing_ran)."""
    refused = next(r for r in _runs(served) if r["name"] == "guarded")
    assert refused["started"] is None and refused["duration"] is None
    log_in(browser, served, "operator")
    browser.get(f"{served.url}/runs/{refused['run_id']}")
    settle(lambda: css_all(browser, "#never-started"), what="the run's page")
    section = css(browser, "#never-started")
    assert section.find_element("css selector", "h2").text == "This run never started"
    assert css(browser, "#never-started-why").text == refused["message"]
    assert refused["message"].startswith("the scheduled run did not start: workflow guarded asks for confirmation")
    # said to the record of a run nobody watches, not to a terminal: no --force (PolycrateError.said_to)
    assert refused["message"].endswith("but there is no terminal; a scheduled run never answers prompts: remove the "
                                       "prompt, or the schedule"), refused["message"]
    assert "No step ran" in section.text
    assert css(browser, "#run-started").text == "never (launched by systemd:polycrate-ops-guarded.service)"
    headings = [h.text for h in css_all(browser, "h2")]
    assert "Steps" not in headings and "Log" not in headings and "Hosts" not in headings
    assert not css_all(browser, "table.grid") and not css_all(browser, "#log") and not css_all(browser, "#run-message")
    shot(browser, "run-never-started")
    shown = run_cli("-w", str(served.workspaces[0]), "runs", "show", refused["run_id"])
    assert "STEP" not in shown.stdout and refused["message"] in shown.stdout


def test_the_schedules_page_tells_the_states_schedules_list_tells(served, browser):
    """The page said only applied, differs or not applied of declared schedules: a timer whose workflow was
    renamed after apply, which still fires and fails each time, was not on it. Now each installed schedule has
    the state and the advice of `schedules list` (the same function), and a declared one nothing installs is
    'not applied'."""
    listed = json.loads(run_cli("schedules", "list", "--dest", str(served.units), "-o", "json").stdout)["installed"]
    cli = {m["workflow"]: (m["state"], m["reason"]) for m in listed if m["path"].endswith(".timer")}
    assert cli["stale"][0] == "stale" and cli["green"][0] == "differs", cli
    log_in(browser, served, "viewer")
    browser.get(served.url + "/schedules")
    rows = {r.get_attribute("data-schedule"): r for r in css_all(browser, "tr[data-schedule]")}
    for workflow, (state, reason) in cli.items():
        row = rows[f"ops/{workflow}"]
        assert row.get_attribute("data-applied") == state
        assert state in row.find_element("css selector", "td.applied .status").text
        assert [e.text for e in row.find_elements("css selector", "td.applied .reason")] == ([reason] if reason else [])
    assert "no longer in" in cli["stale"][1] and f"schedules apply --dest {served.units}` removes it" in cli["stale"][1]
    assert "*-*-* 02:00:00" in rows["ops/green"].find_element("css selector", "td.applied").text  # what fires
    assert not rows["ops/stale"].find_elements("css selector", "a")  # no page of a workflow that is gone
    assert rows["ops/stale-renamed"].get_attribute("data-applied") == "not applied"
    api = {(s["workspace"], s["workflow"]): s for s in json.loads(fetch(browser, "GET", "/api/v1/schedules")["text"])}
    assert (api[("ops", "stale")]["applied"], api[("ops", "stale")]["reason"]) == cli["stale"]
    assert api[("ops", "stale")]["installed_file"] == str(served.units / "polycrate-ops-stale.timer")
    shot(browser, "schedules-states")


def test_the_overview_tells_a_declared_schedule_installed_as_a_one_off_as_the_schedules_page_does(served, browser):
    """A declared schedule that `workflows schedule --dest` installed (a one-off) was 'differs' (or 'applied') on
    the overview, by a rule of its own, and 'one-off' on the Schedules page and in `schedules list`. Now the
    overview's state is the Schedules page's, from the same function (schedule.installed_states)."""
    listed = json.loads(run_cli("schedules", "list", "--dest", str(served.units), "-o", "json").stdout)["installed"]
    assert {m["state"] for m in listed if m["workflow"] == "big"} == {"one-off"}, listed
    log_in(browser, served, "viewer")
    browser.get(served.url + "/")
    row = css(browser, 'tr[data-workflow="ops/big"]')
    assert row.find_element("css selector", ".not-applied").text == "(one-off)"
    browser.get(served.url + "/schedules")
    assert css(browser, 'tr[data-schedule="ops/big"]').get_attribute("data-applied") == "one-off"
    overview = {(r["workspace"], r["workflow"]): r for r in json.loads(fetch(browser, "GET", "/api/v1/overview")["text"])}
    schedules = {(s["workspace"], s["workflow"]): s for s in json.loads(fetch(browser, "GET", "/api/v1/schedules")["text"])}
    assert overview[("ops", "big")]["applied"] == schedules[("ops", "big")]["applied"] == "one-off"
    assert overview[("ops", "big")]["next_run"] is None  # the declared time is not what fires
    # the others agree as well: the renamed workflow's is on the page only, green's time changed
    assert overview[("ops", "green")]["applied"] == schedules[("ops", "green")]["applied"] == "differs"
    assert overview[("ops", "stale-renamed")]["applied"] == schedules[("ops", "stale-renamed")]["applied"]


def test_the_relaunch_form_names_the_prompts_it_confirms(served, browser):
    """The relaunch form had one checkbox, "confirm the workflow's prompts, if it asks any", on every run's page:
    it did not say what it confirmed, nor whether there was anything to. Now it names each prompt the relaunch
    asks (by the launch's own rule) and needs the answer; a run whose relaunch asks nothing has no checkbox."""
    refused = next(r for r in _runs(served) if r["name"] == "guarded")
    log_in(browser, served, "operator")
    browser.get(f"{served.url}/runs/{refused['run_id']}")
    prompts = css(browser, "#relaunch-prompts")
    assert prompts.find_element("css selector", ".prompt").text == "workflow guarded: really touch production?"
    assert css(browser, "#relaunch-confirm").get_attribute("required") is not None
    assert "if it asks any" not in browser.page_source
    browser.get(f"{served.url}/runs/{next(r for r in _runs(served) if r['name'] == 'stale')['run_id']}")
    assert css_all(browser, "#relaunch-form") and not css_all(browser, "#relaunch-prompts")
    assert not css_all(browser, "#relaunch-form input[name=confirm]")


def test_a_refused_relaunch_and_a_refused_action_launch_show_their_page_with_the_reason(served, browser):
    """A refused relaunch or one-action launch answered a page holding only the status code as its heading,
    the message and "Back" (a relaunch of a run whose workflow is gone: the site's bare 404). Now it is the page
    the form was on, with the reason on top and the form again (the action's values as typed), as a refused
    workflow launch shows the workflow's page."""
    gone = next(r for r in _runs(served) if r["name"] == "stale")  # its workflow was renamed since
    log_in(browser, served, "operator")
    browser.get(f"{served.url}/runs/{gone['run_id']}")
    css(browser, "#relaunch").click()
    settle(lambda: css_all(browser, "#message"), what="the refused relaunch")
    assert browser.current_url.endswith(f"/runs/{gone['run_id']}/relaunch")
    assert css(browser, "h1").text == "workflow stale"
    assert css(browser, "#message").text.startswith("Not relaunched: ") and "stale" in css(browser, "#message").text
    assert css_all(browser, "#relaunch-form") and css_all(browser, "#log") and css_all(browser, "nav")
    shot(browser, "relaunch-refused")
    browser.get(served.url + "/workspaces/ops/blocks/sh/actions/ok")
    css(browser, "#action-launch-form input[name=check]").click()
    css(browser, "#action-launch-form input[name=limit]").send_keys("no such host!")
    css(browser, "#launch-action").click()
    settle(lambda: css_all(browser, "#message"), what="the refused launch")
    assert css(browser, "h1").text.startswith("sh ok")
    assert css(browser, "#message").text.startswith("Not launched: limit: ")
    assert css(browser, "#action-launch-form input[name=limit]").get_attribute("value") == "no such host!"
    assert css(browser, "#action-launch-form input[name=check]").is_selected()


def test_an_error_page_has_the_sites_layout_a_heading_in_words_and_a_way_back(served, browser):
    """The generic error page (the gate's 403, a 415, a page that does not exist) had the status code as its
    heading and no way back. Now it has the site's layout, a heading in plain words, the message, and a link
    back: to the page the user came from (this site's), else to the overview."""
    log_in(browser, served, "operator")
    browser.get(served.url + "/runs")
    browser.execute_script("location.href = '/audit'")  # a link followed from /runs: admins only
    settle(lambda: css_all(browser, "#error-heading"), what="the refusal")
    assert css(browser, "h1").text == "Not allowed" and browser.title == "Not allowed · polycrate"
    assert "admin" in css(browser, "#message").text
    back = css(browser, "#back")
    assert (back.text, back.get_attribute("href")) == ("Back to the page you came from", served.url + "/runs")
    assert css_all(browser, "header nav") and css(browser, "#whoami").text.startswith("operator")
    back.click()
    settle(lambda: browser.current_url == served.url + "/runs" and css(browser, "h1").text == "Runs",
           what="the page it came from")
    browser.get(served.url + "/no/such/page")  # typed: nothing to go back to but the overview
    assert css(browser, "h1").text == "Page not found"
    assert css(browser, "#message").text == "no page at /no/such/page"
    back = css(browser, "#back")
    assert (back.text, back.get_attribute("href")) == ("Back to the overview", served.url + "/")
    shot(browser, "error-page")
    run_id = _runs(served)[0]["run_id"]
    csrf = css(browser, "form.whoami input[name=csrf]").get_attribute("value")
    sent = fetch(browser, "POST", f"/runs/{run_id}/stop", {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                 "{}")  # the Stop button's address, sent JSON
    assert sent["status"] == 415 and '<h1 id="error-heading">Not what this page takes</h1>' in sent["text"]
    assert "the Stop button sends a form" in sent["text"] and 'id="back"' in sent["text"]
    api = fetch(browser, "GET", "/api/v1/audit")  # the API's refusal: its JSON document, as before
    assert api["status"] == 403 and set(json.loads(api["text"])) == {"error"}
