"""Sessions, enrolment and the session cookie (trygg.api.sessions, trygg.api.oidc,
the store's sessions) against a real PostgreSQL, the API in-process (httpx's
ASGI transport, no runner): who may enrol whom, a code used once and only in
time, the Origin check of cookie-signed changes, bearer tokens unchanged, a
disabled user's or a replaced token's sessions refused, the claims mapping,
and the trail in the access log. The browser flows are in
tests/test_console_signin.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from trygg.api import sessions as sess_mod
from trygg.api.app import create_app
from trygg.api.oidc import SignInRefused, map_claims, resolve_user
from trygg.settings import Settings
from trygg.store import access as store
from trygg.store.users import add_user

BASE = "http://trygg.test"


class _Service:
    started = True

    def __init__(self) -> None:
        self.logged: list[tuple[Any, ...]] = []

    def log_access(self, *row: Any) -> None:
        self.logged.append(row)

    def actions(self, action: str) -> list[tuple[Any, ...]]:
        return [r for r in self.logged if r[2] == action]


class Api:
    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.service = _Service()

        async def db(fn: Any, *args: Any, **kw: Any) -> Any:
            def run() -> Any:
                with psycopg.connect(url) as conn:
                    return fn(conn, *args, **kw)

            return await asyncio.to_thread(run)

        class _Runner:
            pass

        runner = _Runner()
        runner.settings = settings  # type: ignore[attr-defined]
        self.app = create_app(service=self.service, runner=runner, db=db)  # type: ignore[arg-type]

    def client(self, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(
            transport=transport, base_url=BASE, headers={"host": "trygg.test", **headers}
        )


@pytest.fixture
def users(db: str) -> Iterator[dict[str, str]]:
    with psycopg.connect(db) as conn:
        tokens = {
            "leader-a": add_user(conn, "leader-a", "team_leader", ["team-a"]),
            "nurse-a": add_user(conn, "nurse-a", "care_staff", ["team-a"]),
            "nurse-b": add_user(conn, "nurse-b", "care_staff", ["team-b"]),
            "admin": add_user(conn, "admin", "admin"),
            "auditor": add_user(conn, "auditor", "auditor"),
        }
    yield tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _code(link: str) -> str:
    return link.split("code=", 1)[1]


async def _exchange(c: httpx.AsyncClient, code: str, **headers: str) -> httpx.Response:
    return await c.post(
        "/auth/enrol",
        content=f"code={code}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": BASE, **headers},
    )


def _cookie(r: httpx.Response) -> str:
    raw = r.headers["set-cookie"]
    assert "HttpOnly" in raw and "SameSite=strict" in raw and "Path=/" in raw, raw
    assert "Secure" not in raw  # plain http here; __Host- and Secure over https
    return raw.split(";", 1)[0]


def test_who_may_enrol_whom(db: str, users: dict[str, str]) -> None:
    api = Api(db)

    async def go() -> None:
        async with api.client() as c:
            enrol = "/api/enrolments"
            # care staff and auditors may not; a leader enrols its team's care staff
            for who in ("nurse-a", "auditor"):
                r = await c.post(enrol, json={"user": "nurse-a"}, headers=_bearer(users[who]))
                assert r.status_code == 403, r.text
            r = await c.post(enrol, json={"user": "nurse-b"}, headers=_bearer(users["leader-a"]))
            assert r.status_code == 403 and "not care staff of your teams" in r.json()["detail"]
            r = await c.post(enrol, json={"user": "admin"}, headers=_bearer(users["leader-a"]))
            assert r.status_code == 403
            r = await c.post(
                enrol, json={"user": "new-b", "team": "team-b"}, headers=_bearer(users["leader-a"])
            )
            assert r.status_code == 403 and "own teams" in r.json()["detail"]
            r = await c.post(enrol, json={"user": "ghost"}, headers=_bearer(users["leader-a"]))
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
            r = await c.post(enrol, json={"user": "nurse-a"}, headers=_bearer(users["leader-a"]))
            assert r.status_code == 201, r.text
            e = r.json()["enrolment"]
            assert e["link"].startswith(f"{BASE}/auth/enrol?code=te_")
            assert e["qr_svg"].startswith("<svg") and e["created_user"] is False
            assert e["user"] == "nurse-a" and e["created_by"] == "leader-a"
            # ten minutes (TRYGG_SESSION_ENROL_MINUTES)
            from datetime import datetime

            left = datetime.fromisoformat(e["expires_at"]) - datetime.fromisoformat(e["created_at"])
            assert left == timedelta(minutes=10)
            # an admin may create any role
            r = await c.post(
                enrol,
                json={"user": "lead-b", "team": "team-b", "role": "team_leader"},
                headers=_bearer(users["admin"]),
            )
            assert r.status_code == 201 and r.json()["enrolment"]["created_user"] is True
        (row,) = api.service.actions("session.enrol")[:1]
        assert row[0:2] == ("leader-a", "team_leader") and row[4]["user"] == "nurse-a"

    asyncio.run(go())


def test_a_code_works_once_in_time_and_the_session_cookie_signs_in(
    db: str, users: dict[str, str]
) -> None:
    api = Api(db, Settings(session_enrol_minutes=1, session_device_days=2, public_url=BASE))

    async def go() -> None:
        async with api.client() as c:
            r = await c.post(
                "/api/enrolments", json={"user": "nurse-a"}, headers=_bearer(users["admin"])
            )
            code = _code(r.json()["enrolment"]["link"])
            # the page shows whom it is for, and only the POST uses the code
            page = await c.get(f"/auth/enrol?code={code}")
            assert page.status_code == 200 and "nurse-a" in page.text
            assert page.headers["cache-control"] == "no-store"
            assert (await c.get(f"/auth/enrol?code={code}")).status_code == 200
            # from another site: refused, the code not used
            r = await _exchange(c, code, Origin="https://evil.example")
            assert r.status_code == 403
            r = await _exchange(
                c, code, **{"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4"}
            )
            assert r.status_code == 303 and r.headers["location"] == "/console"
            cookie = _cookie(r)
            assert "Max-Age=172800" in r.headers["set-cookie"]  # TRYGG_SESSION_DEVICE_DAYS=2
            # once
            r2 = await _exchange(c, code)
            assert r2.status_code == 410 and "allerede brukt" in r2.text
            assert "set-cookie" not in r2.headers
            # the cookie signs in; /api/me says which session
            r = await c.get("/api/me", headers={"Cookie": cookie})
            assert r.status_code == 200, r.text
            me = r.json()
            assert me["name"] == "nurse-a" and me["session"]["kind"] == "enrolled"
            # bearer tokens work as before, without a session
            me = (await c.get("/api/me", headers=_bearer(users["nurse-a"]))).json()
            assert me == {"name": "nurse-a", "role": "care_staff", "teams": ["team-a"]}
            # an unknown code, an expired one
            assert (await _exchange(c, "te_nonsense")).status_code == 404
            r = await c.post(
                "/api/enrolments", json={"user": "nurse-a"}, headers=_bearer(users["admin"])
            )
            late = _code(r.json()["enrolment"]["link"])
            with psycopg.connect(db) as conn:
                conn.execute(
                    "UPDATE api_enrolments SET created_at = created_at - interval '2 minutes',"
                    " expires_at = expires_at - interval '2 minutes' WHERE used_at IS NULL"
                )
            r = await _exchange(c, late)
            assert r.status_code == 410 and "utløpt" in r.text
        rows = api.service.actions("session.exchange")
        assert len(rows) == 1 and rows[0][0] == "nurse-a"
        assert rows[0][4]["device"] == "iPhone iOS 17.4"
        refused = api.service.actions("session.exchange_refused")
        assert [r[4]["reason"] for r in refused] == ["used", "expired"]

    asyncio.run(go())


def test_cookie_signed_changes_need_trygg_s_own_origin(db: str, users: dict[str, str]) -> None:
    api = Api(db)

    async def go() -> None:
        async with api.client() as c:
            r = await c.post(
                "/auth/token", json={"token": users["nurse-a"]}, headers={"Origin": BASE}
            )
            assert r.status_code == 200 and r.json()["session"]["kind"] == "token"
            cookie = _cookie(r)
            assert "Max-Age=43200" in r.headers["set-cookie"]  # 12 h
            h = {"Cookie": cookie}
            path = "/api/silences"
            body = {
                "scope": "resident",
                "target": "r-1",
                "end": "2030-01-01T00:00:00Z",
                "reason": "x",
            }
            for origin in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {}):
                r = await c.post(path, json=body, headers={**h, **origin})
                assert r.status_code == 403, (origin, r.text)
                assert "Origin" in r.json()["detail"]
            # same-origin (the console's own fetch) passes the check (and meets the route)
            r = await c.post(path, json=body, headers={**h, "Origin": BASE})
            assert r.status_code != 403, r.text
            r = await c.post(path, json=body, headers={**h, "Sec-Fetch-Site": "same-origin"})
            assert r.status_code != 403, r.text
            # reads need no Origin; a bearer token needs none either
            assert (await c.get("/api/me", headers=h)).status_code == 200
            r = await c.post(path, json=body, headers=_bearer(users["nurse-a"]))
            assert r.status_code != 403
            # sign-in and sign-out are checked too
            r = await c.post("/auth/token", json={"token": users["nurse-a"]})
            assert r.status_code == 403
            assert (await c.post("/auth/logout", headers=h)).status_code == 403
            r = await c.post("/auth/logout", headers={**h, "Origin": BASE})
            assert r.status_code == 204 and "trygg_session=" in r.headers["set-cookie"]
            await asyncio.sleep(1.1)  # past the credential cache
            assert (await c.get("/api/me", headers=h)).status_code == 401
            # a wrong token, a session secret given as a token
            r = await c.post("/auth/token", json={"token": "tg_wrong"}, headers={"Origin": BASE})
            assert r.status_code == 401
            secret = cookie.split("=", 1)[1]
            r = await c.post("/auth/token", json={"token": secret}, headers={"Origin": BASE})
            assert r.status_code == 401
        assert [r[2] for r in api.service.logged] == ["session.signin", "session.revoke"]
        assert api.service.logged[1][4]["reason"] == "signed out"

    asyncio.run(go())


def test_sessions_end_with_their_user_or_token_and_by_revocation(
    db: str, users: dict[str, str]
) -> None:
    with psycopg.connect(db) as conn:
        _, enrolled = store.create_session(
            conn, "nurse-a", kind="enrolled", created_by="t", valid_for=timedelta(days=1)
        )
        s1, _ = store.create_session(
            conn, "nurse-a", kind="enrolled", created_by="t", valid_for=timedelta(days=1)
        )
        s2, _ = store.create_session(
            conn,
            "nurse-b",
            kind="token",
            created_by="t",
            valid_for=timedelta(hours=1),
            token=users["nurse-b"],
        )
        assert store.user_by_session(conn, s1) is not None
        assert store.user_by_session(conn, s2) is not None
        # a new token for nurse-b: the session made from the old one ends
        add_user(conn, "nurse-b", "care_staff", ["team-b"])
        assert store.user_by_session(conn, s2) is None
        # nurse-a disabled: every session of it ends
        store.disable_user(conn, "nurse-a")
        assert store.user_by_session(conn, s1) is None
        assert store.active_session_hashes(conn, [store.hash_token(s1)]) == set()
        add_user(conn, "nurse-a", "care_staff", ["team-a"])  # enabled again
        assert store.user_by_session(conn, s1) is not None
        assert store.revoke_user_sessions(conn, "nurse-a", by="admin") != []
        assert store.user_by_session(conn, s1) is None
        assert store.revoke_session(conn, enrolled["id"], by="admin") is False  # already

    api = Api(db)

    async def go() -> None:
        async with api.client() as c:
            with psycopg.connect(db) as conn:
                mine, row = store.create_session(
                    conn, "nurse-a", kind="enrolled", created_by="t", valid_for=timedelta(days=1)
                )
                _, orow = store.create_session(
                    conn, "nurse-b", kind="enrolled", created_by="t", valid_for=timedelta(days=1)
                )
            h = {"Cookie": f"trygg_session={mine}", "Origin": BASE}
            listed = (await c.get("/api/sessions", headers=h)).json()["sessions"]
            assert [(s["id"], s["current"]) for s in listed] == [(row["id"], True)]
            # not another team's session; a leader may revoke its team's
            r = await c.post(f"/api/sessions/{orow['id']}/revoke", headers=h)
            assert r.status_code == 403
            r = await c.post(
                f"/api/sessions/{orow['id']}/revoke", headers=_bearer(users["leader-a"])
            )
            assert r.status_code == 403
            r = await c.post(
                f"/api/sessions/{row['id']}/revoke", headers=_bearer(users["leader-a"])
            )
            assert r.status_code == 200 and r.json()["session"]["active"] is False
            assert r.json()["session"]["revoked_by"] == "leader-a"
            await asyncio.sleep(1.1)
            assert (await c.get("/api/me", headers=h)).status_code == 401
            r = await c.post(f"/api/sessions/{orow['id']}/revoke", headers=_bearer(users["admin"]))
            assert r.status_code == 200
            assert (
                await c.post("/api/sessions/nope/revoke", headers=_bearer(users["admin"]))
            ).status_code == 404
        rows = api.service.actions("session.revoke")
        assert [(r[0], r[4]["user"]) for r in rows] == [
            ("leader-a", "nurse-a"),
            ("admin", "nurse-b"),
        ]

    asyncio.run(go())


def test_the_claims_mapping(db: str, users: dict[str, str]) -> None:
    kw: dict[str, Any] = {
        "username_claim": "preferred_username",
        "role_claim": "trygg_role",
        "teams_claim": "groups",
    }
    assert map_claims(
        {"preferred_username": "kari", "trygg_role": "care_staff", "groups": "team-a team-b"}, **kw
    ) == ("kari", "care_staff", ["team-a", "team-b"])
    assert map_claims(
        {"preferred_username": "ola", "trygg_role": ["x", "team_leader"], "groups": ["t"]}, **kw
    ) == ("ola", "team_leader", ["t"])
    assert map_claims({"preferred_username": "nurse-a"}, **kw) == ("nurse-a", None, [])
    with pytest.raises(SignInRefused, match="no 'preferred_username' claim"):
        map_claims({"sub": "x"}, **kw)
    with pytest.raises(SignInRefused, match="not a trygg role"):
        map_claims({"preferred_username": "x", "trygg_role": "root"}, **kw)
    with psycopg.connect(db) as conn:
        # no role claim: trygg's own role and teams
        assert resolve_user(conn, "nurse-a", None, [])["teams"] == ["team-a"]
        with pytest.raises(SignInRefused, match="is not a trygg user"):
            resolve_user(conn, "nobody", None, [])
        # a role claim creates, then updates, the user; never enables a disabled one
        assert resolve_user(conn, "kari", "care_staff", ["team-a"])["source"] == "oidc"
        assert resolve_user(conn, "kari", "team_leader", ["team-b"])["teams"] == ["team-b"]
        with pytest.raises(SignInRefused, match="no team"):
            resolve_user(conn, "per", "care_staff", [])
        store.disable_user(conn, "kari")
        with pytest.raises(SignInRefused, match="disabled"):
            resolve_user(conn, "kari", "care_staff", ["team-a"])


def test_sign_in_routes_are_described_and_the_config_says_what_is_offered(db: str) -> None:
    api = Api(db)

    async def go() -> None:
        async with api.client() as c:
            spec = (await c.get("/openapi.json")).json()
            for path in (
                "/auth/enrol",
                "/auth/token",
                "/auth/logout",
                "/api/enrolments",
                "/api/sessions",
                "/api/sessions/{session_id}/revoke",
            ):
                assert path in spec["paths"], path
            assert "/auth/oidc/login" not in spec["paths"]  # no provider configured
            assert (await c.get("/auth/config")).json() == {"oidc": False, "token": True}
            assert (await c.get("/auth/oidc/login")).status_code == 404

    asyncio.run(go())


def test_device_labels() -> None:
    label = sess_mod.device_label
    assert label("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/126.0 Mobile Safari/537.36") == (
        "Android 14 · Chrome"
    )
    assert label("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1") == (
        "iPhone iOS 17.4 · Safari"
    )
    assert label(None) == "unknown device"
