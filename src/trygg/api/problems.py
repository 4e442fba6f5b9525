"""One error shape for the whole API: RFC 9457 problem details.

Every 4xx and 5xx answer, FastAPI's and Starlette's own included (an unknown
path, a wrong method, a request that fails validation, an unexpected error),
is ``application/problem+json``::

    {"type": "about:blank", "title": "Conflict", "status": 409,
     "detail": "alert is taken by nurse-7", "instance": "/api/alerts/…/take"}

``detail`` is always one sentence (the lifecycle's refusals are unchanged, so
the console's message table still matches them). A request that fails
validation has the type ``/problems/validation`` and keeps each field's error
in the extension member ``errors``; a body over the limit has the type
``/problems/body-too-large`` and the limit in ``max_bytes``. Other types are
``about:blank``: the status says it all. See docs/api.md, "Errors".
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from trygg import logs

log = logs.get("trygg.api")

MEDIA_TYPE = "application/problem+json"
VALIDATION = "/problems/validation"
BODY_TOO_LARGE = "/problems/body-too-large"


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        "about:blank",
        description="what kind of problem: 'about:blank' (the status says it), "
        "'/problems/validation' or '/problems/body-too-large'",
    )
    title: str = Field(description="the problem type in a few words ('Not Found')")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="this occurrence, in one English sentence")
    instance: str | None = Field(None, description="the request's path")


class FieldError(BaseModel):
    """One field that failed validation (pydantic's error, as FastAPI reports it)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="pydantic's error type ('missing', 'enum', ...)")
    loc: list[str | int] = Field(description="where: 'body', 'query', 'path' and the field")
    msg: str
    input: Any = None


class ValidationProblem(Problem):
    """A request that failed validation, with every field's error."""

    errors: list[FieldError]


class ProblemError(StarletteHTTPException):
    """An ``HTTPException`` with a problem type and extension members of its own."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.type = type
        self.title = title
        self.extensions = extensions


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> ProblemError:
    """A 422 found by the route itself, in the same shape as FastAPI's own."""
    return ProblemError(
        422,
        f"{'.'.join(str(x) for x in loc[1:]) or loc[0]}: {msg}",
        type=VALIDATION,
        title="Invalid request",
        errors=[{"type": "value_error", "loc": list(loc), "msg": msg, "input": value}],
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str,
    *,
    type: str = "about:blank",
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(jsonable_encoder(extensions))
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _detail_text(detail: Any, status: int) -> str:
    if isinstance(detail, str) and detail:
        return detail
    if detail is None or detail == "":
        return _phrase(status)
    return str(detail)


def _from_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    extra: dict[str, Any] = {}
    ptype, title = "about:blank", None
    if isinstance(exc, ProblemError):
        ptype, title, extra = exc.type, exc.title, exc.extensions
    return problem_response(
        exc.status_code,
        _detail_text(exc.detail, exc.status_code),
        type=ptype,
        title=title,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
        **extra,
    )


def _field(err: dict[str, Any]) -> str:
    loc = [str(x) for x in err.get("loc", ())]
    return ".".join(loc[1:] if len(loc) > 1 else loc) or "request"


def install(app: FastAPI) -> None:
    """Route every error the app, FastAPI and Starlette raise into a problem."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _from_http(request, exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [dict(e) for e in exc.errors()]
        for e in errors:
            e.pop("url", None)
            if isinstance(e.get("ctx"), dict):  # may hold the exception itself
                e["ctx"] = {
                    k: v if isinstance(v, int | float | str) else str(v)
                    for k, v in e["ctx"].items()
                }
        first = errors[0] if errors else {}
        detail = f"{_field(first)}: {first.get('msg', 'invalid')}" if first else "invalid request"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem_response(
            422,
            detail,
            type=VALIDATION,
            title="Invalid request",
            instance=request.url.path,
            errors=errors,
        )

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("api error", path=request.url.path, error=f"{type(exc).__name__}: {exc}"[:300])
        return problem_response(
            500,
            "an unexpected error; it is logged",
            instance=request.url.path,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)


# ---------------------------------------------------------------- OpenAPI


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx response in ``schema`` as ``application/problem+json``
    (FastAPI describes them as ``application/json``, its 422 as its own shape)."""
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, FieldError, ValidationProblem):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in js.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps[model.__name__] = js
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            if not isinstance(op, dict):
                continue
            for code, resp in op.get("responses", {}).items():
                if not (code.isdigit() and int(code) >= 400):
                    continue
                name = "ValidationProblem" if code == "422" else "Problem"
                resp["content"] = {MEDIA_TYPE: {"schema": _ref(name)}}
                if code == "422":
                    resp["description"] = "the request failed validation (`errors` says where)"
    text = repr(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"/{unused}'" not in text:
            comps.pop(unused, None)
    return schema
