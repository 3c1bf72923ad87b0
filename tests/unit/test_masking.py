"""Masker: the one rule that hides secret values in output, logs and stored runs."""
from __future__ import annotations

import random
import string

from polycrate.secrets.masking import MASK, Masker


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


def _reference_mask(secrets: list[str], text: str) -> str:
    """The rule spelled out naively: cover every occurrence of every secret, merge touching covers."""
    covered = [False] * len(text)
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            for i in range(start, start + len(secret)):
                covered[i] = True
            start = text.find(secret, start + 1)
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            if out and out[-1] == MASK:
                continue
            out.append(MASK)
        else:
            # adjacent occurrences collapse: a cover that ends where the next starts is one
            out.append(text[i])
            i += 1
    return "".join(out)


def test_matches_the_naive_rule_on_random_overlaps():
    rng = random.Random(11)
    for _ in range(300):
        secrets = ["".join(rng.choices("abc", k=rng.randint(1, 6))) for _ in range(rng.randint(1, 6))]
        text = "".join(rng.choices("abcx", k=rng.randint(0, 60)))
        assert Masker(secrets).mask(text) == _reference_mask(secrets, text), (secrets, text)


def test_secret_of_100_kb():
    rng = random.Random(3)
    secret = "".join(rng.choices(string.ascii_letters + string.digits + "+/=\n", k=100_000))
    m = Masker([secret])
    text = "before " + secret + " middle " + secret[:-1] + " after"
    out = m.mask(text)
    assert out == f"before {MASK} middle {secret[:-1]} after"


def test_ten_thousand_secrets():
    rng = random.Random(7)
    secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 40))) for _ in range(10_000)]
    m = Masker(secrets)
    assert m.count == len(set(secrets))
    picked = [secrets[0], secrets[4321], secrets[-1]]
    text = "".join(rng.choices(string.ascii_lowercase + " \n", k=200_000)) + " ".join(picked) + " end"
    out = m.mask(text)
    assert out.endswith(f"{MASK} {MASK} {MASK} end")
    assert not any(s in out for s in picked)


def test_secrets_that_are_prefixes_of_each_other():
    # the shape that made the old regex trie nest one group per secret
    secrets = ["k" * n for n in range(1, 301)]
    m = Masker(secrets)
    assert m.mask("x" + "k" * 2000 + "y") == f"x{MASK}y"


# --- colour codes: a coloured log keeps its colours, never a secret split by them

SGR_CODES = ["\x1b[0m", "\x1b[1;31m", "\x1b[32m", "\x1b[m"]


def test_a_secret_split_by_colour_codes_is_masked_and_the_codes_stay():
    m = Masker(["hunter2-pass"])
    assert m.mask("x hun\x1b[1mter2-pa\x1b[0mss y") == f"x {MASK}\x1b[1m\x1b[0m y"
    assert m.mask("\x1b[31mhunter2-pass\x1b[0m and hunter2-pass") == f"\x1b[31m{MASK}\x1b[0m and {MASK}"
    assert m.mask("\x1b[32mok\x1b[0m") == "\x1b[32mok\x1b[0m"  # nothing to hide: the text as it was


def test_masking_across_colour_codes_is_masking_of_the_plain_text():
    from polycrate import ansi

    rng = random.Random(11)
    for _ in range(2000):
        secrets = ["".join(rng.choices("abc", k=rng.randint(2, 5))) for _ in range(rng.randint(1, 3))]
        plain = "".join(rng.choices("abcx", k=rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(plain) + 1), min(len(plain) + 1, rng.randint(0, 4))))
        coloured, pos = [], 0
        for cut in cuts:
            coloured += [plain[pos:cut], rng.choice(SGR_CODES)]
            pos = cut
        text = "".join(coloured) + plain[pos:]
        out = Masker(secrets).mask(text)
        assert ansi.strip(out) == _reference_mask(secrets, plain), (secrets, text)
        assert len(ansi.sgr_spans(out)) == len(ansi.sgr_spans(text))  # every colour code kept
