"""The dashboard without a browser: pages rendered from DashboardData, charts, sign-in logic.

The router runs on a minimal app (only the dashboard router, a fake evaluation service) through
Starlette's TestClient; the browser test drives the same pages in real Chromium.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from gateway.dashboard import DashboardPages, auth
from gateway.dashboard.charts import nice_ticks, score_chart, traffic_chart
from gateway.evaluation.protocol import DashboardData, EvalSummary, LoopJob, SamplePage
from tests.gateway.dashboard_fakes import NOW, TRAINER_ERROR, dashboard_app, demo_data, sample
from tests.helpers import ADMIN_TOKEN

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("pwned")</script>'


@pytest.fixture(scope="module")
def pages() -> DashboardPages:
    return DashboardPages()


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(dashboard_app(admin_token=ADMIN_TOKEN)) as test_client:
        yield test_client


def sign_in(client: TestClient, token: str = ADMIN_TOKEN, **fields: str):
    return client.post("/dashboard/login", data={"token": token, **fields}, follow_redirects=False)


# --- rendering -----------------------------------------------------------------------------
def test_dashboard_shows_traffic_quality_events_and_samples(pages: DashboardPages) -> None:
    html = pages.dashboard(demo_data())
    # traffic: every model/version with its counts and latencies
    for text in ("support-bot", "extract", "812", "1.53 s", "388 ms", "61,900"):
        assert text in html
    # quality: mean, baseline ± sigma, per-check pass rates, drift badges, feedback
    assert "0.912" in html and "0.688" in html
    assert "0.905 ± 0.031" in html
    assert "total_matches <b>55%</b>" in html
    assert re.search(r'class="badge drift-drift"[^>]*>drift<', html)
    assert re.search(r'class="badge drift-ok"[^>]*>ok<', html)
    assert re.search(r'class="badge drift-baseline"[^>]*>baseline<', html)
    # events and samples
    assert "drift_state_changed" in html and "alias_set" in html
    assert 'href="/dashboard/samples/100"' in html and 'href="/dashboard/samples/80"' in html
    assert "Extract the invoice number" in html
    assert '<meta http-equiv="refresh" content="30">' in html


def quality_section(html: str) -> str:
    match = re.search(r'<section class="card" id="quality">.*?</section>', html, flags=re.S)
    assert match is not None
    return match.group(0)


def quality_rows(html: str) -> dict[str, list[str]]:
    """Each alias's rows in the quality table, its own row first, then its version rows."""
    rows: dict[str, list[str]] = {}
    for row in re.findall(r"<tr class=.*?</tr>", quality_section(html), flags=re.S):
        rows.setdefault(re.search(r'data-alias="([^"]*)"', row).group(1), []).append(row)
    return rows


def test_quality_shows_each_aliases_drift_once_and_its_versions_own_figures(
    pages: DashboardPages,
) -> None:
    html = pages.dashboard(demo_data())
    section = quality_section(html)
    rows = quality_rows(html)
    assert list(rows) == ["extract", "summarize", "support-bot"]
    # the drifting alias shows its badge once, on its own row, with its baseline beside it
    assert len(re.findall(r'class="badge drift-drift"', section)) == 1
    alias_row, *versions = rows["extract"]
    assert 'class="alias-row"' in alias_row and re.search(r"drift-drift[^>]*>drift<", alias_row)
    assert "0.905 ± 0.031" in alias_row and section.count("0.905 ± 0.031") == 1
    assert "<code>v4</code>" in alias_row  # where the latest scored sample came from
    # its version rows carry their own means (v3 still good) and no drift badge
    assert [re.search(r'data-version="([^"]*)"', row).group(1) for row in versions] == [
        "v3",
        "v4",
    ]
    assert "0.912" in versions[0] and "0.688" in versions[1]
    for row in versions:
        assert 'class="version-row"' in row and "badge" not in row and "±" not in row
    assert len(re.findall(r'class="badge drift-', section)) == len(rows)  # one per alias
    # the drifting stat counts aliases, each once
    assert re.search(r'<span class="value">1</span><span class="hint">extract</span>', html)


