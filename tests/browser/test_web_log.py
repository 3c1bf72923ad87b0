"""The run page's log in a real headless Chromium: colours as spans, markup as text, search on the page and
over the whole log."""
from __future__ import annotations

import pytest

from tests.browser.test_web import css, css_all, log_in, settle, shot
from tests.conftest import run_cli
from tests.server_fixtures import make_workspace, start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-log")
    ops = make_workspace(tmp / "ops", "ops")
    for workflow in ("green", "big"):
        assert run_cli("-w", str(ops), "workflows", "run", workflow).returncode == 0
    assert run_cli("-w", str(ops), "workflows", "run", "nightly").returncode == 1  # a real, failing playbook
    server = start_server(tmp, [ops])
    yield server
    server.stop()


def run_of(served, workflow: str) -> str:
    import httpx

    api = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['viewer']}"})
    return api.get("/api/v1/runs", params={"workflow": workflow}).json()["runs"][0]["run_id"]


def test_colour_codes_in_a_log_are_coloured_spans_and_markup_stays_text(served, browser):
    # A log may hold colour codes, other escape sequences (an older store, an import) and markup-like text:
    # this one is given all three, in the store's own log file.
    ops = served.workspaces[0]
    run_id = run_of(served, "green")
    files = [p for p in ops.rglob("*") if p.is_file() and run_id in str(p) and "hello from hello" in p.read_text(
        errors="replace")]
    assert files, "the green run's step log"
    files[0].write_text("\x1b[0;32mok: [localhost]\x1b[0m\n\x1b[1;31mfatal: <img src=x onerror=alert(1)>\x1b[0m\n"
                        "\x1b]0;title\x07plain <script>window.__pwned = 1</script>\n")
    log_in(browser, served, "viewer")
    browser.get(f"{served.url}/runs/{run_id}")
    green = css(browser, "#log .ansi-fg2")
    assert green.text == "ok: [localhost]" and green.value_of_css_property("color") == "rgba(126, 231, 135, 1)"
    red = css(browser, "#log .ansi-fg1.ansi-bold")
    assert red.text == "fatal: <img src=x onerror=alert(1)>" and red.value_of_css_property("font-weight") == "700"
    assert not css_all(browser, "#log img") and not css_all(browser, "#log script")
    assert "plain <script>window.__pwned = 1</script>" in css(browser, "#log").text
    assert browser.execute_script("return window.__pwned === undefined")
    shot(browser, "run-log-colours")


def test_a_real_runs_ansible_colours_show_on_its_page(served, browser):
    # recorded off a terminal (run_cli's stdout is a pipe): Ansible coloured its output for the log all the same
    log_in(browser, served, "viewer")
    browser.get(f"{served.url}/runs/{run_of(served, 'nightly')}")
    red = [e for e in css_all(browser, "#log .ansi-fg1") if "disk /var is full on purpose" in e.text]
    assert red and red[0].value_of_css_property("color") == "rgba(255, 123, 114, 1)"
    assert "\x1b" not in css(browser, "#log").text and "[0;31m" not in css(browser, "#log").text


def test_search_the_lines_shown_then_the_whole_log(served, browser):
    log_in(browser, served, "viewer")
    run_id = run_of(served, "big")
    browser.get(f"{served.url}/runs/{run_id}")
    assert "the first line" not in css(browser, "#log").text  # 3 MB back: not on the page
    css(browser, "#log-search-text").send_keys("the last")
    count = settle(lambda: css(browser, "#log-search-count").get_attribute("data-hits") not in (None, "0")
                   and css(browser, "#log-search-count"), what="the hits among the lines shown")
    assert count.get_attribute("data-hits") == "2"  # `+ echo "the last line"` and its output
    assert "of the" in count.text and "lines shown match" in count.text
    css(browser, "#log-only-hits").click()
    visible = [line.text for line in css_all(browser, "#log .ln") if line.is_displayed()]
    # (fold's last piece has no newline: the echo's trace line follows it on the same line)
    assert len(visible) == 2 and visible[0].endswith('+ echo "the last line"') and visible[1] == "the last line"
    shot(browser, "run-log-search")
    search = css(browser, "#log-search-text")
    search.clear()
    search.send_keys("the first")
    settle(lambda: css(browser, "#log-search-count").get_attribute("data-hits") == "0", what="no hit on the page")
    css(browser, "#log-search-all").click()
    found = settle(lambda: css_all(browser, "#log-found"), what="the server's search")[0]
    assert "2 lines of the whole log hold" in found.text and "print:2 the first line" in found.text
    assert "search=the+first" in browser.current_url
