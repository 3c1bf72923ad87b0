"""Users, teams, grants and passwords in a real headless Chromium against the real `polycrate serve`."""
from __future__ import annotations

import pytest

from tests.browser.test_web import css, css_all, log_in, settle, shot
from tests.conftest import run_cli
from tests.server_fixtures import serve_ops_and_lab

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-accounts")
    server = serve_ops_and_lab(tmp)
    yield server
    server.stop()


def log_in_as(driver, served, user: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(served.url + "/login")
    css(driver, "#username").send_keys(user)
    css(driver, "#password").send_keys(password)
    css(driver, "#login").click()
    settle(lambda: css_all(driver, "#whoami"), what="the logged-in page")


def submit(driver, form_selector: str, **fields: str) -> None:
    """Fill a form's fields (by name; selects by option text) and send it; wait for the page that answers."""
    from selenium.webdriver.support.ui import Select

    form = css(driver, form_selector)
    for name, value in fields.items():
        element = form.find_element("css selector", f"[name={name}]")
        if element.tag_name == "select":
            Select(element).select_by_visible_text(value)
        else:
            element.clear()
            element.send_keys(value)
    driver.execute_script("window.__old = true;")
    form.find_element("css selector", "button[type=submit]").click()
    settle(lambda: driver.execute_script("return window.__old !== true") and css_all(driver, "#message"),
           what="the answer to the form")


def test_an_admin_adds_a_user_a_team_and_a_grant_and_the_user_sees_only_that(served, browser):
    log_in(browser, served, "admin")
    browser.get(served.url + "/admin")
    submit(browser, "#user-form", name="hank", role="none", password="hank-password-1")
    assert "user hank added" in css(browser, "#message").text
    assert "none" in css(browser, "tr[data-user=hank]").text or css(
        browser, "tr[data-user=hank] select[name=role]").get_attribute("value") == "none"
    submit(browser, "#team-form", name="night-shift")
    submit(browser, "tr[data-team=night-shift] form:not(.member)", user="hank")
    assert "hank" in css(browser, "tr[data-team=night-shift]").text
    submit(browser, "#grant-form", principal="team:night-shift", workspace="lab", role="operator")
    assert "lab: operator" in css(browser, "tr[data-team=night-shift]").text
    assert css_all(browser, "tr[data-grant='team:night-shift@lab']")
    shot(browser, "admin-users-teams")

    log_in_as(browser, served, "hank", "hank-password-1")
    rows = {r.get_attribute("data-workflow").split("/")[0] for r in css_all(browser, "tr[data-workflow]")}
    assert rows == {"lab"}  # through the team only
    browser.get(served.url + "/account")
    assert "night-shift" in css(browser, "#account-teams").text and "lab: operator" in css(browser, "#account-grants").text
    browser.get(served.url + "/workspaces/ops/workflows/green")
    assert css(browser, "h1").text == "Page not found"

    # the admin takes hank out of the team: nothing is left to see
    log_in_as(browser, served, "admin", served.passwords["admin"])
    browser.get(served.url + "/admin")
    submit(browser, "tr[data-team=night-shift] form.member")
    assert "hank left team night-shift" in css(browser, "#message").text
    audit = run_cli("server", "audit", "--state", str(served.state), "--limit", "20").stdout
    assert "team-member-remove" in audit and "grant-add" in audit and "hank-password-1" not in audit


def test_an_admin_sets_a_role_and_a_password(served, browser):
    log_in(browser, served, "admin")
    browser.get(served.url + "/admin")
    submit(browser, "#user-form", name="ivy", role="viewer", password="ivy-password-1")
    submit(browser, "tr[data-user=ivy] form:has(select[name=role])", role="operator")
    assert "ivy is now operator" in css(browser, "#message").text
    assert css(browser, "tr[data-user=ivy] select[name=role]").get_attribute("value") == "operator"
    submit(browser, "tr[data-user=ivy] form:has(input[name=password])", password="ivy-password-2")
    assert "sessions have ended" in css(browser, "#message").text
    # demoting the last admin is refused, on the page
    submit(browser, "tr[data-user=admin] form:has(select[name=role])", role="viewer")
    assert "last admin" in css(browser, "#message").text and "error" in css(browser, "#message").get_attribute("class")
    log_in_as(browser, served, "ivy", "ivy-password-2")
    assert css(browser, "#whoami").text == "ivy (operator)"


def test_a_user_changes_their_own_password(served, browser):
    assert served.cli("server", "user", "add", "jan", "--role", "viewer", "--password-stdin",
                      input="jan-password-1\n").returncode == 0
    log_in_as(browser, served, "jan", "jan-password-1")
    css(browser, "#account-link").click()
    settle(lambda: css_all(browser, "#password-form"), what="the account page")
    shot(browser, "account")
    submit(browser, "#password-form", current="not-my-password", new="jan-password-2", again="jan-password-2")
    assert "not right" in css(browser, "#message").text
    submit(browser, "#password-form", current="jan-password-1", new="jan-password-2", again="jan-password-2")
    assert "your password is changed" in css(browser, "#message").text
    assert "jan-password" not in browser.page_source
    log_in_as(browser, served, "jan", "jan-password-2")
    assert css(browser, "#whoami").text == "jan (viewer)"
    audit = run_cli("server", "audit", "--state", str(served.state), "--action", "password-change").stdout
    assert "refused" in audit and "ok" in audit and "jan-password" not in audit


def test_a_form_sent_after_the_session_ended_logs_in_again_and_returns_to_its_page(served, browser):
    """The session ends while the launch form is open (here: an admin sets a new password); sending it asks
    to log in again, says why, and afterwards shows the form's page again, with nothing launched."""
    import httpx

    assert served.cli("server", "user", "add", "kim", "--role", "operator", "--password-stdin",
                      input="kim-password-1\n").returncode == 0
    log_in_as(browser, served, "kim", "kim-password-1")
    browser.get(served.url + "/workspaces/ops/workflows/green")
    settle(lambda: css_all(browser, "#launch-form"), what="the launch form")
    admin = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['admin']}"})
    assert admin.patch("/api/v1/users/kim", json={"password": "kim-password-2"}).status_code == 200
    runs_before = admin.get("/api/v1/runs", params={"workflow": "green"}).json()
    css(browser, "#launch").click()
    settle(lambda: css_all(browser, "#username") and css_all(browser, "#message"), what="the login page")
    assert "session has ended" in css(browser, "#message").text
    css(browser, "#username").send_keys("kim")
    css(browser, "#password").send_keys("kim-password-2")
    css(browser, "#login").click()
    settle(lambda: css_all(browser, "#whoami") and css_all(browser, "h1"), what="the page after logging in")
    assert browser.current_url == served.url + "/workspaces/ops/workflows/green"
    assert "green" in css(browser, "h1").text and css_all(browser, "#launch-form")
    assert admin.get("/api/v1/runs", params={"workflow": "green"}).json() == runs_before