def test_dashboard_draws_one_traffic_chart_and_a_score_chart_per_alias(
    pages: DashboardPages,
) -> None:
    html = pages.dashboard(demo_data())
    charts = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert len(charts) == 3
    titles = [ET.fromstring(chart).find(f"{SVG}title").text for chart in charts]
    assert titles == ["Requests per minute", "Mean score of extract", "Mean score of support-bot"]
    traffic = ET.fromstring(charts[0])
    assert len(traffic.findall(f"{SVG}path[@class='series']")) == 3
    extract = ET.fromstring(charts[1])
    assert len(extract.findall(f"{SVG}path[@class='series']")) == 2
    assert extract.find(f"{SVG}rect[@class='band']") is not None
    # support-bot has no baseline yet: no band
    assert ET.fromstring(charts[2]).find(f"{SVG}rect[@class='band']") is None


def test_score_chart_band_spans_baseline_mean_plus_minus_sigma() -> None:
    data = demo_data()
    series = data.scores[:1]  # extract@v3
    drift = data.summary.aliases[0]  # extract's baseline: 0.905 ± 0.031, the alias's
    series[0].points[0].mean = 0.02  # one score near 0, so the y axis spans 0..1
    svg = ET.fromstring(score_chart(series, title="t", drift=drift))
    band = svg.find(f"{SVG}rect[@class='band']")
    height = int(svg.get("height"))
    top, bottom = 34, height - 26  # plot area of line_chart
    expected_top = bottom - 0.936 * (bottom - top)
    expected_height = 0.062 * (bottom - top)
    assert float(band.get("y")) == pytest.approx(expected_top, abs=0.2)
    assert float(band.get("height")) == pytest.approx(expected_height, abs=0.2)
    path = svg.find(f"{SVG}path[@class='series']").get("d")
    assert path.startswith("M") and path.count("L") == len(series[0].points) - 1


def test_score_chart_zooms_to_the_scores() -> None:
    data = demo_data()
    drift = data.summary.aliases[0]
    svg = ET.fromstring(score_chart(data.scores[:2], title="t", drift=drift))  # 0.66..0.95
    ticks = [float(t.text) for t in svg.iter(f"{SVG}text") if t.get("x") == "38"]  # y axis
    assert ticks[0] == 0.6 and ticks[-1] == 1.0


def test_charts_without_data_say_so() -> None:
    svg = ET.fromstring(traffic_chart([], title="Requests per minute"))
    assert svg.findall(f"{SVG}path") == []
    assert "no requests in the window" in ET.tostring(svg, encoding="unicode")


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 37) == [0, 10, 20, 30, 40]
    assert nice_ticks(0, 0)[-1] > 0


def test_user_text_is_escaped_everywhere(pages: DashboardPages) -> None:
    evil = sample(7, at=NOW, alias=f"a{EVIL}", text=EVIL, response=EVIL, score=0.5)
    data = demo_data(extra_samples=[evil])
    data.scores[0].alias = f"a{EVIL}"  # alias names reach chart titles and legends
    data.summary.aliases[0].alias = f"a{EVIL}"  # ... and the quality table's alias rows
    data.events[0].detail["note"] = EVIL
    for html in (pages.dashboard(data, alias=EVIL), pages.sample(evil)):
        assert "<script" not in html
        assert "&lt;script&gt;" in html
    assert "<script" not in pages.login(error=EVIL, next_path=EVIL)


def test_pages_load_nothing_from_other_sites(pages: DashboardPages) -> None:
    data = demo_data()
    for html in (pages.dashboard(data), pages.sample(data.samples.data[0]), pages.login()):
        links = re.findall(r'(?:src|href|action)="([^"]*)"', html)
        own = [link for link in links if link != "data:,"]  # the empty favicon
        assert own and all(link.startswith("/dashboard") for link in own), links
        without_svg_namespace = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in without_svg_namespace and "https://" not in html
        assert "<script" not in html


