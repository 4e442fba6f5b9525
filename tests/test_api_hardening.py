"""API hardening (issue 16, item 2) against a real broker, database and trygg:
the body limit and authentication before the body, disabled tokens and their
live streams, live-stream deliveries in the access log, 404 for malformed ids,
one error shape (RFC 9457), and the OpenAPI description with its own Swagger UI."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from tests.alerting_stack import Stack, start_stack
from tests.helpers import WebhookReceiver, wait_until
from tests.http_raw import raw_upload
from trygg.api import problems
from trygg.store.access import disable_user

PROBLEM = "application/problem+json"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as h:
        yield h


@pytest.fixture
def stack(db, broker, tmp_path, hook) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = start_stack(db, broker, tmp_path, webhook_url=hook.url)
    try:
        yield s
    finally:
        s.close()


def _problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and isinstance(body["title"], str)
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


# ------------------------------------------------------------------ ids and errors


def test_malformed_ids_give_404_problems(stack: Stack) -> None:
    with stack.client("nurse-a") as c:
        for bad in ("abc", "1", "00000000-0000-0000-0000-00000000000g", "x' OR '1'='1"):
            p = _problem(c.get(f"/api/alerts/{bad}"), 404)
            assert p["type"] == "about:blank" and p["title"] == "Not Found"
            assert p["detail"] == f"no alert {bad}"
            _problem(c.post(f"/api/alerts/{bad}/take", json={}), 404)
        # a well-formed id of no alert, as before
        _problem(c.get("/api/alerts/00000000-0000-0000-0000-000000000000"), 404)
        _problem(c.post("/api/silences/abc/end", json={}), 404)
        _problem(c.get("/api/residents/nobody/timeline"), 404)


def test_every_error_is_one_problem_shape(stack: Stack) -> None:
    stack.publish("fall-b1", "fall.detected")
    b = stack.wait_alert("nurse-b", state="open")
    # 401: no token, an unknown token (the challenge header stays)
    p = _problem(httpx.get(f"{stack.base}/api/alerts"), 401)
    assert p["detail"] == "a bearer token is required" and p["instance"] == "/api/alerts"
    r = httpx.get(f"{stack.base}/api/me", headers={"Authorization": "Bearer nope"})
    assert _problem(r, 401)["detail"] == "unknown or disabled token"
    assert r.headers["www-authenticate"] == "Bearer"
    with stack.client("nurse-a") as c:
        # 403: another team's alert
        assert "team team-b" in str(_problem(c.get(f"/api/alerts/{b['id']}"), 403)["detail"])
        # the framework's own: an unknown path, a wrong method, validation
        _problem(c.get("/api/nothing-here"), 404)
        r = c.delete("/api/alerts")
        _problem(r, 405)
        assert "GET" in r.headers["allow"]
        p = _problem(c.get("/api/alerts", params={"limit": 0}), 422)
        assert p["type"] == "/problems/validation" and p["title"] == "Invalid request"
        assert p["detail"].startswith("limit: ")  # type: ignore[union-attr]
        errors = p["errors"]
        assert isinstance(errors, list) and errors[0]["loc"] == ["query", "limit"]
        p = _problem(c.get("/api/alerts", params={"state": "asleep"}), 422)
        assert p["type"] == "/problems/validation"
        assert p["errors"][0]["loc"] == ["query", "state"]  # type: ignore[index]
        now = datetime.now(UTC).isoformat()
        r = c.post(
            "/api/silences",
            json={"scope": "resident", "target": "r-a1", "end": now, "reason": "x", "start": now},
        )
        p = _problem(r, 422)
        assert p["detail"] == "end: a silence must end after it starts"
        assert p["errors"][0]["loc"] == ["body", "end"]  # type: ignore[index]
        p = _problem(c.post(f"/api/alerts/{b['id']}/levitate", json={}), 422)
        assert p["errors"][0]["loc"] == ["path", "action"]  # type: ignore[index]
        r = c.post(
            f"/api/alerts/{b['id']}/take",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert _problem(r, 422)["errors"][0]["type"] == "json_invalid"  # type: ignore[index]
    # 409: the lifecycle's refusal is still the detail, word for word
    with stack.client("nurse-b") as c:
        assert c.post(f"/api/alerts/{b['id']}/take", json={}).status_code == 200
        p = _problem(c.post(f"/api/alerts/{b['id']}/take", json={}), 409)
        assert p["detail"] == "you have already taken this alert"
    # outside /api too: a static file that is not there
    _problem(httpx.get(f"{stack.base}/console/static/nope.js"), 404)


def test_an_unexpected_error_is_a_500_problem() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/boom")

    r = asyncio.run(get())
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    assert r.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "an unexpected error; it is logged",
        "instance": "/boom",
    }


def test_readyz_not_ready_is_a_problem_with_the_checks(stack: Stack) -> None:
    ok = httpx.get(f"{stack.base}/readyz").json()
    assert ok["ready"] is True and ok["database"] is True
    stack.runner._source.connected.clear()  # type: ignore[union-attr]
    try:
        p = _problem(httpx.get(f"{stack.base}/readyz"), 503)
        assert p["detail"] == "not ready: mqtt" and p["mqtt"] is False and p["ready"] is False
        assert p["database"] is True
    finally:
        stack.runner._source.connected.set()  # type: ignore[union-attr]


# ------------------------------------------------------------------ body limit


def test_a_large_body_is_refused_before_it_is_read(stack: Stack) -> None:
    token = stack.tokens["nurse-a"]
    mb = b"\0" * (1 << 20)
    # No token and 300 MB announced: 401 at once, the connection closed.
    head = (
        b"POST /api/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 314572800\r\n\r\n"
    )
    answer, sent, took = raw_upload(stack.port, head, mb, 300 << 20)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"connection: close" in answer.lower() and PROBLEM.encode() in answer
    assert took < 1.0 and sent < 64 << 20, (took, sent)
    # The same, chunked (no length announced).
    head = (
        b"POST /api/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"100000\r\n" + mb + b"\r\n"
    answer, sent, took = raw_upload(stack.port, head, chunk, 300 << 20)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert took < 1.0 and sent < 64 << 20, (took, sent)
    # With a token: over the limit announced gives 413 before the body is read ...
    head = (
        b"POST /api/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 314572800\r\n\r\n"
    )
    answer, sent, took = raw_upload(stack.port, head, mb, 300 << 20)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["type"] == "/problems/body-too-large" and body["max_bytes"] == 64 * 1024
    assert took < 1.0 and sent < 64 << 20, (took, sent)
    # ... and a chunked body is cut off at the limit.
    head = (
        b"POST /api/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, sent, took = raw_upload(stack.port, head, chunk, 300 << 20)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert took < 1.0 and sent < 64 << 20, (took, sent)
    # Over the limit by one byte with httpx, and at the limit: validated as usual.
    with stack.client("nurse-a") as c:
        big = b'{"x": "' + b"a" * (64 * 1024) + b'"}'
        r = c.post("/api/silences", content=big, headers={"content-type": "application/json"})
        assert _problem(r, 413)["max_bytes"] == 65536

        def chunks() -> Iterator[bytes]:
            yield big[:40000]
            yield big[40000:]

        r = c.post("/api/silences", content=chunks(), headers={"content-type": "application/json"})
        _problem(r, 413)
        fits = b'{"x": "' + b"a" * (64 * 1024 - 9) + b'"}'
        assert len(fits) == 64 * 1024
        r = c.post("/api/silences", content=fits, headers={"content-type": "application/json"})
        _problem(r, 422)
        # the API still answers (nothing was left half-read on a shared connection)
        assert c.get("/api/me").json()["name"] == "nurse-a"
    m = httpx.get(f"{stack.base}/metrics").text
    assert re.search(r'trygg_http_refused_total\{reason="body_too_large"\} [4-9]', m), m
    assert re.search(r'trygg_http_refused_total\{reason="unauthenticated"\} [2-9]', m), m


# ------------------------------------------------------------------ tokens and streams


class _Stream:
    """``GET /api/stream`` read in a thread: each event with when it came."""

    def __init__(self, stack: Stack, user: str) -> None:
        self.events: list[tuple[float, str, dict[str, object]]] = []
        self.closed_at: float | None = None
        self.status: int | None = None
        self._client = stack.client(user)
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()
        wait_until(lambda: self.status is not None, timeout=10)

    def _run(self) -> None:
        try:
            with self._client.stream("GET", "/api/stream", timeout=60) as r:
                self.status = r.status_code
                kind = "message"
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((time.monotonic(), kind, json.loads(line[6:])))
        except httpx.HTTPError:
            pass
        finally:
            self.closed_at = time.monotonic()
            if self.status is None:
                self.status = 0

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.events]

    def close(self) -> None:
        self._client.close()
        self._th.join(5)


def test_a_disabled_token_and_its_stream_are_cut_off(stack: Stack) -> None:
    with stack.client("nurse-a2") as c:
        assert c.get("/api/me").status_code == 200  # cached as valid now
        st = _Stream(stack, "nurse-a2")
        assert st.status == 200
        stack.publish("fall-a1", "fall.detected")
        wait_until(lambda: "alert" in st.kinds(), timeout=10)
        with psycopg.connect(stack.db) as conn:
            assert disable_user(conn, "nurse-a2")
        t0 = time.monotonic()
        # refused at once (the answer is reused for at most a second)
        wait_until(lambda: c.get("/api/me").status_code == 401, timeout=3, interval=0.05)
        refused = time.monotonic() - t0
        wait_until(lambda: st.closed_at is not None, timeout=6)
        assert st.closed_at is not None
        cut = st.closed_at - t0
        st.close()
    assert refused < 1.5, refused
    assert cut < 5.0, cut
    assert st.kinds()[-1] == "revoked"
    # the other nurse's stream and token are untouched
    with stack.client("nurse-a") as c:
        assert c.get("/api/me").status_code == 200
    m = httpx.get(f"{stack.base}/metrics").text
    assert "trygg_api_streams_revoked_total 1.0" in m, m


def test_stream_deliveries_are_in_the_access_log(stack: Stack) -> None:
    st = _Stream(stack, "nurse-a")
    try:
        stack.publish("fall-a2", "fall.detected")
        wait_until(lambda: "alert" in st.kinds(), timeout=10)
        alert = next(d for _, k, d in st.events if k == "alert")["alert"]
        assert isinstance(alert, dict) and alert["resident"] == "r-a2"
    finally:
        st.close()

    def rows() -> list[tuple[object, ...]]:
        return stack.sql(
            "SELECT actor, role, resident, detail->>'alert', detail->>'event' FROM access_log"
            " WHERE action = 'alert.stream' ORDER BY id"
        )

    wait_until(rows, timeout=10)
    assert ("nurse-a", "care_staff", "r-a2", alert["id"], "alert") in rows()
    # per resident: nothing logged for residents the stream did not show
    assert {r[2] for r in rows()} == {"r-a2"}
    with stack.client("auditor") as aud:
        got = aud.get("/api/access-log", params={"resident": "r-a2"}).json()["entries"]
    assert any(e["action"] == "alert.stream" and e["actor"] == "nurse-a" for e in got)


# ------------------------------------------------------------------ OpenAPI and docs


def test_openapi_has_bearer_security_and_typed_responses(stack: Stack) -> None:
    doc = httpx.get(f"{stack.base}/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "opaque",
        "description": "a token from `trygg users add` (shown once)",
    }
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if path.startswith("/api/"):
                assert op["security"] == [{"bearer": []}], where
                assert "401" in op["responses"], where
            for code, resp in op["responses"].items():
                content = resp.get("content", {})
                if int(code) >= 400:
                    assert list(content) == [PROBLEM], where
                    ref = content[PROBLEM]["schema"]["$ref"].rsplit("/", 1)[1]
                    assert ref == ("ValidationProblem" if code == "422" else "Problem"), where
                elif "application/json" in content:
                    schema = content["application/json"]["schema"]
                    assert "$ref" in schema, (where, schema)  # a model, not `object`
    assert "HTTPValidationError" not in schemas
    alert = schemas["AlertView"]["properties"]
    assert alert["raised_at"] == {
        "type": "string",
        "format": "date-time",
        "description": "when trygg raised it",
        "title": "Raised At",
    }
    assert "red" in alert["severity"]["enum"]
    assert schemas["ValidationProblem"]["properties"]["errors"]["type"] == "array"
    detail = doc["paths"]["/api/alerts/{alert_id}"]["get"]["responses"]["200"]
    assert detail["content"]["application/json"]["schema"]["$ref"].endswith("/AlertDetail")
    # the typed answers keep their shape (times as before, extra fields kept)
    stack.publish("fall-a1", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", a["raised_at"])
    assert {"allowed_actions", "rule_words", "suppressed_why", "version"} <= set(a)


def test_swagger_ui_is_served_from_the_package(stack: Stack) -> None:
    page = httpx.get(f"{stack.base}/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in urls if "//" in u], urls  # nothing from another host
    for u in urls:
        r = httpx.get(f"{stack.base}{u}")
        assert r.status_code == 200, u
    js = httpx.get(f"{stack.base}/docs/static/swagger-ui-bundle.js")
    assert len(js.content) > 500_000 and "javascript" in js.headers["content-type"]
    lic = httpx.get(f"{stack.base}/docs/static/LICENSE")
    assert lic.status_code == 200 and "Apache License" in lic.text
    assert httpx.get(f"{stack.base}/redoc").status_code == 404
