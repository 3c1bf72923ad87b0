"""`runs logs --follow` and `workflows run --wait`: how often they look at a run (cli/runs.next_pause)."""
from polycrate.cli.runs import FOLLOW_POLL_FIRST, FOLLOW_POLL_SECONDS, next_pause


def test_a_moving_run_is_looked_at_again_soon_and_a_quiet_one_ever_less_often_up_to_the_cap():
    pauses = [FOLLOW_POLL_FIRST]
    for _ in range(10):
        pauses.append(next_pause(pauses[-1], moved=False))
    assert pauses[0] == FOLLOW_POLL_FIRST < pauses[1] < pauses[2] < pauses[3]
    assert pauses[-1] == FOLLOW_POLL_SECONDS and max(pauses) == FOLLOW_POLL_SECONDS
    assert next_pause(FOLLOW_POLL_SECONDS, moved=True) == FOLLOW_POLL_FIRST
