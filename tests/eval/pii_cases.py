"""The PII battery: texts and exactly what the default scrubber must turn them into.

Shared by ``tests/eval/test_pii.py`` and ``bench/eval_scrub.py`` (precision and recall). The
default config applies: phone regions US, GB, DE, FR; every detector on; no HMAC key.
``NEGATIVE_TEXTS`` look like PII to a careless pattern and must come back unchanged.
"""

from __future__ import annotations

_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

POSITIVE_CASES: tuple[tuple[str, str], ...] = (
    # Emails: plus tags, subdomains, capitals, several in a row.
    ("Contact me at jane.doe@example.com please.", "Contact me at <EMAIL> please."),
    ("mail: bob+newsletter@mail.example.co.uk", "mail: <EMAIL>"),
    ("(alice_smith@sub.domain.org)", "(<EMAIL>)"),
    ("Send it to J.Doe-99@Example.COM.", "Send it to <EMAIL>."),
    ("cc a@b.io, c.d@e.fr", "cc <EMAIL>, <EMAIL>"),
    ('{"user": "x.y@z-corp.example"}', '{"user": "<EMAIL>"}'),
    # Phones: E.164 and national formats of US, GB, DE, FR.
    ("Call +1 415 555 2671 now", "Call <PHONE> now"),
    ("US office: (415) 555-2671.", "US office: <PHONE>."),
    ("cell 415-555-2671", "cell <PHONE>"),
    ("fax 415.555.2671", "fax <PHONE>"),
    ("whatsapp +14155552671", "whatsapp <PHONE>"),
    ("London: +44 20 7946 0958", "London: <PHONE>"),
    ("ring 020 7946 0958 tomorrow", "ring <PHONE> tomorrow"),
    ("mobile 07911 123456", "mobile <PHONE>"),
    ("from abroad +44 (0)20 7946 0958", "from abroad <PHONE>"),
    ("Berlin +49 30 12345678", "Berlin <PHONE>"),
    ("Festnetz 030 12345678", "Festnetz <PHONE>"),
    ("Handy 0171 1234567", "Handy <PHONE>"),
    ("Paris +33 1 42 68 53 00", "Paris <PHONE>"),
    ("tél 06 12 34 56 78", "tél <PHONE>"),
    ("E.164: +33612345678", "E.164: <PHONE>"),
    ("Tel. 030 1234567 / 0171 1234567", "Tel. <PHONE> / <PHONE>"),
    ("Call (415) 555-2671 24/7", "Call <PHONE> 24/7"),
    ("from Germany dial 0049 30 12345678", "from Germany dial <PHONE>"),
    ("[+49 151 12345678]", "[<PHONE>]"),
    # Payment cards: compact, spaces, dashes, Amex grouping.
    ("card 4111 1111 1111 1111 exp 12/27", "card <CARD> exp 12/27"),
    ("pay with 5500-0000-0000-0004", "pay with <CARD>"),
    ("amex 3782 822463 10005", "amex <CARD>"),
    ("number 4012888888881881.", "number <CARD>."),
    # IBANs: DE, GB, FR, with and without spaces.
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN <IBAN>"),
    ("to DE89370400440532013000 today", "to <IBAN> today"),
    ("GB82 WEST 1234 5698 7654 32", "<IBAN>"),
    ("acct GB82WEST12345698765432.", "acct <IBAN>."),
    ("FR14 2004 1010 0505 0001 3M02 606", "<IBAN>"),
    ("IBAN: FR1420041010050500013M02606, BIC BNPAFRPP", "IBAN: <IBAN>, BIC BNPAFRPP"),
    ("BE71 0961 2345 6769 CODE", "<IBAN> CODE"),
    # US SSNs: dashed, or after a label.
    ("SSN 123-45-6789", "SSN <SSN>"),
    ("my social security number is 536-22-4567.", "my social security number is <SSN>."),
    ("ssn: 123456789", "ssn: <SSN>"),
    # IP addresses.
    ("from 203.0.113.42 at noon", "from <IP> at noon"),
    ("server 10.0.0.1:8080", "server <IP>:8080"),
    ("client ip=192.168.1.20", "client ip=<IP>"),
    ("IPv6 2001:db8::8a2e:370:7334", "IPv6 <IP>"),
    ("addr fe80::1ff:fe23:4567:890a.", "addr <IP>."),
    ("host 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "host <IP>"),
    ("mapped ::ffff:192.0.2.1", "mapped <IP>"),
    ("peer 1.2.3.4 connected", "peer <IP> connected"),
    # Secrets: JWT, Bearer, Basic, prefixed keys, labelled passwords, private keys.
    (f"token {_JWT}", "token <SECRET>"),
    (f"Authorization: Bearer {_JWT}", "Authorization: Bearer <SECRET>"),
    ("Authorization: Bearer abc123DEF456ghi789JKL", "Authorization: Bearer <SECRET>"),
    ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization: Basic <SECRET>"),
    ("OPENAI_API_KEY=sk-proj-AbC123dEf456GhI789jKl012MnO345", "OPENAI_API_KEY=<SECRET>"),
    ("use sk-abcdefghij1234567890ABCDEFGHIJ", "use <SECRET>"),
    ("github ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github <SECRET>"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws <SECRET>"),
    ("slack xoxb-1234567890-abcdefghij", "slack <SECRET>"),
    ("hf hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "hf <SECRET>"),
    ('{"password": "hunter2!x"}', '{"password": "<SECRET>"}'),
    ("api_key = 'a1b2c3d4e5f6'", "api_key = '<SECRET>'"),
    (
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n"
        "-----END RSA PRIVATE KEY-----\nbye",
        "key:\n<SECRET>\nbye",
    ),
    # Several kinds in one text.
    (
        "Jane (jane@corp.com, +44 20 7946 0958) paid with 4111-1111-1111-1111 from 198.51.100.7",
        "Jane (<EMAIL>, <PHONE>) paid with <CARD> from <IP>",
    ),
    (
        "Ünïcödé naïve café: écrivez à zoë@exemple.fr ou au 06 12 34 56 78 🙂",
        "Ünïcödé naïve café: écrivez à <EMAIL> ou au <PHONE> 🙂",
    ),
)

NEGATIVE_TEXTS: tuple[str, ...] = (
    "",
    "Order ORD-2024-001234 has shipped.",
    "Invoice INV-20241129-0042 is paid.",
    "Invoice #2024112900042",
    "PO 4500012345 approved",
    "Tracking 1Z999AA10123456784",
    # Dates and times.
    "Delivered on 2024-11-29.",
    "Due 29/11/2024 or 11/29/2024",
    "Released 29.11.2024",
    "at 2026-11-29T12:18:55Z",
    "Meeting at 10:30-11:45",
    "time 12:18:55.123",
    "created 1732881535",
    "created_ms 1732881535123",
    # Versions and section numbers.
    "Upgrade to 1.2.3 first.",
    "Running v10.0.1.2 on the node.",
    "version 1.2.3.4 is out",
    "release 2.0.0.1",
    "pip install foo==1.0.0.1",
    "Chrome 120.0.6099.109",
    "Windows 10.0.19045.3693",
    "see section 2.1.1.3",
    # Identifiers and hashes.
    "ISBN 978-3-16-148410-0",
    "ISBN 9783161484100",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "short sha 9fceb02",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "verification code 482913",
    "color #1a2b3c and #FFF",
    # Money and figures.
    "Total: $1,234.56",
    "Summe: 12.345,67 €",
    "Accuracy 99.5% over 1,000,000 rows",
    "lat 48.8566, lon 2.3522",
    "count 12 345 678",
    # Maths and code.
    "3 * 4 + 12 = 24",
    "1234567 + 7654321 = 8888888",
    "x = (2 + 3) * (4 - 1)",
    "std::vector<int> v; a::b::c",
    "use a::b; the dead::beef sentinel",
    "MAC 00:1A:2B:3C:4D:5E",
    "bind 0.0.0.0:8000",
    "localhost 127.0.0.1 and ::1",
    "ip 999.1.1.1 and 10.0.0.256",
    "file.tar.gz and a.b.c.d",
    # Card-like numbers that are not cards.
    "card 4111 1111 1111 1112",
    "4111111111111112",
    "ref 1234567812345670",
    "4111 1111-1111 1111",
    # IBAN-like strings that fail mod-97 or the country format.
    "DE89 3704 0044 0532 0130 01",
    "GB82WEST12345698765433",
    "XX12 3456 7890 1234 56",
    # SSN-shaped numbers the SSA never issues.
    "SSN 000-12-3456",
    "SSN 666-12-3456",
    "SSN 912-34-5678",
    "SSN 123-00-4567",
    "SSN 123-45-0000",
    # Words near secrets and emails.
    "the basic idea is simple",
    "Bearer tokens are sent in headers",
    "sk-learn is a library",
    "max_tokens=512 and tokens: 4096",
    "token: expired",
    "user@localhost",
    "@mention me in slack",
    "AKIA alone",
    "eyJhbGciOiJIUzI1NiJ9 alone",
    "call 911",
    "Room 101, floor 3",
    "ZIP 10115 Berlin",
    "ZIP 94105-1234",
    "ISBN 0-306-40615-2",
    "INV 2024 001234",
    "the years 2020 2021 2022 2023",
)

CASES: tuple[tuple[str, str], ...] = POSITIVE_CASES + tuple((t, t) for t in NEGATIVE_TEXTS)
