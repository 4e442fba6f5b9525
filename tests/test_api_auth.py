"""The API's token check (trygg.api.auth, trygg.api.limits) without a database:
a fake store answers, so the number of lookups, the one-second reuse, a
disabled token and a database outage can be driven exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from trygg.api import auth as auth_mod
from trygg.api.app import create_app
from trygg.store import access as access_store
from trygg.store.access import User, hash_token

NURSE = User("nurse-1", "care_staff", ("t1",))


class FakeStore:
    def __init__(self) -> None:
        self.users = {"good": NURSE}
        self.lookups = 0
        self.calls = 0
        self.down = False

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        if fn is access_store.user_by_token:
            self.lookups += 1
            return self.users.get(args[0])
        if fn is access_store.active_token_hashes:
            return {hash_token(t) for t in self.users} & set(args[0])
        raise AssertionError(fn)


class _Service:
    started = True


def _client(store: FakeStore, **kw: Any) -> httpx.AsyncClient:
    app = create_app(service=_Service(), db=store, **kw)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_one_lookup_per_token_a_second_and_a_disabled_token_refused_within_it() -> None:
    store = FakeStore()

    async def go() -> None:
        async with _client(store) as c:
            rs = await asyncio.gather(*(c.get("/api/me", headers=_h("good")) for _ in range(20)))
            assert {r.status_code for r in rs} == {200}
            assert rs[0].json() == {"name": "nurse-1", "role": "care_staff", "teams": ["t1"]}
            assert store.lookups == 1  # the guard's, shared; the route asks no more
            del store.users["good"]  # disabled
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 200  # reused
            await asyncio.sleep(auth_mod.TTL + 0.05)
            r = await c.get("/api/me", headers=_h("good"))
            assert r.status_code == 401 and r.json()["detail"] == "unknown or disabled token"
            assert store.lookups == 2

    asyncio.run(go())


def test_a_database_outage_keeps_known_tokens_and_refuses_unknown_ones_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore()
    monkeypatch.setattr(auth_mod, "RETRY_AFTER", 0.3)

    async def go() -> None:
        async with _client(store) as c:
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 200
            store.down = True
            await asyncio.sleep(auth_mod.TTL + 0.05)
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 200
            r = await c.get("/api/me", headers=_h("unknown"))
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"].startswith("cannot check the token now")
            # not asked again at once: requests do not each wait for the pool's timeout
            calls = store.calls
            assert (await c.get("/api/me", headers=_h("unknown"))).status_code == 503
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 200
            assert store.calls == calls
            # past the grace, a known token is refused too
            monkeypatch.setattr(auth_mod, "GRACE", 0.0)
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 503
            store.down = False
            await asyncio.sleep(0.35)
            assert (await c.get("/api/me", headers=_h("good"))).status_code == 200

    asyncio.run(go())


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from trygg.settings import Settings

    store = FakeStore()
    monkeypatch.setenv("TRYGG_HTTP_MAX_BODY_BYTES", "2048")
    settings = Settings()
    assert settings.http_max_body_bytes == 2048

    async def go() -> None:
        async with _client(store, settings=settings) as c:
            r = await c.post("/api/silences", headers=_h("good"), content=b"x" * 2049)
            assert r.status_code == 413 and r.json()["max_bytes"] == 2048
            assert r.headers["connection"] == "close"
        async with _client(store, max_body_bytes=4096) as c:
            r = await c.post("/api/silences", headers=_h("good"), content=b"x" * 2049)
            assert r.status_code == 422  # under this app's own limit: read and validated

    asyncio.run(go())


def test_watched_tokens_are_told_when_they_stop_signing_in() -> None:
    store = FakeStore()
    store.users["other"] = NURSE

    async def go() -> None:
        a = auth_mod.Auth(store, recheck=0.05)
        ev_good, ev_other = a.watch("good"), a.watch("other")
        await asyncio.sleep(0.15)
        assert not ev_good.is_set() and not ev_other.is_set()
        store.down = True  # an outage does not close the streams
        await asyncio.sleep(0.15)
        assert not ev_good.is_set()
        store.down = False
        del store.users["good"]
        await asyncio.wait_for(ev_good.wait(), 1)
        assert not ev_other.is_set() and a.revoked_streams == 1
        a.unwatch("other", ev_other)
        await asyncio.sleep(0.15)
        assert a._task is not None and a._task.done()  # no streams, no checks

    asyncio.run(go())