def test_sample_page_shows_request_response_checks_and_feedback(pages: DashboardPages) -> None:
    record = sample(4, at=NOW, score=0.6)
    html = pages.sample(record)
    assert "Answer with JSON only." in html and "Extract the invoice number" in html
    assert "&#34;invoice&#34;: &#34;INV-2041&#34;" in html  # the response, escaped
    assert "valid_json" in html and "total_matches" in html and "judge_helpful" in html
    assert ">pass<" in html and ">fail<" in html and ">n/a<" in html
    assert "spot on" in html and "req-0004" in html
    assert "response_format" in html  # other request parameters


def test_empty_dashboard_renders(pages: DashboardPages) -> None:
    empty = DashboardData(
        generated_at=NOW,
        traffic=[],
        summary=EvalSummary(data=[], queue_depth=0, decisions={}),
        scores=[],
        events=[],
        samples=SamplePage(data=[]),
    )
    html = pages.dashboard(empty)
    assert "No samples scored yet." in html and "No events yet." in html
    assert "no requests in the window" in html
    assert "No retrain jobs yet." in loop_section(html)


# --- the retraining loop -------------------------------------------------------------------
def loop_section(html: str) -> str:
    match = re.search(r'<section class="card" id="loop">.*?</section>', html, flags=re.S)
    assert match is not None
    return match.group(0)


def loop_jobs_html(html: str) -> dict[int, str]:
    """Each job's card in the loop section, by job id, in page order."""
    pieces = loop_section(html).split('id="job-')[1:]
    return {int(piece.split('"', 1)[0]): piece for piece in pieces}


def test_loop_section_shows_each_jobs_steps_per_alias_newest_first(
    pages: DashboardPages,
) -> None:
    html = pages.dashboard(demo_data())
    section = loop_section(html)
    assert "No retrain jobs yet." not in section
    assert section.index('data-alias="extract"') < section.index('data-alias="support-bot"')
    jobs = loop_jobs_html(html)
    assert list(jobs) == [7, 5, 6]  # extract newest first, then support-bot

    promoted = jobs[7]
    assert re.search(r'class="badge job-good">promoted<', promoted)
    assert 'class="badge trigger">drift<' in promoted and "extract@v5" in promoted
    assert ">9c1e0b7d<" in promoted and "9c1e0b7d4a" not in promoted  # the short hash
    assert "3.2 s" in promoted and "412.7 s" in promoted and "58.4 s" in promoted
    assert "champion 0.688 vs challenger 0.903" in promoted
    assert "95% CI [+0.171, +0.262]" in promoted and "n=40" in promoted
    assert "valid_json 88% → 100%" in promoted
    assert "shadow 0.911 vs live 0.702" in promoted
    assert ">promote<" in promoted
    assert "12 samples" in promoted and "canary 0.897 vs champion 0.705" in promoted
    names = re.findall(r'class="step-name">(\w+)', promoted)
    assert names == ["trigger", "dataset", "training", "gate", "canary", "state"]

    rejected = jobs[5]
    assert re.search(r'class="badge job-fair">rejected<', rejected)
    assert 'class="badge trigger">manual<' in rejected
    assert "champion 0.905 vs challenger 0.892" in rejected
    assert "95% CI [-0.041, +0.015]" in rejected
    assert "reject: 95% CI [-0.041, +0.015] of the mean diff includes 0" in rejected
    assert ">promote<" not in rejected
    names = re.findall(r'class="step-name">(\w+)', rejected)
    assert names == ["trigger", "dataset", "training", "gate", "state"]  # no canary

    failed = jobs[6]
    assert re.search(r'class="badge job-poor">failed<', failed)
    assert ">51ab07c2<" in failed and "after dataset" in failed
    assert 'class="job-error">' + TRAINER_ERROR in failed
    names = re.findall(r'class="step-name">(\w+)', failed)
    assert names == ["trigger", "dataset", "state"]
    assert "job-error" not in promoted and "job-error" not in rejected


