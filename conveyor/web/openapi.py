"""The OpenAPI 3.1 document of the API, generated from the routes' own declarations
(``routing.Endpoint``) and the msgspec types they decode and answer
(``msgspec.json.schema_components``): the document cannot say something the handlers do not do.

Every route but the public ones (the document itself, the probe) needs a bearer token. Errors answer
``Error`` (``{"error", "message"}``): 400 and 401 on every route that needs a user, 413 on those
with a body, 404 on those with a path parameter (no such row, or none the caller may see), and
those each route declares (403, 409, 422)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .errors import Error
from .routing import Endpoint

REF = "#/components/schemas/{name}"
DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    400: "Malformed JSON, a field or query parameter of the wrong type",
    401: "No token, or one that is unknown, revoked or malformed",
    403: "The caller may see this but not do it (a permission it lacks, or read-only)",
    404: "No such row, or one the caller may not see",
    409: "The row's state does not allow it",
    413: "The body is over the server's limit",
    422: "Refused by the app's checks (unknown task, arguments the function cannot take...)",
    503: "The store cannot be reached right now",
}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def document(
    endpoints: list[Endpoint],
    *,
    root_path: str = "",
    metrics: bool = False,
    metrics_public: bool = False,
    names: dict[tuple[str, str], list[str]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints`` served under ``root_path`` (a mount's path), with
    ``/metrics`` when the server serves it. ``names``: (schema, field) -> the values the app knows
    (its tasks, services, pipelines), documented as that field's ``enum`` (the server refuses others
    with a 422)."""
    answers = [e.answer for e in endpoints if e.answer is not None]
    bodies = [e.body for e in endpoints if e.body is not None]
    queries = list(dict.fromkeys(e.query for e in endpoints if e.query is not None))
    types = [Error, *answers, *bodies, *queries]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, schemas, strict=True))
    query_params = {kind: _parameters(components[kind.__name__]) for kind in queries}
    for kind in queries:  # a query string's fields become parameters; the struct itself is not a schema
        if not _referenced(kind.__name__, components, [refs[t] for t in types if t not in queries]):
            components.pop(kind.__name__, None)
    for (schema, name), known in (names or {}).items():
        _enum(components.get(schema, {}).get("properties", {}), name, known)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = _operation(endpoint, refs, query_params)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    if metrics:
        paths["/metrics"] = {"get": _metrics(metrics_public)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "conveyor",
            "version": _version(),
            "description": "The HTTP API of a conveyor deployment: jobs, pipelines, queues, workers, schedules, "
            "services, the event log (also live, as Server-Sent Events), users and tokens. Send "
            "`Authorization: Bearer <token>` (`conveyor tokens create NAME`).",
        },
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a conveyor token"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(endpoint: Endpoint, refs: dict[Any, Any], query_params: dict[Any, list[dict[str, Any]]]) -> Any:
    """One route as an OpenAPI operation: its parameters, body, answers and errors."""
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.tag}_{endpoint.handler.__name__}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    names = _PARAM.findall(endpoint.path)
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in names]  # fmt: skip
    if endpoint.query is not None:
        parameters += query_params[endpoint.query]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": _required(endpoint.body),
            "content": {"application/json": {"schema": refs[endpoint.body]}},
        }
    responses: dict[str, Any] = {}
    for status in (endpoint.status, *endpoint.also):
        responses[str(status)] = {"description": DESCRIPTIONS.get(status, "OK"), "content": _content(endpoint, refs)}
        if endpoint.links:
            responses[str(status)]["links"] = {
                name: {"operationId": target, "parameters": {parameter: f"$response.body#{pointer}"}}
                for name, target, parameter, pointer in endpoint.links
            }
    errors = set(endpoint.errors)
    if not endpoint.public:
        errors |= {400, 401, 503}
    if endpoint.body is not None:
        errors |= {400, 413}
    if endpoint.query is not None:
        errors.add(400)
    if names:
        errors.add(404)
    for status in sorted(errors):
        responses[str(status)] = {"description": DESCRIPTIONS[status],
                                  "content": {"application/json": {"schema": refs[Error]}}}  # fmt: skip
    operation["responses"] = responses
    if endpoint.public:
        operation["security"] = []
    return operation


def _content(endpoint: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    """The content of a route's success answer: its type's schema, or the event stream's text."""
    if endpoint.media_type == "text/event-stream":
        return {"text/event-stream": {"schema": {"type": "string", "description": "id: seq, event: kind, "
                                                 "data: an Event as JSON; a comment every 15 s"}}}  # fmt: skip
    return {endpoint.media_type: {"schema": refs[endpoint.answer] if endpoint.answer is not None else {}}}


def _required(kind: type[msgspec.Struct]) -> bool:
    """Whether the struct has a field without a default."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    return any(field.required for field in info.fields)


def _parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A query struct's fields as query parameters (a value left out is null: no null in the string)."""
    required = set(schema.get("required", []))
    parameters = []
    for name, field in schema.get("properties", {}).items():
        field = dict(field)
        options = field.get("anyOf")
        if options is not None:
            kept = [option for option in options if option != {"type": "null"}]
            field.pop("anyOf")
            field.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        if field.get("default", 0) is None:
            field.pop("default")
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        parameters.append(parameter)
    return parameters


def _enum(properties: dict[str, Any], name: str, known: list[str]) -> None:
    """Document the values a string field may take (kept as it is when there are none): a field that
    is a string or something else (a pipeline's name or its dict form) gets the enum on its string."""
    field = properties.get(name)
    if field is None or not known:
        return
    options = field.get("anyOf", [field])
    for option in options:
        if option.get("type") == "string":
            option.pop("minLength", None)
            option.pop("maxLength", None)
            option["enum"] = sorted(known)


def _referenced(name: str, components: dict[str, Any], roots: list[Any]) -> bool:
    """Whether component ``name`` is referenced from the roots or another component."""
    target = REF.format(name=name)
    others = [schema for key, schema in components.items() if key != name]
    return target in msgspec.json.encode([roots, others]).decode()


def _metrics(public: bool) -> dict[str, Any]:
    """``GET /metrics`` (served by conveyor.web.metrics) as an operation."""
    operation: dict[str, Any] = {
        "operationId": "metrics",
        "summary": "Prometheus metrics (text exposition format)",
        "tags": ["metrics"],
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }
    if public:
        operation["security"] = []
    else:
        error = {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}
        operation["responses"]["401"] = {"description": DESCRIPTIONS[401], "content": error}
    return operation


def _version() -> str:
    """The installed conveyor's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conveyor")
    except PackageNotFoundError:
        return "0"
