"""Signing in to the dashboard: the API key itself, kept in an HttpOnly, SameSite=Strict cookie
(Secure over https), never in a URL. The cookie's key is checked exactly as the API checks
its header (``service.keys.authenticate``), on every request, so revoking it logs out."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from service.http.deps import get_ledger
from service.keys import Principal, authenticate

COOKIE = "rl_dashboard_key"
PATH = "/dashboard"
MAX_AGE_S = 8 * 3600  # a working day; the key itself stays valid until revoked
MAX_FORM_BYTES = 4096


class LoginRefused(ValueError):
    """A key the dashboard does not take, with the reason shown on the form."""


def check_key(request: Request, presented: str) -> Principal:
    """The principal of a presented key that may read, or ``LoginRefused``."""
    if not presented.strip():
        raise LoginRefused("enter an API key (rlk_…)")
    principal = authenticate(get_ledger(request).engine, presented)
    if principal is None:
        raise LoginRefused("unknown or revoked API key")
    if not principal.has("read"):
        raise LoginRefused("this key lacks the 'read' scope")
    return principal


def signed_in(request: Request) -> Principal | None:
    """The principal of the cookie's key, or None (no cookie, or the key no longer works)."""
    presented = request.cookies.get(COOKIE)
    if not presented:
        return None
    try:
        return check_key(request, presented)
    except LoginRefused:
        return None


def remember(response: Response, request: Request, key: str) -> None:
    response.set_cookie(
        COOKIE,
        key.strip(),
        max_age=MAX_AGE_S,
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def forget(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def local_target(target: str | None) -> str:
    """Where to go after signing in: a dashboard page of this site, nothing else."""
    if not target:
        return PATH
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PATH) or "\\" in target:
        return PATH
    return target


def to_login(request: Request) -> RedirectResponse:
    """To the login form, remembering the page (its path and filters, never a key)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"{PATH}/login?{urlencode({'next': target})}", status_code=303)
    if request.cookies.get(COOKIE):
        forget(response, request)  # a key that stopped working
    return response


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form body (no multipart parser needed for one field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items()}


def same_origin(request: Request) -> bool:
    """A form POST from a page of this site. SameSite=Strict already keeps the cookie off
    other sites' requests; an ``Origin`` of another host is refused as well."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")
