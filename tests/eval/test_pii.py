"""The PII scrubber: the battery of exact outputs, pseudonyms, config, JSON values, robustness."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from eval.pii import KINDS, Finding, Scrubber, ScrubberConfig, resolve_overlaps
from tests.eval.pii_cases import CASES, NEGATIVE_TEXTS, POSITIVE_CASES

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PSEUDONYM = re.compile(r"<([A-Z]+):([0-9a-f]{6})>")


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.fixture(scope="module")
def keyed() -> Scrubber:
    return Scrubber(ScrubberConfig(hmac_key=KEY))


def _case_id(case: tuple[str, str]) -> str:
    return case[0][:40].replace("\n", " ") or "<empty>"


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_battery(scrubber: Scrubber, text: str, expected: str) -> None:
    assert scrubber.scrub(text) == expected


def test_battery_covers_every_kind_and_is_mostly_negative() -> None:
    expected = "".join(e for _, e in POSITIVE_CASES)
    assert {kind for kind in KINDS if f"<{kind.upper()}>" in expected} == set(KINDS)
    assert len(CASES) >= 80
    assert len(NEGATIVE_TEXTS) >= len(CASES) / 2


@pytest.mark.parametrize(
    ("text", "expected"), POSITIVE_CASES, ids=[_case_id(c) for c in POSITIVE_CASES]
)
def test_raw_values_never_reach_the_output(
    scrubber: Scrubber, keyed: Scrubber, text: str, expected: str
) -> None:
    findings = scrubber.findings(text)
    assert findings
    for output in (scrubber.scrub(text), keyed.scrub(text)):
        for finding in findings:
            assert finding.value not in output


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_findings_are_sorted_disjoint_and_point_at_their_values(
    scrubber: Scrubber, text: str, expected: str
) -> None:
    findings = scrubber.findings(text)
    for finding in findings:
        assert text[finding.start : finding.end] == finding.value
        assert finding.kind in KINDS
    for left, right in zip(findings, findings[1:], strict=False):
        assert left.end <= right.start


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_scrubbing_twice_changes_nothing_more(
    scrubber: Scrubber, keyed: Scrubber, text: str, expected: str
) -> None:
    assert scrubber.scrub(expected) == expected
    once = keyed.scrub(text)
    assert keyed.scrub(once) == once


# --- pseudonyms -------------------------------------------------------------------------------


def _pseudonyms(text: str) -> list[tuple[str, str]]:
    return PSEUDONYM.findall(text)


def test_pseudonym_is_the_hmac_of_the_normalised_value(keyed: Scrubber) -> None:
    out = keyed.scrub("mail Jane.Doe@Example.com now")
    digest = hmac.new(KEY, b"jane.doe@example.com", hashlib.sha256).hexdigest()
    assert out == f"mail <EMAIL:{digest[:6]}> now"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("jane@example.com", "JANE@EXAMPLE.COM"),
        ("+1 415 555 2671", "(415) 555-2671"),
        ("+44 20 7946 0958", "020 7946 0958"),
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("4111 1111 1111 1111", "4111-1111-1111-1111"),
        ("123-45-6789", "SSN 123456789"),
        ("2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001"),
    ],
)
def test_one_value_written_two_ways_gets_one_pseudonym(
    keyed: Scrubber, first: str, second: str
) -> None:
    one, two = _pseudonyms(keyed.scrub(first)), _pseudonyms(keyed.scrub(second))
    assert len(one) == len(two) == 1
    assert one == two


def test_pseudonyms_are_stable_across_calls_and_instances(keyed: Scrubber) -> None:
    text = "jane@example.com called from +44 20 7946 0958 about 4111 1111 1111 1111"
    again = Scrubber(ScrubberConfig(hmac_key=KEY))
    assert keyed.scrub(text) == keyed.scrub(text) == again.scrub(text)
    assert [kind for kind, _ in _pseudonyms(keyed.scrub(text))] == ["EMAIL", "PHONE", "CARD"]


def test_pseudonyms_link_repeats_and_separate_different_values(keyed: Scrubber) -> None:
    out = keyed.scrub("from a@example.com to b@example.com, cc a@example.com")
    (_, first), (_, second), (_, third) = _pseudonyms(out)
    assert first == third
    assert first != second


def test_pseudonyms_depend_on_the_key(keyed: Scrubber) -> None:
    other = Scrubber(ScrubberConfig(hmac_key=OTHER_KEY))
    text = "jane@example.com"
    assert keyed.scrub(text) != other.scrub(text)
    assert _pseudonyms(other.scrub(text))[0][0] == "EMAIL"


def test_without_a_key_placeholders_are_bare(scrubber: Scrubber) -> None:
    assert scrubber.scrub("a@example.com b@example.com") == "<EMAIL> <EMAIL>"


# --- config -----------------------------------------------------------------------------------


def test_kinds_turn_detectors_off() -> None:
    only_email = Scrubber(ScrubberConfig(kinds=frozenset({"email"})))
    text = "jane@example.com +44 20 7946 0958 203.0.113.9"
    assert only_email.scrub(text) == "<EMAIL> +44 20 7946 0958 203.0.113.9"
    assert Scrubber(ScrubberConfig(kinds=frozenset())).scrub(text) == text


def test_phone_regions_choose_national_formats_but_international_is_always_found() -> None:
    us_only = Scrubber(ScrubberConfig(phone_regions=("US",)))
    assert us_only.scrub("ring 020 7946 0958") == "ring 020 7946 0958"
    assert us_only.scrub("ring +44 20 7946 0958") == "ring <PHONE>"
    assert us_only.scrub("ring (415) 555-2671") == "ring <PHONE>"
    gb = Scrubber(ScrubberConfig(phone_regions=("gb",)))
    assert gb.scrub("ring 020 7946 0958") == "ring <PHONE>"
    assert gb.scrub("ring (415) 555-2671") == "ring (415) 555-2671"


@pytest.mark.parametrize(
    "fields",
    [
        {"kinds": ["email", "passport"]},
        {"phone_regions": ["US", "XX"]},
        {"hmac_key": b"short"},
    ],
)
def test_invalid_config_is_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        ScrubberConfig.model_validate(fields)


def test_config_round_trips_without_its_key(caplog: pytest.LogCaptureFixture) -> None:
    config = ScrubberConfig(phone_regions=("us", "DE"), hmac_key=KEY, kinds={"email", "phone"})
    assert config.phone_regions == ("US", "DE")
    dumped = config.model_dump_json()
    assert "hmac_key" not in dumped and KEY.decode() not in repr(config)
    assert ScrubberConfig.model_validate_json(dumped) == config.model_copy(
        update={"hmac_key": None}
    )
    with caplog.at_level(logging.WARNING, logger="tuneloop.eval.pii"):
        tolerant = ScrubberConfig.model_validate({"phone_regions": ["FR"], "colour": "red"})
    assert tolerant.phone_regions == ("FR",)
    assert "colour" in caplog.text
    assert all(field.description for field in ScrubberConfig.model_fields.values())


# --- JSON-like values -------------------------------------------------------------------------


def test_scrub_value_walks_dicts_lists_and_tuples_leaving_keys_and_scalars(
    scrubber: Scrubber,
) -> None:
    value = {
        "messages": [
            {"role": "user", "content": "I am jane@example.com, card 4111 1111 1111 1111"},
            {"role": "assistant", "content": "Noted.", "tool_calls": None},
        ],
        "jane@example.com": ("call +1 415 555 2671", 42, 1.5, True),
        "n": 7,
    }
    assert scrubber.scrub_value(value) == {
        "messages": [
            {"role": "user", "content": "I am <EMAIL>, card <CARD>"},
            {"role": "assistant", "content": "Noted.", "tool_calls": None},
        ],
        "jane@example.com": ("call <PHONE>", 42, 1.5, True),
        "n": 7,
    }
    assert value["messages"][0]["content"].startswith("I am jane@")  # input left as it was


def test_scrub_value_on_a_bare_string_and_scalars(scrubber: Scrubber) -> None:
    assert scrubber.scrub_value("x jane@example.com") == "x <EMAIL>"
    assert scrubber.scrub_value(None) is None
    assert scrubber.scrub_value(12) == 12


# --- overlaps ---------------------------------------------------------------------------------


def test_longest_finding_wins_then_the_more_specific_kind() -> None:
    findings = [
        Finding("phone", 0, 10, "x" * 10),
        Finding("card", 0, 19, "x" * 19),
        Finding("ip", 20, 28, "x" * 8),
        Finding("ssn", 20, 28, "x" * 8),
        Finding("email", 27, 40, "x" * 13),
        Finding("secret", 50, 50, ""),
    ]
    kept = resolve_overlaps(findings)
    assert [(f.kind, f.start, f.end) for f in kept] == [("card", 0, 19), ("email", 27, 40)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.4155552671@example.com", "mail <EMAIL>"),
        ("Authorization: Bearer sk-abcdefghij1234567890ABCDEF", "Authorization: Bearer <SECRET>"),
        ("IBAN DE89 3704 0044 0532 0130 00 paid", "IBAN <IBAN> paid"),
        ("http://user:pw@203.0.113.5:8080/x", "http://user:pw@<IP>:8080/x"),
    ],
)
def test_nested_candidates_give_one_clean_placeholder(
    scrubber: Scrubber, text: str, expected: str
) -> None:
    assert scrubber.scrub(text) == expected


def test_finding_repr_does_not_show_the_value(scrubber: Scrubber) -> None:
    (finding,) = scrubber.findings("jane@example.com")
    assert "jane" not in repr(finding)
    assert finding == Finding("email", 0, 16, "jane@example.com")


# --- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \n\t ",
        "日本語のテキスト、電話番号なし。",
        "🙂" * 1000,
        "\x00\ufeff\u200b\uffff",
        "a" * 200_000 + "@",
        "1 " * 100_000,
        "1-" * 100_000,
        "1." * 100_000,
        "0 " * 100_000,
        "2024-11-29 " * 20_000,
        ":" * 100_000,
        "eyJ" * 50_000 + ".x",
        "Bearer " + "a" * 100_000,
        "password=" * 20_000,
        "DE89 " * 40_000,
        "(415) 555-2671 " * 5_000,
    ],
    ids=lambda text: f"{text[:8]!r}x{len(text)}",
)
def test_odd_and_huge_inputs_finish_quickly(scrubber: Scrubber, text: str) -> None:
    started = time.perf_counter()
    out = scrubber.scrub(text)
    assert isinstance(out, str)
    assert time.perf_counter() - started < 10  # about 0.5 s each on one core


def test_a_megabyte_of_mixed_text_keeps_every_finding(scrubber: Scrubber) -> None:
    block = "See ORD-2024-001234 on 2024-11-29. Mail jane@example.com or +44 20 7946 0958.\n"
    text = block * 12_000
    out = scrubber.scrub(text)
    assert out == ("See ORD-2024-001234 on 2024-11-29. Mail <EMAIL> or <PHONE>.\n" * 12_000)


def test_threads_share_one_scrubber(scrubber: Scrubber) -> None:
    texts = [text for text, _ in CASES] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(scrubber.scrub, texts))
    assert outputs == [expected for _, expected in CASES] * 8
