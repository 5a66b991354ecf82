"""PII scrubber figures: precision and recall on the test battery, throughput on chat text.

1. Quality: every case of ``tests/eval/pii_cases.py`` is scrubbed with the default config.
   A case's expected placeholders (``<EMAIL>``, ``<PHONE>``, ...) are compared, per kind, with
   the ones produced: a produced placeholder the case does not expect is a false positive, an
   expected one that is missing is a false negative. Exact output is the tests' job; this
   counts findings.
2. Throughput: a synthetic corpus of ``--mb`` megabytes of chat messages (prose, code, logs,
   tables with dates, prices, versions, order numbers and hashes; about one message in
   twenty carries PII) is scrubbed message by message, as the eval sampler does.
   Baseline, same run: one email regex substitution over the same messages.

Prints ``name: value`` lines; the last is our MB/s over the email-regex-only MB/s.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.pii import Scrubber  # noqa: E402
from tests.eval.pii_cases import CASES  # noqa: E402

PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|CARD|IBAN|SSN|IP|SECRET)(?::[0-9a-f]{6})?>")
EMAIL_ONLY = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")

PROSE = (
    "Could you summarise the attached meeting notes in three bullet points?",
    "The quarterly report shows revenue of $1,234,567.89, up 12.5% from Q2.",
    "Order ORD-2024-{n} shipped on 2024-11-{d} and should arrive within 3-5 days.",
    "We upgraded the cluster from v1.27.3 to v1.28.0 last night; pods restarted at 02:15.",
    "Invoice INV-{n} for EUR 4.500,00 is due on {d}/12/2024.",
    "Thanks! That fixed it. The build on commit 9fceb02d0ae598e95dc970b74767f19372d61af8 passes.",
    "Translate into German: 'The meeting is moved to Thursday at 10:30.'",
    "Explain the difference between a process and a thread, with an example in Python 3.11.",
    "My model scored 0.873 F1 on the dev set and 0.861 on test (n=12,480).",
    "Is ISBN 978-3-16-148410-0 the right edition of the book?",
    "Request {n} took 1732881535 ms? No, that's the unix timestamp 1732881535.",
    "Please write a haiku about autumn leaves and a cup of tea.",
    "The UUID is 550e8400-e29b-41d4-a716-446655440000 and the hash is sha256:e3b0c442.",
    "Set the color to #1a2b3c and the margin to 12px 24px.",
    "Compute 3 * 4 + 12 = 24 and then 1234567 + 7654321 = 8888888.",
)
CODE = (
    "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n\nprint(add(2, 3))\n```",
    "```cpp\nstd::vector<int> v{1, 2, 3};\nfor (auto x : v) std::cout << x << std::endl;\n```",
    "```\n2024-11-29T12:18:55Z INFO worker-{n} started pid={n} mem=512MiB\n"
    "2024-11-29T12:18:56Z WARN retry 3/5 after 250 ms\n```",
    "| date | qty | price |\n|---|---|---|\n| 2024-11-{d} | {n} | 19.99 |\n"
    "| 2024-12-01 | 7 | 1,299.00 |",
)
PII = (
    "You can reach me at jane.doe{n}@example.com or on +44 20 7946 0958.",
    "My card 4111 1111 1111 1111 was charged twice, please refund.",
    "Transfer it to DE89 3704 0044 0532 0130 00, reference {n}.",
    "The server at 203.0.113.{d} keeps timing out.",
    "curl -H 'Authorization: Bearer sk-proj-AbC123dEf456GhI789jKl012MnO345' https://api.example.com",
    "Call me back at (415) 555-2671 after 5pm.",
    "SSN 123-45-6789, DOB 1980-01-01.",
)


def quality(scrubber: Scrubber) -> tuple[float, float, int]:
    true_pos = false_pos = false_neg = 0
    for text, expected in CASES:
        want = Counter(PLACEHOLDER.findall(expected)) - Counter(PLACEHOLDER.findall(text))
        got = Counter(PLACEHOLDER.findall(scrubber.scrub(text))) - Counter(
            PLACEHOLDER.findall(text)
        )
        hits = want & got
        true_pos += sum(hits.values())
        false_pos += sum((got - hits).values())
        false_neg += sum((want - hits).values())
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 1.0
    return precision, recall, len(CASES)


def corpus(megabytes: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    messages: list[str] = []
    size = 0
    while size < target:
        parts = []
        for _ in range(rng.randint(2, 8)):
            pool = PII if rng.random() < 0.01 else CODE if rng.random() < 0.2 else PROSE
            template = rng.choice(pool)
            number, day = str(rng.randint(1, 999_999)), f"{rng.randint(1, 28):02d}"
            parts.append(template.replace("{n}", number).replace("{d}", day))
        message = "\n\n".join(parts)
        messages.append(message)
        size += len(message.encode("utf-8"))
    return messages


def throughput(transform, messages: list[str], megabytes: float) -> float:
    started = time.perf_counter()
    for message in messages:
        transform(message)
    return megabytes / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="corpus size in megabytes")
    args = parser.parse_args()

    scrubber = Scrubber()
    precision, recall, cases = quality(scrubber)
    print(f"cases: {cases}")
    print(f"precision: {precision:.3f}")
    print(f"recall: {recall:.3f}")

    messages = corpus(args.mb)
    megabytes = sum(len(m.encode("utf-8")) for m in messages) / 1_000_000
    ours = throughput(scrubber.scrub, messages, megabytes)
    baseline = throughput(lambda m: EMAIL_ONLY.sub("<EMAIL>", m), messages, megabytes)
    print(f"corpus_mb: {megabytes:.2f}")
    print(f"corpus_messages: {len(messages)}")
    print(f"scrub_mb_per_s: {ours:.2f}")
    print(f"email_regex_mb_per_s: {baseline:.2f}")
    print(f"ratio_vs_email_regex_only: {ours / baseline:.4f}")


if __name__ == "__main__":
    main()