def test_loop_active_and_rolled_back_jobs_have_their_colours(pages: DashboardPages) -> None:
    data = demo_data()
    data.jobs = [
        LoopJob(id=9, alias="extract", state="running", trigger="manual", created_at=NOW,
                dataset_hash="abcdef0123456789", detail={"dataset": 1.0}),
        LoopJob(id=8, alias="extract", state="rolled_back", trigger="drift",
                created_at=NOW - timedelta(hours=1), verdict=data.jobs[0].verdict,
                detail={"canary_numbers": {"canary_samples": 3, "canary_mean": 0.5,
                                           "champion_mean": 0.9}}),
    ]  # fmt: skip
    jobs = loop_jobs_html(pages.dashboard(data))
    assert re.search(r'class="badge job-active">running<', jobs[9])
    assert "in progress" in jobs[9] and ">abcdef01<" in jobs[9]
    assert re.search(r'class="badge job-fair">rolled_back<', jobs[8])
    assert "3 samples" in jobs[8] and "canary 0.500 vs champion 0.900" in jobs[8]


def test_loop_shows_where_an_active_job_has_come(pages: DashboardPages) -> None:
    data = demo_data()
    progress = {"step": 3, "total": 8, "loss": 1.23456, "eta_s": 40}
    data.jobs = [
        LoopJob(id=11, alias="extract", state="running", trigger="drift", created_at=NOW,
                dataset_hash="abcdef0123456789", detail={"dataset": 1.0, "progress": progress}),
        LoopJob(id=10, alias="other", state="canary", trigger="drift", created_at=NOW,
                verdict=data.jobs[0].verdict, served_name="other@v2",
                detail={"training": 30.0, "gate": 9.0, "progress": progress,
                        "canary_progress": {"samples": 4, "needed": 10, "share": 20}}),
        LoopJob(id=12, alias="third", state="failed", trigger="drift", created_at=NOW,
                dataset_hash="abcdef0123456789", detail={"dataset": 1.0, "progress": progress}),
    ]  # fmt: skip
    jobs = loop_jobs_html(pages.dashboard(data))
    assert "step 3 of 8 · loss 1.2346" in jobs[11] and "in progress" in jobs[11]
    assert re.search(r'class="badge job-active">canary<', jobs[10])
    assert "4 of 10 samples" in jobs[10] and "30.0 s" in jobs[10]
    names = re.findall(r'class="step-name">(\w+)', jobs[12])
    assert names == ["trigger", "dataset", "state"], "a failed job: where it stopped, as before"


def test_loop_jobs_text_is_escaped(pages: DashboardPages) -> None:
    data = demo_data()
    data.jobs[1].error = f"RuntimeError: {EVIL}"
    data.jobs[2].verdict["reason"] = EVIL
    data.jobs[2].served_name = EVIL
    data.jobs[0].trigger = EVIL
    html = pages.dashboard(data)
    assert "<script" not in html
    jobs = loop_jobs_html(html)
    escaped = "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"
    assert f'class="job-error">RuntimeError: {escaped}' in jobs[6]
    assert escaped in jobs[5] and escaped in jobs[7]


def test_loop_shows_the_empty_message_without_jobs(pages: DashboardPages) -> None:
    data = demo_data()
    data.jobs = []
    section = loop_section(pages.dashboard(data))
    assert "No retrain jobs yet." in section and "job-" not in section


# --- sessions ------------------------------------------------------------------------------
def test_session_cookie_is_signed_expires_and_never_holds_the_token() -> None:
    key = ADMIN_TOKEN.encode()
    value = auth.new_session(key, now=1_000)
    assert ADMIN_TOKEN not in value
    assert auth.session_valid(value, key, now=1_001)
    assert not auth.session_valid(value, key, now=1_000 + auth.SESSION_TTL_S)  # expired
    assert not auth.session_valid(value, b"another-admin-token-value", now=1_001)
    expiry, _, signature = value.partition(".")
    assert not auth.session_valid(f"{int(expiry) + 60}.{signature}", key, now=1_001)
    far = auth.new_session(key, now=1_000, ttl_s=10 * auth.SESSION_TTL_S)
    assert not auth.session_valid(far, key, now=1_001)  # longer than this gateway grants
    for garbage in (None, "", ".", "abc.def", "1e9." + signature, value + "0"):
        assert not auth.session_valid(garbage, key, now=1_001)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dashboard/samples/12", "/dashboard/samples/12"),
        ("/dashboard?alias=extract", "/dashboard?alias=extract"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
        ("/dashboard/../admin/aliases", "/dashboard"),
        ("/dashboardx", "/dashboard"),
        ("/dashboard\r\nSet-Cookie: x=1", "/dashboard"),
        (None, "/dashboard"),
    ],
)
def test_after_sign_in_only_dashboard_paths(target: str | None, expected: str) -> None:
    assert auth.safe_next(target) == expected


