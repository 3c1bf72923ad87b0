"""A workspace remote's URL as shown and as recorded with a launch (team/source.py): a password never leaves."""
import pytest

from polycrate.team.source import shown_url, without_password


@pytest.mark.parametrize(("url", "shown", "recorded"), [
    ("https://u:tok@h:8443/r.git", "https://u:***@h:8443/r.git", "https://u@h:8443/r.git"),
    ("https://:tok@h/r", "https://:***@h/r", "https://h/r"),
    ("https://h/r.git", "https://h/r.git", "https://h/r.git"),
    ("ssh://git@h/r", "ssh://git@h/r", "ssh://git@h/r"),
    ("/srv/git/ops.git", "/srv/git/ops.git", "/srv/git/ops.git"),
])
def test_a_password_in_a_remote_is_neither_shown_nor_recorded(url, shown, recorded):
    assert shown_url(url) == shown and without_password(url) == recorded
    assert "tok" not in shown_url(url) + without_password(url)
