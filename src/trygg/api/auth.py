"""Bearer tokens and console sessions: who a credential is, asked of the database
at most once a second.

A credential is a bearer token (``trygg users add``) or a session's secret
(``ts_...``: an enrolled phone, an OpenID Connect sign-in, or a token typed
into the console; :mod:`trygg.api.sessions` takes it from the session cookie).
A session signs in until it is revoked or expires, or its user is disabled;
everything below holds for both, expiry included (a session past its
``expires_at`` is refused even from the cache, and even while the database is
away).

A disabled token is refused within :data:`TTL` (1 s) of ``trygg users
disable``, and an open live stream (SSE) of it is told within about two
seconds: the streams' tokens are checked together, one query a second
(:meth:`Auth.watch`).

While the database cannot be asked, a token that was valid at its last check
keeps working for :data:`GRACE` (5 min), so the console keeps ringing and staff
can keep answering alarms through an outage (a token cannot be disabled while
the database is away anyway); an unknown token gets 503 then. A failed check
is not retried for :data:`RETRY_AFTER` seconds, so requests do not each wait
for the pool's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trygg import logs
from trygg.store import access as access_store
from trygg.store.access import SESSION_PREFIX, User, hash_token

log = logs.get("trygg.api")

TTL = 1.0  # seconds an answer is reused
RECHECK = 1.0  # how often the tokens of open streams are checked again
GRACE = 300.0  # a valid token keeps working this long while the database is away
RETRY_AFTER = 5.0  # after a failed check, the database is asked again after this
MAX_CACHED = 10_000


class AuthUnavailable(Exception):
    """The database could not be asked and the token has no recent answer."""


@dataclass
class _Entry:
    checked: float  # monotonic time of the last answer from the database
    user: User | None
    retry_at: float = 0.0  # after a failed check: do not ask again before this


Db = Callable[..., Awaitable[Any]]


def is_session(credential: str) -> bool:
    return credential.startswith(SESSION_PREFIX)


def _alive(u: User | None) -> User | None:
    """``u``, or None once its session has expired."""
    if u is not None and u.expires_at is not None and datetime.now(UTC) >= u.expires_at:
        return None
    return u


class Auth:
    def __init__(self, db: Db, *, ttl: float = TTL, recheck: float = RECHECK) -> None:
        self._db = db
        self.ttl = ttl
        self.recheck = recheck
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[User | None]] = {}
        self._watched: dict[str, set[asyncio.Event]] = {}
        self._sessions: set[str] = set()  # which watched hashes are sessions' secrets
        self._task: asyncio.Task[None] | None = None
        self.revoked_streams = 0

    # ------------------------------------------------------------ requests

    async def user(self, token: str) -> User | None:
        """The token's user, or None for an unknown, disabled or replaced token.
        Raises :class:`AuthUnavailable` when that cannot be known."""
        h = hash_token(token)
        now = time.monotonic()
        e = self._cache.get(h)
        if e is not None:
            if now - e.checked < self.ttl:
                return _alive(e.user)
            if now < e.retry_at:  # the database failed lately: do not wait for it again
                if _alive(e.user) is not None and now - e.checked < GRACE:
                    return e.user
                raise AuthUnavailable("the database cannot be asked now")
        task = self._inflight.get(h)
        if task is None:  # one query per token, however many requests wait for it
            task = asyncio.ensure_future(self._lookup(token, h))
            self._inflight[h] = task
            task.add_done_callback(lambda _t: self._inflight.pop(h, None))
        return await asyncio.shield(task)

    async def _lookup(self, token: str, h: str) -> User | None:
        find = access_store.user_by_session if is_session(token) else access_store.user_by_token
        try:
            u: User | None = await self._db(find, token)
        except Exception as exc:
            now = time.monotonic()
            old = self._cache.get(h)
            if old is None:
                old = self._cache[h] = _Entry(float("-inf"), None)
            old.retry_at = now + RETRY_AFTER
            if _alive(old.user) is not None and now - old.checked < GRACE:
                log.warning("token not checked, database away", error=str(exc)[:200])
                return old.user
            raise AuthUnavailable(f"cannot check the token now: {exc}") from exc
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[h] = _Entry(time.monotonic(), u)
        return u

    # ------------------------------------------------------------ streams

    def watch(self, token: str) -> asyncio.Event:
        """An event set when ``token`` stops signing in (disabled, replaced; a
        session revoked or expired), checked every :attr:`recheck` seconds while
        it is watched."""
        ev = asyncio.Event()
        h = hash_token(token)
        self._watched.setdefault(h, set()).add(ev)
        if is_session(token):
            self._sessions.add(h)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._recheck_loop(), name="api-token-recheck")
        return ev

    def unwatch(self, token: str, ev: asyncio.Event) -> None:
        h = hash_token(token)
        evs = self._watched.get(h)
        if evs is not None:
            evs.discard(ev)
            if not evs:
                del self._watched[h]
                self._sessions.discard(h)

    async def _recheck_loop(self) -> None:
        while self._watched:
            await asyncio.sleep(self.recheck)
            hashes = list(self._watched)
            if not hashes:
                break
            tokens = [h for h in hashes if h not in self._sessions]
            sessions = [h for h in hashes if h in self._sessions]
            try:
                valid: set[str] = set()
                if tokens:
                    valid |= await self._db(access_store.active_token_hashes, tokens)
                if sessions:
                    valid |= await self._db(access_store.active_session_hashes, sessions)
            except Exception as exc:  # an outage does not close the consoles
                log.warning("stream tokens not checked", error=str(exc)[:200])
                # ... but a session that has expired meanwhile ends all the same
                valid = set(hashes)
                for h in sessions:
                    e = self._cache.get(h)
                    if e is not None and e.user is not None and _alive(e.user) is None:
                        valid.discard(h)
            for h in hashes:
                if h in valid:
                    continue
                self._cache.pop(h, None)
                self._sessions.discard(h)
                for ev in self._watched.pop(h, set()):
                    ev.set()
                    self.revoked_streams += 1

    def forget(self, token: str) -> None:
        """Drop the cached answer for ``token`` (a session just revoked here):
        the next request asks the database."""
        self._cache.pop(hash_token(token), None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
