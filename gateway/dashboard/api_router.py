"""The operator dashboard (``/dashboard``): HTML pages behind the admin token.

``/dashboard`` is outside the ``/admin/`` prefix that the Bearer middleware guards, so these
routes check access themselves: a signed session cookie set by the sign-in form, or
``Authorization: Bearer <admin token>`` for scripts. With no admin token configured the
dashboard answers 404, like the admin API.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.dashboard import auth
from gateway.dashboard.serving import DashboardPages
from gateway.exceptions import AdminDisabled, InvalidRequest, NotFound, Unauthorized
from gateway.http import RowId, error_responses, read_body

logger = logging.getLogger("tuneloop.gateway")

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


async def get_admin_token(request: Request) -> bytes:
    """The admin token; the dashboard does not exist (404) while none is configured."""
    token = request.app.state.settings.admin_token
    if token is None:
        raise AdminDisabled()
    return token.get_secret_value().encode()


async def get_pages(request: Request) -> DashboardPages:
    return request.app.state.dashboard


AdminTokenDep = Annotated[bytes, Depends(get_admin_token)]
PagesDep = Annotated[DashboardPages, Depends(get_pages)]


def signed_in(request: Request, admin_token: bytes) -> bool:
    """A valid session cookie or Bearer admin token; a wrong Bearer token is a 401."""
    presented = auth.bearer_token(request.headers.get("authorization"))
    if presented is not None:
        if not auth.token_matches(presented, admin_token):
            raise Unauthorized("Incorrect admin token provided.")
        return True
    return auth.session_valid(request.cookies.get(auth.COOKIE_NAME), admin_token)


def page(html: str, *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/dashboard/login"
    if target != "/dashboard":
        location += "?next=" + quote(auth.safe_next(target), safe="")
    return RedirectResponse(location, status_code=303, headers={"cache-control": "no-store"})


@router.get("", responses=error_responses(AdminDisabled, Unauthorized))
async def dashboard(
    request: Request,
    admin_token: AdminTokenDep,
    pages: PagesDep,
    alias: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    if not signed_in(request, admin_token):
        return to_login(request)
    alias = alias or None
    data = await request.app.state.eval.dashboard_data(alias=alias, sample_limit=50)
    return page(pages.dashboard(data, alias=alias))


@router.get("/samples/{sample_id}", responses=error_responses(AdminDisabled, NotFound))
async def sample(
    sample_id: RowId, request: Request, admin_token: AdminTokenDep, pages: PagesDep
) -> Response:
    if not signed_in(request, admin_token):
        return to_login(request)
    record = await request.app.state.eval.sample(sample_id)
    return page(pages.sample(record))


@router.get("/login", responses=error_responses(AdminDisabled))
async def login_form(
    request: Request,
    admin_token: AdminTokenDep,
    pages: PagesDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=512)] = None,
) -> Response:
    if auth.session_valid(request.cookies.get(auth.COOKIE_NAME), admin_token):
        return RedirectResponse(auth.safe_next(next_path), status_code=303)
    return page(pages.login(next_path=auth.safe_next(next_path)))


@router.post("/login", responses=error_responses(AdminDisabled, InvalidRequest))
async def login(request: Request, admin_token: AdminTokenDep, pages: PagesDep) -> Response:
    form = await read_form(request)
    next_path = auth.safe_next(form.get("next"))
    if not auth.token_matches(form.get("token", ""), admin_token):
        client = request.client.host if request.client else "-"
        logger.warning("event=dashboard_login_failed client=%s", client)
        return page(
            pages.login(error="That is not the admin token.", next_path=next_path),
            status_code=401,
        )
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        auth.COOKIE_NAME,
        auth.new_session(admin_token),
        max_age=auth.SESSION_TTL_S,
        path=auth.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", responses=error_responses(AdminDisabled))
async def logout(request: Request, admin_token: AdminTokenDep) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(
        auth.COOKIE_NAME,
        path=auth.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/static/dashboard.css", responses=error_responses(AdminDisabled))
async def stylesheet(admin_token: AdminTokenDep, pages: PagesDep) -> Response:
    return Response(
        pages.stylesheet,
        media_type="text/css",
        headers={"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"},
    )


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form (first value per field), refused when larger than 4 KiB."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("Send the form as application/x-www-form-urlencoded.")
    body = await read_body(request, MAX_FORM_BYTES)
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}
