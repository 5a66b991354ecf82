"""Hostile input over every route: an OpenAI-shaped 4xx within a second, never a 5xx or a hang,
and the gateway still ready afterwards (issue #10).

The battery is one table. A row names the route it attacks (``"METHOD /template"``, as the app
declares it), the request as sent (path percent-encoded as on the wire, raw body bytes, headers)
and the status it must get. ``test_every_route_is_attacked`` walks the app's routes: a route
that takes a body or a path parameter must have rows here or an exemption with its reason, so a
new route without rows fails. Rows that may reach the model keep generations to 1-2 tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.helpers import ADMIN_TOKEN, MODEL, running_gateway, wait_until

INFERENCE_KEY = "fuzz-inference-key-0123456789"
# Every answer, refusal included, within this. A refusal costs milliseconds (the slowest row
# took 0.4 s on an idle machine); the bound catches work that grows with the input (a YAML
# alias bomb once took 9 s) without timing the shared CI cores, where a row took 1.2 s.
ROW_SECONDS = 5.0
CLIENT_TIMEOUT = 10.0  # a hang fails the row instead of blocking the run
MAX_BODY = 4 * 1024 * 1024  # Settings.max_body_bytes's default, which the gateway keeps
COLLECTION = "fuzz"  # created by the fixture, so search rows reach a real index

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ADMIN = f"Bearer {ADMIN_TOKEN}"
INFERENCE = f"Bearer {INFERENCE_KEY}"
NO_AUTH = ""  # send no Authorization header

Body = bytes | Callable[[], bytes] | None


@dataclass(frozen=True)
class Row:
    route: str | None  # "METHOD /template" of the route under attack; None: no route at all
    id: str
    method: str
    path: str  # as sent, percent-encoded, with any query string
    body: Body = None  # a callable for big bodies, built only when the row runs
    expect: tuple[int, ...] = (400,)
    content_type: str | None = JSON
    auth: str | None = None  # None: the right credential for the path; NO_AUTH: none
    html: bool = False  # the dashboard's sign-in form answers a wrong token with itself (401)


ROWS: list[Row] = []


def row(
    route: str,
    id: str,
    body: Body = None,
    *,
    path: str | None = None,
    expect: int | tuple[int, ...] = 400,
    content_type: str | None = JSON,
    auth: str | None = None,
    html: bool = False,
    attacks: bool = True,
) -> None:
    """Add a row against ``route`` (``"METHOD /template"``); ``path`` defaults to the
    template itself (a route without parameters). ``attacks=False``: a request that matches
    no declared route (an unknown path, a wrong method)."""
    method, template = route.split(" ", 1)
    statuses = (expect,) if isinstance(expect, int) else expect
    ROWS.append(
        Row(
            route=route if attacks else None,
            id=id,
            method=method,
            path=path or template,
            body=body,
            expect=statuses,
            content_type=content_type,
            auth=auth,
            html=html,
        )
    )


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def deep_arrays(levels: int = 100_000) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_objects(levels: int = 100_000) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def sized(template: dict, key: str, size: int) -> Callable[[], bytes]:
    """``template`` with ``key`` set to a string that makes the body about ``size`` bytes."""
    return lambda: dumps({**template, key: "x" * size})


def json_battery(
    route: str, short: str, good: dict, *, path: str | None = None, strict: bool = True
) -> None:
    """What any JSON route must refuse with a 4xx: not JSON, the wrong JSON, too much JSON.

    ``strict``: the route refuses unknown fields, so 1 MiB of one (under the body limit) is a
    400 too; the OpenAI routes forward unknown fields to the model server instead.
    """
    text = dumps(good)
    for kind, body in (
        ("not-json", b"{this is not json"),
        ("truncated", text[: len(text) // 2]),
        ("empty", b""),
        ("array", b"[]"),
        ("number", b"42"),
        ("null", b"null"),
        ("string", b'"hello"'),
        ("nan", b"NaN"),
        ("deep-arrays", deep_arrays()),
        ("deep-objects", deep_objects()),
        ("invalid-utf8", b'{"\xff\xfe": "\xc3\x28"}'),
        ("nul-byte", text[:-1] + b',"x":"\x00"}'),
    ):
        row(route, f"{short}-{kind}", body, path=path)
    row(route, f"{short}-10mb", sized(good, "x", 10 * 1024 * 1024), path=path, expect=413)
    row(route, f"{short}-just-over-limit", sized(good, "x", MAX_BODY), path=path, expect=413)
    if strict:
        row(route, f"{short}-1mb-unknown-field", sized(good, "x", 1024 * 1024), path=path)


def auth_battery(route: str, short: str, body: Body = None, *, path: str | None = None) -> None:
    """Missing and wrong credentials: 401 before anything else is looked at."""
    ctype = JSON if body is not None else None
    wrong = INFERENCE if route.split(" ", 1)[1].startswith("/admin") else ADMIN
    row(route, f"{short}-no-auth", body, path=path, expect=401, auth=NO_AUTH, content_type=ctype)
    row(route, f"{short}-other-key", body, path=path, expect=401, auth=wrong, content_type=ctype)
    row(
        route,
        f"{short}-basic-auth",
        body,
        path=path,
        expect=401,
        content_type=ctype,
        auth="Basic YWRtaW46YWRtaW4=",
    )


# Names as a path segment, percent-encoded as sent: each must be refused or not found.
NAME_TRICKS = {
    "dotdot": "%2e%2e",
    "traversal": "..%2f..%2fetc%2fpasswd",
    "absolute": "%2fetc%2fpasswd",
    "backslash": "..%5c..%5cwindows",
    "nul": "abc%00def",
    "newline": "abc%0a",
    "unicode": "%e2%80%ae%f0%9f%92%a5",
    "long": "a" * 5000,
}


def name_battery(
    route: str,
    short: str,
    template: str,
    *,
    body: Body = None,
    expect: tuple[int, ...] = (400, 404),
) -> None:
    """``template`` with ``{name}`` replaced by each trick."""
    ctype = JSON if body is not None else None
    for kind, name in NAME_TRICKS.items():
        row(
            route,
            f"{short}-name-{kind}",
            body,
            path=template.format(name=name),
            expect=expect,
            content_type=ctype,
        )


HI = [{"role": "user", "content": "hi"}]
CHAT = {"model": MODEL, "messages": HI, "max_tokens": 1}
COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 1}


def chat(id: str, change: dict, expect: int | tuple[int, ...] = 400) -> None:
    row("POST /v1/chat/completions", f"chat-{id}", dumps({**CHAT, **change}), expect=expect)


def chat_raw(id: str, fields: bytes, expect: int | tuple[int, ...] = 400) -> None:
    """CHAT plus raw JSON text (for literals json.dumps will not write: NaN, 1e400...)."""
    row(
        "POST /v1/chat/completions",
        f"chat-{id}",
        dumps(CHAT)[:-1] + b"," + fields + b"}",
        expect=expect,
    )


# --- /v1/chat/completions ----------------------------------------------------------------
json_battery("POST /v1/chat/completions", "chat", CHAT, strict=False)
auth_battery("POST /v1/chat/completions", "chat", dumps(CHAT))
chat("messages-missing", {"messages": None})
chat("messages-empty", {"messages": []})
chat("messages-string", {"messages": "hi"})
chat("messages-numbers", {"messages": [1, 2]})
chat("role-wizard", {"messages": [{"role": "wizard", "content": "hi"}]})
chat("role-empty", {"messages": [{"role": "", "content": "hi"}]})
chat("role-missing", {"messages": [{"content": "hi"}]})
chat("role-number", {"messages": [{"role": 7, "content": "hi"}]})
chat("content-number", {"messages": [{"role": "user", "content": 42}]})
chat("content-object", {"messages": [{"role": "user", "content": {"a": 1}}]})
chat("too-many-messages", {"messages": HI * 10_000})
chat("model-number", {"model": 42})
chat("model-empty", {"model": ""})
chat("model-unknown", {"model": "no-such-model"}, expect=404)
chat("model-traversal", {"model": "../../etc/passwd"}, expect=404)
chat("model-nul", {"model": "smollm2\x00"}, expect=404)
chat("model-1mb", {"model": "m" * 1024 * 1024}, expect=404)
chat("max-tokens-zero", {"max_tokens": 0})
chat("max-tokens-negative", {"max_tokens": -1})
chat("max-tokens-string", {"max_tokens": "lots"})
chat("max-tokens-huge", {"max_tokens": 10**400})
chat("max-tokens-2e63", {"max_tokens": 2**63})
chat("max-tokens-over-context", {"max_tokens": 10**6})
chat("n-zero", {"n": 0})
chat("n-over-cap", {"n": 100})
chat("n-2e63", {"n": 2**63})
chat("temperature-string", {"temperature": "hot"})
chat("temperature-negative", {"temperature": -1})
chat("top-p-over-one", {"top_p": 2})
chat("stream-string", {"stream": "maybe"})
chat("stream-options-wrong", {"stream": True, "stream_options": {"include_usage": "yes please"}})
chat("stop-too-many", {"stop": ["x"] * 1000})
chat("retrieval-string", {"retrieval": COLLECTION})
chat("retrieval-traversal", {"retrieval": {"collection": "../../etc"}}, expect=(400, 404))
chat("retrieval-top-k-huge", {"retrieval": {"collection": COLLECTION, "top_k": 10**400}})
chat("retrieval-filter-list", {"retrieval": {"collection": COLLECTION, "filter": [1]}})
chat("response-format-banana", {"response_format": {"type": "banana"}})
chat("response-format-string", {"response_format": "json"})
chat(
    "json-schema-invalid",
    {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "banana"}},
        }
    },
)
for kind, schema in (
    ("remote-ref", {"$ref": "http://127.0.0.1:9/schema.json"}),
    ("file-ref", {"properties": {"x": {"$ref": "file:///etc/passwd"}}}),
    ("dangling-ref", {"$ref": "#/$defs/nowhere"}),
    ("ref-loop", {"$ref": "#"}),
    (
        "ref-cycle",
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    ),
):
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    chat(f"json-schema-{kind}", {"response_format": response_format})
chat("json-validation-wrong", {"json_validation": "lenient"})
chat(
    "image-file-url",
    {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
            }
        ]
    },
)
chat("tools-string", {"tools": "all of them"})
chat("seed-huge", {"seed": 10**400})
row(
    "POST /v1/chat/completions",
    "chat-duplicate-model",
    b'{"model": "%s", "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], '
    b'"max_tokens": 1}' % MODEL.encode(),
    expect=404,
)
chat_raw("temperature-nan", b'"temperature": NaN')
chat_raw("temperature-infinity", b'"temperature": Infinity')
chat_raw("temperature-1e400", b'"temperature": 1e400')
chat_raw("top-p-nan", b'"top_p": NaN')
row(
    "POST /v1/chat/completions", "chat-form-content-type", b"model=x&messages=hi", content_type=FORM
)

# --- /v1/completions ----------------------------------------------------------------------
json_battery("POST /v1/completions", "completions", COMPLETION, strict=False)
auth_battery("POST /v1/completions", "completions", dumps(COMPLETION))
for kind, change, expect in (
    ("prompt-missing", {"prompt": None}, 400),
    ("prompt-object", {"prompt": {"a": 1}}, 400),
    ("prompt-token-negative", {"prompt": [[1, 2, -1]]}, 400),
    ("prompt-token-huge", {"prompt": [10**400]}, 400),
    ("prompt-token-out-of-vocab", {"prompt": [10**12]}, 400),
    ("best-of-over-cap", {"best_of": 1000}, 400),
    ("n-over-cap", {"n": 1000}, 400),
    ("max-tokens-huge", {"max_tokens": 10**400}, 400),
    ("retrieval-on-completions", {"retrieval": {"collection": COLLECTION}}, 400),
    ("model-traversal", {"model": "..\\..\\windows"}, 404),
):
    row(
        "POST /v1/completions",
        f"completions-{kind}",
        dumps({**COMPLETION, **change}),
        expect=expect,
    )

# --- /v1/models ----------------------------------------------------------------------------
auth_battery("GET /v1/models", "models")

# --- /v1/feedback --------------------------------------------------------------------------
FEEDBACK = {"request_id": "no-such-request", "score": 0.5}
json_battery("POST /v1/feedback", "feedback", FEEDBACK)
auth_battery("POST /v1/feedback", "feedback", dumps(FEEDBACK))
for kind, change, expect in (
    ("unknown-request", {}, 404),
    ("request-id-empty", {"request_id": ""}, 400),
    ("request-id-long", {"request_id": "r" * 129}, 400),
    ("score-string", {"score": "great"}, 400),
    ("score-negative", {"score": -1}, 400),
    ("score-huge", {"score": 10**400}, 400),
    ("correction-1mb", {"correction": "c" * 1024 * 1024}, 400),
    ("unknown-field", {"rating": 5}, 400),
):
    row("POST /v1/feedback", f"feedback-{kind}", dumps({**FEEDBACK, **change}), expect=expect)
row("POST /v1/feedback", "feedback-score-infinity", b'{"request_id": "x", "score": Infinity}')

# --- /v1/collections/{name}/search --------------------------------------------------------
SEARCH_ROUTE = "POST /v1/collections/{name}/search"
SEARCH_PATH = f"/v1/collections/{COLLECTION}/search"
SEARCH = {"query": "hello", "top_k": 2}
json_battery(SEARCH_ROUTE, "search", SEARCH, path=SEARCH_PATH)
auth_battery(SEARCH_ROUTE, "search", dumps(SEARCH), path=SEARCH_PATH)
name_battery(SEARCH_ROUTE, "search", "/v1/collections/{name}/search", body=dumps(SEARCH))
for kind, change in (
    ("query-empty", {"query": ""}),
    ("query-number", {"query": 5}),
    ("top-k-zero", {"top_k": 0}),
    ("top-k-huge", {"top_k": 10**400}),
    ("filter-string", {"filter": "source=x"}),
    ("unknown-field", {"rerank": True}),
):
    row(SEARCH_ROUTE, f"search-{kind}", dumps({**SEARCH, **change}), path=SEARCH_PATH)

# --- /admin/adapters -----------------------------------------------------------------------
ADAPTER = {"name": "fuzz", "path": "no-such-adapter"}
json_battery("POST /admin/adapters", "adapters", ADAPTER)
auth_battery("POST /admin/adapters", "adapters", dumps(ADAPTER))
for kind, change in (
    ("path-traversal", {"path": "../../etc/passwd"}),
    ("path-absolute", {"path": "/etc"}),
    ("path-backslashes", {"path": "..\\..\\etc"}),
    ("path-nul", {"path": "a\x00b"}),
    ("path-long", {"path": "a" * 5000}),
    ("path-empty", {"path": ""}),
    ("path-number", {"path": 7}),
    ("name-traversal", {"name": "../x"}),
    ("name-unicode", {"name": "\u202eevil"}),
    ("unknown-field", {"rank": 8}),
):
    row("POST /admin/adapters", f"adapters-{kind}", dumps({**ADAPTER, **change}))
name_battery("DELETE /admin/adapters/{served_name}", "adapter-delete", "/admin/adapters/{name}")
auth_battery("DELETE /admin/adapters/{served_name}", "adapter-delete", path="/admin/adapters/x@v1")

# --- /admin/aliases ------------------------------------------------------------------------
ALIAS = {"targets": {"fuzz@v1": 100}}
json_battery("PUT /admin/aliases/{alias}", "alias", ALIAS, path="/admin/aliases/fuzz")
auth_battery("PUT /admin/aliases/{alias}", "alias", dumps(ALIAS), path="/admin/aliases/fuzz")
name_battery("PUT /admin/aliases/{alias}", "alias", "/admin/aliases/{name}", body=dumps(ALIAS))
for kind, targets in (
    ("targets-empty", "{}"),
    ("targets-list", '["fuzz@v1"]'),
    ("weight-huge", '{"fuzz@v1": %s}' % ("9" * 400)),
    ("weight-negative", '{"fuzz@v1": -1}'),
    ("weight-nan", '{"fuzz@v1": NaN}'),
    ("weight-string", '{"fuzz@v1": "all"}'),
):
    row(
        "PUT /admin/aliases/{alias}",
        f"alias-{kind}",
        b'{"targets": %s}' % targets.encode(),
        path="/admin/aliases/fuzz",
        expect=(400, 404),
    )
row(
    "PUT /admin/aliases/{alias}",
    "alias-response-format-banana",
    dumps({**ALIAS, "response_format": {"type": "banana"}}),
    path="/admin/aliases/fuzz",
    expect=(400, 404),
)
name_battery("POST /admin/aliases/{alias}/rollback", "rollback", "/admin/aliases/{name}/rollback")
auth_battery("POST /admin/aliases/{alias}/rollback", "rollback", path="/admin/aliases/x/rollback")
name_battery("DELETE /admin/aliases/{alias}", "alias-delete", "/admin/aliases/{name}")

# --- /admin/collections --------------------------------------------------------------------
NEW_COLLECTION = {"name": "fuzz-new", "chunk_size": 0}  # refused: chunk_size >= 1
json_battery("POST /admin/collections", "collections", NEW_COLLECTION)
auth_battery("POST /admin/collections", "collections", dumps({"name": "fuzz-auth"}))
for kind, change in (
    ("name-traversal", {"name": "../../etc"}),
    ("name-absolute", {"name": "/etc/passwd"}),
    ("name-slash", {"name": "a/b"}),
    ("name-backslash", {"name": "a\\b"}),
    ("name-nul", {"name": "abc\x00"}),
    ("name-newline", {"name": "abc\n"}),
    ("name-unicode", {"name": "caf\u00e9"}),
    ("name-long", {"name": "a" * 5000}),
    ("chunk-size-huge", {"chunk_size": 10**400}),
    ("chunk-overlap-negative", {"chunk_size": 10, "chunk_overlap": -1}),
    ("index-kind-unknown", {"index_kind": "ivf"}),
):
    row("POST /admin/collections", f"collections-{kind}", dumps({**NEW_COLLECTION, **change}))
INGEST_ROUTE = "POST /admin/collections/{name}/documents"
INGEST_PATH = f"/admin/collections/{COLLECTION}/documents"
INGEST = {"documents": [{"id": "d", "text": ""}]}  # refused: text needs a character
json_battery(INGEST_ROUTE, "ingest", INGEST, path=INGEST_PATH)
auth_battery(INGEST_ROUTE, "ingest", dumps(INGEST), path=INGEST_PATH)
name_battery(
    INGEST_ROUTE,
    "ingest",
    "/admin/collections/{name}/documents",
    body=dumps({"documents": [{"id": "d", "text": "t"}]}),
)
for kind, documents in (
    ("documents-empty", []),
    ("documents-too-many", [{"id": f"d{i}", "text": "t"} for i in range(1001)]),
    ("document-id-long", [{"id": "i" * 257, "text": "t"}]),
    ("document-text-number", [{"id": "d", "text": 5}]),
    ("document-metadata-list", [{"id": "d", "text": "t", "metadata": [1]}]),
):
    row(INGEST_ROUTE, f"ingest-{kind}", dumps({"documents": documents}), path=INGEST_PATH)
DELETE_DOC = "DELETE /admin/collections/{name}/documents/{doc_id}"
name_battery(DELETE_DOC, "document-delete", f"/admin/collections/{COLLECTION}/documents/{{name}}")
name_battery(DELETE_DOC, "document-delete-collection", "/admin/collections/{name}/documents/d")

# --- /admin/rubrics/{alias} ----------------------------------------------------------------
RUBRIC_ROUTE = "PUT /admin/rubrics/{alias}"
RUBRIC = b"checks:\n  - type: json_valid\n"
for kind, body, ctype, expect in (
    ("empty", b"", None, 400),
    ("whitespace", b"   \n", None, 400),
    ("not-yaml", b"checks: [unclosed", None, 400),
    ("json-array", b"[1, 2]", JSON, 400),
    ("json-null", b"null", JSON, 400),
    ("invalid-utf8", b"checks:\n  - type: \xff\xfe\n", None, 400),
    ("nul-byte", b"checks:\n  - type: json_valid\x00\n", None, 400),
    ("python-tag", b"!!python/object/apply:os.system ['true']", None, 400),
    ("alias-bomb", b"a: &a [x, x]\nb: &b [*a, *a]\nchecks: [*b]\n", None, 400),
    ("recursive-alias", b"checks:\n  - &c {type: json_schema, schema: {x: *c}}\n", None, 400),
    ("deep-flow", b"checks: " + b"[" * 60_000 + b"]" * 60_000, None, (400, 413)),
    ("deep-json", deep_objects(20_000), JSON, (400, 413)),
    ("unknown-check", b"checks:\n  - type: telepathy\n", None, 400),
    ("bad-regex", b'checks:\n  - type: regex\n    pattern: "("\n', None, 400),
    ("1mb", lambda: b"description: " + b"x" * 1024 * 1024 + b"\n" + RUBRIC, None, 413),
    ("10mb", lambda: b"description: " + b"x" * 10 * 1024 * 1024 + b"\n" + RUBRIC, None, 413),
):
    row(
        RUBRIC_ROUTE,
        f"rubric-{kind}",
        body,
        path="/admin/rubrics/fuzz",
        content_type=ctype,
        expect=expect,
    )
name_battery(RUBRIC_ROUTE, "rubric", "/admin/rubrics/{name}", body=RUBRIC)
auth_battery(RUBRIC_ROUTE, "rubric", RUBRIC, path="/admin/rubrics/fuzz")
name_battery("GET /admin/rubrics/{alias}", "rubric-get", "/admin/rubrics/{name}")

# --- /admin/eval ---------------------------------------------------------------------------
for kind, sample in (
    ("huge", "9" * 400),
    ("2e63", str(2**63)),
    ("negative", "-1"),
    ("zero", "0"),
    ("text", "abc"),
    ("float", "1.5"),
):
    row(
        "GET /admin/eval/samples/{sample_id}",
        f"sample-{kind}",
        path=f"/admin/eval/samples/{sample}",
        content_type=None,
    )
    row(
        "GET /dashboard/samples/{sample_id}",
        f"dashboard-sample-{kind}",
        path=f"/dashboard/samples/{sample}",
        content_type=None,
        auth=ADMIN,
    )
auth_battery("GET /admin/eval/samples/{sample_id}", "sample", path="/admin/eval/samples/1")
for kind, query in (
    ("before-2e63", f"before={2**63}"),
    ("limit-huge", "limit=" + "9" * 400),
    ("score-nan", "score_below=NaN"),
    ("limit-text", "limit=many"),
):
    row(
        "GET /admin/eval/samples",
        f"samples-{kind}",
        path=f"/admin/eval/samples?{query}",
        content_type=None,
    )
name_battery("POST /admin/eval/ack/{alias}", "ack", "/admin/eval/ack/{name}")
auth_battery("POST /admin/eval/ack/{alias}", "ack", path="/admin/eval/ack/fuzz")
auth_battery("POST /admin/eval/drift-check", "drift-check")
auth_battery("POST /admin/eval/reports", "report-write")
name_battery("GET /admin/eval/reports/{name}", "report", "/admin/eval/reports/{name}")
row(
    "GET /admin/eval/reports/{name}",
    "report-missing",
    path="/admin/eval/reports/eval-1999-01-01.json",
    content_type=None,
    expect=404,
)

# --- /admin/retrain, /admin/datasets, /admin/jobs ----------------------------------------
RETRAIN = {"alias": "fuzz", "max_steps": 1}  # refused: fuzz has no dataset
json_battery("POST /admin/retrain", "retrain", RETRAIN)
auth_battery("POST /admin/retrain", "retrain", dumps(RETRAIN))
for kind, change in (
    ("no-dataset", {}),
    ("alias-empty", {"alias": ""}),
    ("alias-traversal", {"alias": "../../etc"}),
    ("alias-nul", {"alias": "fu\x00zz"}),
    ("alias-newline", {"alias": "fuzz\n"}),
    ("max-steps-huge", {"max_steps": 10**400}),
    ("max-steps-negative", {"max_steps": -1}),
    ("lr-zero", {"lr": 0}),
    ("lr-string", {"lr": "fast"}),
    ("unknown-field", {"gpus": 8}),
):
    row("POST /admin/retrain", f"retrain-{kind}", dumps({**RETRAIN, **change}))
row("POST /admin/retrain", "retrain-lr-nan", b'{"alias": "fuzz", "lr": NaN}')
row("POST /admin/retrain", "retrain-lr-infinity", b'{"alias": "fuzz", "lr": Infinity}')

IMPORT_ROUTE = "POST /admin/datasets/{alias}"
EXAMPLE = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
for kind, body in (
    ("empty", b""),
    ("not-json", b"{this is not json\n"),
    ("json-array-line", b"[1, 2]\n"),
    ("deep-arrays", deep_arrays()),
    ("deep-objects", deep_objects()),
    ("invalid-utf8", b'{"messages": "\xff\xfe"}\n'),
    ("role-wizard", EXAMPLE.replace(b'"user"', b'"wizard"')),
    ("no-assistant", EXAMPLE.replace(b'"assistant"', b'"user"')),
    ("content-number", EXAMPLE.replace(b'"q"', b"5")),
    ("10mb-garbage", lambda: b"x" * 10 * 1024 * 1024),
):
    row(
        IMPORT_ROUTE,
        f"dataset-{kind}",
        body,
        path="/admin/datasets/fuzz",
        content_type="application/jsonl",
    )
name_battery(IMPORT_ROUTE, "dataset", "/admin/datasets/{name}", body=EXAMPLE)
auth_battery(IMPORT_ROUTE, "dataset", EXAMPLE, path="/admin/datasets/fuzz")
for kind, number in (
    ("huge", "9" * 400),
    ("2e63", str(2**63)),
    ("negative", "-1"),
    ("text", "latest"),
):
    row(
        "GET /admin/datasets/{alias}/{version}",
        f"dataset-version-{kind}",
        path=f"/admin/datasets/fuzz/{number}",
        content_type=None,
    )
    row(
        "GET /admin/datasets/{alias}/{a}/diff/{b}",
        f"dataset-diff-{kind}",
        path=f"/admin/datasets/fuzz/1/diff/{number}",
        content_type=None,
    )
    row("GET /admin/jobs/{job_id}", f"job-{kind}", path=f"/admin/jobs/{number}", content_type=None)
    row(
        "POST /admin/jobs/{job_id}/cancel",
        f"job-cancel-{kind}",
        path=f"/admin/jobs/{number}/cancel",
        content_type=None,
    )
name_battery("GET /admin/datasets/{alias}/{version}", "dataset-version", "/admin/datasets/{name}/1")
name_battery(
    "GET /admin/datasets/{alias}/{a}/diff/{b}", "dataset-diff", "/admin/datasets/{name}/1/diff/2"
)
row(
    "GET /admin/jobs/{job_id}",
    "job-missing",
    path="/admin/jobs/999999",
    content_type=None,
    expect=404,
)
auth_battery("GET /admin/jobs/{job_id}", "job", path="/admin/jobs/1")
row(
    "POST /admin/jobs/{job_id}/cancel",
    "job-cancel-missing",
    path="/admin/jobs/999999/cancel",
    content_type=None,
    expect=404,
)
auth_battery("POST /admin/jobs/{job_id}/cancel", "job-cancel", path="/admin/jobs/1/cancel")

# --- /admin/keys ---------------------------------------------------------------------------
# Every row must be refused: one key created would switch /v1 over to managed keys (so no row
# sends an otherwise valid key with a NUL in its models: that one is accepted today).
NEW_KEY = {"name": "fuzz key"}  # refused: no spaces in a key name
json_battery("POST /admin/keys", "keys", NEW_KEY)
auth_battery("POST /admin/keys", "keys", dumps({"name": "fuzz-auth"}))
for kind, change in (
    ("name-traversal", {"name": "../../etc/passwd"}),
    ("name-nul", {"name": "k\x00"}),
    ("name-long", {"name": "k" * 5000}),
    ("name-number", {"name": 5}),
    ("rpm-2e63", {"name": "fuzz-rpm", "requests_per_minute": 2**63}),
    ("tpm-huge", {"name": "fuzz-tpm", "tokens_per_minute": 10**400}),
    ("expires-in-huge", {"name": "fuzz-exp", "expires_in": 10**400}),
    ("expires-at-garbage", {"name": "fuzz-exp", "expires_at": "next tuesday"}),
    ("expires-at-past", {"name": "fuzz-exp", "expires_at": "2000-01-01T00:00:00+00:00"}),
    ("models-string", {"name": "fuzz-models", "models": "all"}),
    ("unknown-field", {"name": "fuzz-extra", "admin": True}),
):
    row("POST /admin/keys", f"keys-{kind}", dumps({**NEW_KEY, **change}))
for route, short, template in (
    ("GET /admin/keys/{key}", "key-get", "/admin/keys/{name}"),
    ("GET /admin/keys/{key}/usage", "key-usage", "/admin/keys/{name}/usage"),
    ("DELETE /admin/keys/{key}", "key-revoke", "/admin/keys/{name}"),
):
    name_battery(route, short, template)
    auth_battery(route, short, path=template.format(name="fuzz"))
row(
    "GET /admin/keys/{key}/usage",
    "key-usage-hours-huge",
    path=f"/admin/keys/fuzz/usage?hours={'9' * 400}",
    content_type=None,
)

# --- the dashboard's sign-in form ----------------------------------------------------------
LOGIN = "POST /dashboard/login"
row(LOGIN, "login-json", dumps({"token": ADMIN_TOKEN}))
row(
    LOGIN,
    "login-multipart",
    b"--b\r\n\r\n--b--\r\n",
    content_type="multipart/form-data; boundary=b",
)
row(LOGIN, "login-no-content-type", b"token=x", content_type=None)
row(LOGIN, "login-over-4kib", b"token=" + b"x" * 5000, content_type=FORM, expect=413)
row(LOGIN, "login-10mb", lambda: b"token=" + b"x" * 10 * 1024 * 1024, content_type=FORM, expect=413)
row(
    LOGIN,
    "login-wrong-token",
    b"token=nope&next=%2F%2Fevil.example",
    content_type=FORM,
    expect=401,
    html=True,
)
row(LOGIN, "login-invalid-utf8", b"token=\xff\xfe\x00", content_type=FORM, expect=401, html=True)
row(
    "GET /dashboard/login",
    "login-next-long",
    path="/dashboard/login?next=" + "x" * 1000,
    content_type=None,
)

# --- anywhere ------------------------------------------------------------------------------
row("GET /v1/no-such-route", "unknown-route", content_type=None, expect=404, attacks=False)
row("GET /v1/chat/completions", "wrong-method", content_type=None, expect=405, attacks=False)
row("PATCH /admin/adapters", "admin-wrong-method", dumps(ADAPTER), expect=405, attacks=False)

# Routes that need no rows: they take no body and no path parameter, or cannot refuse.
EXEMPT = {
    "POST /dashboard/logout": "takes no body or parameter; always clears the cookie and "
    "redirects (303), whatever is sent",
}


# --- the tests -----------------------------------------------------------------------------
def app_routes() -> dict[str, bool]:
    """``"METHOD /template"`` of every route the app declares -> whether rows are required
    (it takes a body, being POST/PUT/PATCH, or has a path parameter)."""
    app = create_app(Settings(upstreams=["http://127.0.0.1:9"], admin_token=ADMIN_TOKEN))
    routes = {}
    for route in app.routes:
        methods = getattr(route, "methods", None) or set()
        for method in sorted(methods - {"HEAD"}):
            needs_rows = method in {"POST", "PUT", "PATCH"} or bool(route.param_convertors)
            routes[f"{method} {route.path}"] = needs_rows
    return routes


def test_every_route_is_attacked() -> None:
    routes = app_routes()
    attacked = {r.route for r in ROWS if r.route is not None}
    required = {route for route, needs_rows in routes.items() if needs_rows}
    assert not required - attacked - EXEMPT.keys(), "routes without fuzz rows or an exemption"
    assert not attacked - routes.keys(), "rows for routes the app no longer has"
    assert not EXEMPT.keys() - routes.keys(), "exemptions for routes the app no longer has"
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    assert len(ROWS) >= 100


@pytest.fixture(scope="module")
def gateway(engine_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway in front of the real vLLM server, with inference keys and the admin API on,
    and a small collection so that search rows reach a real index."""
    folder = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        upstreams=[engine_url],
        admin_token=ADMIN_TOKEN,
        api_keys=INFERENCE_KEY,
        data_dir=folder / "data",
        adapter_root=folder / "adapters",
        health_interval=1,
    )
    (folder / "adapters").mkdir()
    with running_gateway(settings) as url:
        wait_until(lambda: ready(url), timeout=60, what="the fuzz gateway to be ready")
        admin = {"authorization": ADMIN}
        created = httpx.post(
            f"{url}/admin/collections", json={"name": COLLECTION}, headers=admin, timeout=60
        )
        assert created.status_code == 201, created.text
        document = {"documents": [{"id": "hello", "text": "Hello from the fuzz collection."}]}
        ingested = httpx.post(
            f"{url}/admin/collections/{COLLECTION}/documents",
            json=document,
            headers=admin,
            timeout=120,
        )
        assert ingested.status_code == 200, ingested.text  # the embedder is loaded now
        yield url


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def credential(row: Row) -> str | None:
    if row.auth is not None:
        return row.auth or None
    if row.path.startswith("/admin"):
        return ADMIN
    if row.path.startswith("/v1"):
        return INFERENCE
    return None


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_request_gets_a_quick_openai_4xx(gateway: str, row: Row) -> None:
    body = row.body() if callable(row.body) else row.body
    headers = {}
    if row.content_type is not None:
        headers["content-type"] = row.content_type
    if (auth := credential(row)) is not None:
        headers["authorization"] = auth
    with httpx.Client(base_url=gateway, timeout=CLIENT_TIMEOUT) as client:
        started = time.perf_counter()
        response = client.request(row.method, row.path, content=body, headers=headers)
        elapsed = time.perf_counter() - started
    assert response.status_code in row.expect, response.text[:500]
    assert 400 <= response.status_code < 500
    assert elapsed < ROW_SECONDS, f"answered in {elapsed:.2f}s"
    assert "Traceback" not in response.text
    if row.html:
        assert response.headers["content-type"].startswith("text/html")
        return
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "param" in error and "code" in error


def test_still_ready_after_the_battery(gateway: str) -> None:
    """Runs last (pytest keeps file order): the battery left the gateway serving."""
    assert ready(gateway)
    response = httpx.post(
        f"{gateway}/v1/chat/completions",
        json={**CHAT, "max_tokens": 2},
        headers={"authorization": INFERENCE},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
