"""Sign-in through a municipality's identity provider: OpenID Connect with Authlib.

The authorization code flow with PKCE (S256) and a nonce, as Authlib's
Starlette client does it: ``GET /auth/oidc/login`` sends the browser to the
provider (its endpoints from ``TRYGG_OIDC_ISSUER``'s
``/.well-known/openid-configuration``); ``GET /auth/oidc/callback`` checks the
state, redeems the code with the PKCE verifier (and the client secret, if
there is one), and checks the ID token's signature (the provider's JWKS),
issuer, audience, expiry and nonce. Then the claims are mapped to a trygg
user (docs/api.md, "Sign-in through the identity provider"):

- ``TRYGG_OIDC_USERNAME_CLAIM`` (``preferred_username``) is the user name;
- with ``TRYGG_OIDC_ROLE_CLAIM`` set and present in the claims, the role (and
  the teams from ``TRYGG_OIDC_TEAMS_CLAIM``) come from the provider: the user
  is created, or updated, at each sign-in;
- otherwise the user must exist in trygg (``trygg users add``) and keeps the
  role and teams it has there;
- a user disabled in trygg (``trygg users disable``) is refused either way.

Claims missing from the ID token are asked of the provider's userinfo
endpoint (some providers put only ``sub`` in the ID token); its ``sub`` must
be the ID token's.

The login's state (state, nonce, PKCE verifier) is kept by this API process
for 10 minutes under a random id in an HttpOnly cookie (``SameSite=Lax``,
path ``/auth/oidc``: it must come back on the provider's redirect, a
cross-site navigation), so it cannot be replayed and needs no signing key;
with several API processes behind a load balancer, the sign-in needs sticky
sessions.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import authlib.deprecate  # noqa: F401 (imported first: it adds an "always" filter of its own)
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from trygg import logs
from trygg.api.cookies import set_session_cookie
from trygg.api.pages import refused_page
from trygg.api.sessions import device_label

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and warns, once, when it falls
    # back to httpx (trygg's HTTP client); the fallback is supported
    # (docs/dependencies.md).
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth

from trygg.store import access as access_store
from trygg.store.access import ROLES, TEAM_ROLES

log = logs.get("trygg.api")

TX_COOKIE = "trygg_oidc"
TX_SECONDS = 600.0
MAX_PENDING = 10_000


class SignInRefused(ValueError):
    """The provider's answer does not sign anyone in to trygg; ``str`` says why."""

    def __init__(self, why: str, *, user: str | None = None, status: int = 403) -> None:
        super().__init__(why)
        self.user = user
        self.status = status


