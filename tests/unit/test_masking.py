"""Masker: the one rule that hides secret values in output, logs and stored runs."""
from __future__ import annotations

import random
import string
import time

from polycrate.masking import MASK, Masker


def test_empty_masker_returns_text_unchanged():
    m = Masker()
    assert m.mask("nothing to hide") == "nothing to hide"
    assert m.count == 0
    assert m.mask("") == ""


def test_every_occurrence_is_masked():
    m = Masker(["s3cr3t-pass"])
    assert m.mask("a s3cr3t-pass b s3cr3t-pass") == f"a {MASK} b {MASK}"


def test_secret_inside_longer_string():
    m = Masker(["hunter2-pass"])
    assert m.mask('msg: "login failed for hunter2-password@db"') == f'msg: "login failed for {MASK}word@db"'
    assert m.mask("xhunter2-passx") == f"x{MASK}x"


def test_longest_secret_wins_at_same_position():
    m = Masker(["abcdef", "abcdefghij"])
    assert m.mask("--abcdefghij--") == f"--{MASK}--"
    assert m.mask("--abcdefXX--") == f"--{MASK}XX--"


def test_overlapping_secrets_leave_no_fragment():
    m = Masker(["abcdef", "defghi"])
    out = m.mask("xxabcdefghiyy")
    assert out == f"xx{MASK}yy"
    assert "ghi" not in out and "abc" not in out


def test_secret_contained_in_another():
    m = Masker(["passw0rd-long", "w0rd-l"])
    assert m.mask("passw0rd-long and w0rd-l") == f"{MASK} and {MASK}"


def test_adjacent_occurrences_collapse():
    m = Masker(["token1"])
    assert m.mask("token1token1") == MASK


def test_regex_metacharacters_are_literal():
    secrets = ["a.b*c", "(x|y)+", "[abc]", "^$\\d", "p@ss{2}?"]
    m = Masker(secrets)
    text = " ".join(secrets)
    assert m.mask(text) == " ".join([MASK] * len(secrets))
    # metacharacters must not act as patterns
    assert m.mask("aXbbbc x y abc dd") == "aXbbbc x y abc dd"


def test_non_string_values_and_ignored_values():
    m = Masker()
    m.add(123456)
    m.add(None)
    m.add(True)
    m.add("")
    assert m.count == 1
    assert m.mask("port 123456") == f"port {MASK}"


def test_add_rebuilds_lazily():
    m = Masker(["first-secret"])
    assert m.mask("first-secret second-secret") == f"{MASK} second-secret"
    m.add("second-secret")
    assert m.mask("first-secret second-secret") == f"{MASK} {MASK}"
    m.add("second-secret")  # duplicate: no change
    assert m.count == 2


def test_unicode_and_multiline():
    m = Masker(["pässwörd✓"])
    assert m.mask("line1\nyour pässwörd✓ here\nline3") == f"line1\nyour {MASK} here\nline3"


def test_mask_lines_streams():
    m = Masker(["abc123"])
    lines = iter(["ok abc123\n", "clean\n"])
    out = m.mask_lines(lines)
    assert next(out) == f"ok {MASK}\n"
    assert next(out) == "clean\n"


def test_mask_data_nested():
    m = Masker(["topsecret"])
    data = {"a": ["x topsecret", {"b": "topsecret"}], "n": 1, "t": ("topsecret",)}
    assert m.mask_data(data) == {"a": [f"x {MASK}", {"b": MASK}], "n": 1, "t": [MASK]}


def test_many_secrets_fast():
    rng = random.Random(7)
    secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 40))) for _ in range(2000)]
    m = Masker(secrets)
    text = "".join(rng.choices(string.ascii_lowercase + " \n", k=200_000)) + secrets[1234] + " end"
    start = time.perf_counter()
    out = m.mask(text)
    elapsed = time.perf_counter() - start
    assert out.endswith(f"{MASK} end")
    assert secrets[1234] not in out
    assert elapsed < 2.0, elapsed