# --- the router ----------------------------------------------------------------------------
def test_without_admin_token_the_dashboard_is_404() -> None:
    with TestClient(dashboard_app(admin_token=None)) as client:
        for path in ("/dashboard", "/dashboard/login", "/dashboard/samples/1"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "admin_disabled"
        assert sign_in(client).status_code == 404


def test_signed_out_visitors_are_sent_to_the_login_form(client: TestClient) -> None:
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    response = client.get("/dashboard/samples/100", follow_redirects=False)
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fsamples%2F100"
    form = client.get("/dashboard/login")
    assert form.status_code == 200
    assert 'type="password"' in form.text and 'name="token"' in form.text
    assert client.app.state.eval.calls == []


def test_wrong_token_is_401_with_the_form_and_no_cookie(client: TestClient) -> None:
    response = sign_in(client, token="not-the-token-at-all")
    assert response.status_code == 401
    assert "That is not the admin token." in response.text and 'name="token"' in response.text
    assert "set-cookie" not in response.headers


def test_sign_in_sets_a_strict_httponly_session_cookie(client: TestClient) -> None:
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{auth.COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert f"Max-Age={auth.SESSION_TTL_S}" in cookie and "Secure" not in cookie  # plain http
    assert ADMIN_TOKEN not in cookie and ADMIN_TOKEN not in response.headers["location"]

    page = client.get("/dashboard?alias=extract")
    assert page.status_code == 200 and "Mean score of extract" in page.text
    assert client.app.state.eval.calls == [{"alias": "extract", "sample_limit": 50}]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    detail = client.get("/dashboard/samples/100")
    assert detail.status_code == 200 and "Sample #100" in detail.text


def test_cookie_is_secure_over_https() -> None:
    app = dashboard_app(admin_token=ADMIN_TOKEN)
    with TestClient(app, base_url="https://testserver") as client:
        assert "Secure" in sign_in(client).headers["set-cookie"]


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(client: TestClient) -> None:
    assert sign_in(client, next="/dashboard/samples/100").headers["location"] == (
        "/dashboard/samples/100"
    )
    assert sign_in(client, next="https://evil.example/").headers["location"] == "/dashboard"


def test_scripts_can_use_the_bearer_token(client: TestClient) -> None:
    ok = client.get("/dashboard", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and "Requests per minute" in ok.text
    wrong = client.get("/dashboard", headers={"authorization": "Bearer wrong-token-value"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"


def test_missing_sample_is_404(client: TestClient) -> None:
    sign_in(client)
    response = client.get("/dashboard/samples/9999")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_sign_out_clears_the_cookie(client: TestClient) -> None:
    sign_in(client)
    response = client.post("/dashboard/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert 'tuneloop_dashboard=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_expired_or_forged_cookies_are_refused(client: TestClient) -> None:
    expired = auth.new_session(ADMIN_TOKEN.encode(), now=(NOW - timedelta(days=2)).timestamp())
    for value in (expired, "9999999999.deadbeef", ADMIN_TOKEN):
        client.cookies.set(auth.COOKIE_NAME, value, path="/dashboard")
        assert client.get("/dashboard", follow_redirects=False).status_code == 303
        client.cookies.clear()


def test_login_form_body_is_bounded_and_must_be_a_form(client: TestClient) -> None:
    big = client.post(
        "/dashboard/login",
        content=b"token=" + b"x" * 10_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413
    as_json = client.post("/dashboard/login", json={"token": ADMIN_TOKEN})
    assert as_json.status_code == 400


def test_stylesheet_is_served_by_the_gateway(client: TestClient, pages: DashboardPages) -> None:
    response = client.get(f"/dashboard/static/dashboard.css?v={pages.stylesheet_version}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert b".badge.drift-drift" in response.content