def _teams(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [t for t in v.replace(",", " ").split() if t]
    if isinstance(v, list | tuple):
        return [str(t) for t in v if str(t).strip()]
    return [str(v)]


def map_claims(
    claims: dict[str, Any],
    *,
    username_claim: str,
    role_claim: str | None,
    teams_claim: str | None,
) -> tuple[str, str | None, list[str]]:
    """(user name, role or None, teams) from the provider's claims."""
    name = claims.get(username_claim)
    if not isinstance(name, str) or not name.strip():
        raise SignInRefused(f"the identity provider gave no {username_claim!r} claim")
    role: str | None = None
    if role_claim:
        raw = claims.get(role_claim)
        if isinstance(raw, list):  # a list of roles: the first trygg knows
            raw = next((r for r in raw if r in ROLES), raw[0] if raw else None)
        if raw is not None:
            role = str(raw)
            if role not in ROLES:
                raise SignInRefused(
                    f"the identity provider's role {role!r} is not a trygg role", user=name
                )
    teams = _teams(claims.get(teams_claim)) if teams_claim else []
    return name.strip(), role, teams


def resolve_user(conn: Any, name: str, role: str | None, teams: list[str]) -> dict[str, Any]:
    """The trygg user the claims name (a database function: created or updated
    from a role claim, else as it is); :class:`SignInRefused` if none may sign in."""
    if role is not None:
        if role in TEAM_ROLES and not teams:
            raise SignInRefused(f"the identity provider gave {name} the role {role} but no team")
        u = access_store.ensure_user(conn, name, role, teams, source="oidc", update=True)
    else:
        found = access_store.get_user(conn, name)
        if found is None:
            raise SignInRefused(f"{name} is not a trygg user", user=name)
        u = found
    if u["disabled_at"] is not None:
        raise SignInRefused(f"{name} is disabled in trygg", user=name)
    return u


class Oidc:
    """The provider's client (Authlib) and the two routes."""

    def __init__(self, settings: Any) -> None:
        self.issuer = str(settings.oidc_issuer).rstrip("/")
        self.username_claim = settings.oidc_username_claim
        self.role_claim = settings.oidc_role_claim or None
        self.teams_claim = settings.oidc_teams_claim or None
        self.public_url = settings.public_url or None
        self.oauth = OAuth()
        kwargs: dict[str, Any] = {
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            "timeout": 10,
        }
        if not settings.oidc_client_secret:
            kwargs["token_endpoint_auth_method"] = "none"
        self.client: Any = self.oauth.register(
            "idp",
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret or None,
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_kwargs=kwargs,
        )
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> Oidc | None:
        if settings is None or not getattr(settings, "oidc_issuer", None):
            return None
        if not settings.oidc_client_id:
            log.warning("TRYGG_OIDC_ISSUER is set without TRYGG_OIDC_CLIENT_ID: no sign-in")
            return None
        return cls(settings)

    def _redirect_uri(self, request: Request) -> str:
        base = self.public_url.rstrip("/") if self.public_url else str(request.base_url).rstrip("/")
        return f"{base}/auth/oidc/callback"

    def _keep(self, data: dict[str, Any]) -> str:
        now = time.monotonic()
        if len(self._pending) >= MAX_PENDING:
            for k in [k for k, (t, _) in self._pending.items() if t < now]:
                del self._pending[k]
            if len(self._pending) >= MAX_PENDING:
                self._pending.clear()
        tx = secrets.token_urlsafe(24)
        self._pending[tx] = (now + TX_SECONDS, data)
        return tx

    def _take(self, tx: str | None) -> dict[str, Any] | None:
        if not tx:
            return None
        got = self._pending.pop(tx, None)
        if got is None or got[0] < time.monotonic():
            return None
        return got[1]

    async def login(self, request: Request) -> Response:
        request.scope["session"] = {}
        resp: Response = await self.client.authorize_redirect(request, self._redirect_uri(request))
        tx = self._keep(dict(request.scope["session"]))
        resp.set_cookie(
            TX_COOKIE,
            tx,
            max_age=int(TX_SECONDS),
            path="/auth/oidc",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def claims(self, request: Request) -> dict[str, Any]:
        """The checked claims of the provider's answer (ID token, then userinfo)."""
        data = self._take(request.cookies.get(TX_COOKIE))
        if data is None:
            raise SignInRefused(
                "the sign-in was not started here, or took more than 10 minutes", status=400
            )
        request.scope["session"] = data
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            raise SignInRefused(
                f"the identity provider refused: {exc.error}"
                + (f" ({exc.description})" if exc.description else ""),
                status=401,
            ) from None
        idc = token.get("userinfo")
        if not idc:
            raise SignInRefused("the identity provider sent no ID token", status=401)
        claims = dict(idc)
        wanted = [c for c in (self.username_claim, self.role_claim, self.teams_claim) if c]
        meta = await self.client.load_server_metadata()
        if any(c not in claims for c in wanted) and meta.get("userinfo_endpoint"):
            info = dict(await self.client.userinfo(token=token))
            if info.get("sub") != claims.get("sub"):
                raise SignInRefused("the userinfo's subject is not the ID token's", status=401)
            claims = {**info, **claims}
        return claims

    def install(
        self,
        router: APIRouter,
        *,
        store: Callable[..., Awaitable[Any]],
        log_session: Callable[..., None],
        signin_ttl: timedelta,
    ) -> None:
        @router.get(
            "/auth/oidc/login",
            summary="sign in through the identity provider (redirects there)",
            status_code=302,
            response_class=RedirectResponse,
            responses={302: {"description": "to the identity provider"}},
        )
        async def oidc_login(request: Request) -> Response:
            try:
                return await self.login(request)
            except Exception as exc:
                log.error("identity provider not reachable", error=str(exc)[:300])
                return refused_page(
                    503,
                    "Innloggingstjenesten svarer ikke nå. Prøv igjen om litt.",
                    "The identity provider does not answer now. Try again in a moment.",
                )

        @router.get(
            "/auth/oidc/callback",
            summary="where the identity provider sends the browser back: a session cookie"
            " and a redirect to /console",
            status_code=303,
            response_class=RedirectResponse,
            responses={303: {"description": "signed in: to /console"}},
        )
        async def oidc_callback(request: Request) -> Response:
            label = device_label(request.headers.get("user-agent"))
            name: str | None = None
            try:
                try:
                    claims = await self.claims(request)
                except SignInRefused:
                    raise
                except Exception as exc:
                    log.error("OIDC sign-in failed", error=f"{type(exc).__name__}: {exc}"[:300])
                    raise SignInRefused(
                        "the identity provider's answer could not be checked", status=401
                    ) from None
                name, role, teams = map_claims(
                    claims,
                    username_claim=self.username_claim,
                    role_claim=self.role_claim,
                    teams_claim=self.teams_claim,
                )
                u = await store(resolve_user, name, role, teams)
            except SignInRefused as exc:
                who = exc.user or name
                log.warning("OIDC sign-in refused", user=who, why=str(exc))
                if who:
                    log_session(
                        {"name": who, "role": "-"},
                        "session.signin_refused",
                        method="oidc",
                        issuer=self.issuer,
                        reason=str(exc),
                        device=label,
                    )
                resp: Response = refused_page(
                    exc.status,
                    "Innloggingen ble avvist: " + str(exc),
                    "Sign-in refused: " + str(exc),
                )
                resp.delete_cookie(TX_COOKIE, path="/auth/oidc")
                return resp
            secret, sess = await store(
                access_store.create_session,
                u["name"],
                kind="oidc",
                created_by=f"oidc {self.issuer}",
                valid_for=signin_ttl,
                label=label,
            )
            log_session(
                u,
                "session.signin",
                session=sess["id"],
                method="oidc",
                issuer=self.issuer,
                sub=claims.get("sub"),
                device=label,
                expires_at=sess["expires_at"],
            )
            resp = RedirectResponse("/console", status_code=303)
            resp.delete_cookie(TX_COOKIE, path="/auth/oidc")
            set_session_cookie(resp, request, secret, sess["expires_at"])
            resp.headers["Cache-Control"] = "no-store"
            return resp
