"""The OpenAPI document of a server: the graph routes and the operations routes.

A graph route answers POST and GET (a GET carries the same JSON body, as with Ray
Serve), so both are listed, with one request schema. Request bodies come from each
Plan's input schema (``plan.input_json_schema``, from the InputNode's pydantic model).
A graph without a schema accepts any JSON; when it reads fields of the request
(``inp["x"]``), those are listed, and the ones read on every path are required.
Pydantic's ``$defs`` move to ``components/schemas``. The operations routes
(``/-/healthz``, ``/-/ready``, ``/-/metrics``, ``/-/graphs``, ``/-/graphs/{file}``,
``/openapi.json``, and the live page's ``/-/``, ``/-/static/{file}``, ``/-/stats``,
``/-/events``) are listed with GET, the only method they serve.
"""

from __future__ import annotations

import copy
from typing import Any

from graphserve.plan import Plan

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "node": {"type": ["string", "null"]}},
    "required": ["error"],
}
_VALIDATION_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        },
    },
    "required": ["error", "detail"],
}
_GRAPH_METHODS = ("post", "get")
_ERROR_STATUSES = {
    "400": "Malformed JSON or a bad X-Request-Timeout-S header",
    "413": "Request body too large",
    "500": "A node of the graph failed",
    "503": "Overloaded; retry after Retry-After seconds",
    "504": "The request passed its deadline",
}


def openapi_document(
    routes: list[tuple[str, Plan]], title: str = "graphserve", version: str = "0.1.0", token: bool = False
) -> dict[str, Any]:
    """OpenAPI 3.1 for ``routes`` ((path, plan) pairs)."""
    schemas: dict[str, Any] = {"Error": _ERROR, "ValidationError": _VALIDATION_ERROR}
    paths: dict[str, Any] = {}
    for path, plan in routes:
        body = _request_schema(plan, schemas)
        responses: dict[str, Any] = {
            "200": {"description": "The graph's output", "content": {"application/json": {"schema": {}}}},
            "422": {
                "description": "The body does not match the input schema",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationError"}}},
            },
        }
        for status, text in _ERROR_STATUSES.items():
            responses[status] = _error_response(text)
        if token:
            responses["401"] = _error_response("Missing or wrong bearer token")
        operation: dict[str, Any] = {
            "summary": f"Run graph {plan.name!r}",
            "parameters": [
                {
                    "name": "X-Request-Timeout-S",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "number", "exclusiveMinimum": 0},
                    "description": "Deadline for this request in seconds (at most the graph's own timeout)",
                },
                {
                    "name": "X-Request-Id",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"},
                    "description": "Echoed in the response; generated when absent",
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": responses,
        }
        if token:
            operation["security"] = [{"bearer": []}]
        paths[path] = {
            method: {"operationId": f"run_{_identifier(plan.name)}" + ("" if method == "post" else f"_{method}")}
            | copy.deepcopy(operation)
            for method in _GRAPH_METHODS
        }
    for path, item in _operations_paths().items():
        paths.setdefault(path, item)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


#: The operations routes: path -> (operationId, summary, media type of a 200).
OPERATIONS = {
    "/-/healthz": ("healthz", "The server is alive", "application/json"),
    "/-/ready": ("ready", "Every graph started and can serve (503 otherwise)", "application/json"),
    "/-/metrics": ("metrics", "Prometheus metrics", "text/plain"),
    "/-/graphs": ("graphs", "The plans of the graphs served", "application/json"),
    "/-/graphs/{file}": ("graph_file", "One plan (.json) or its drawing (.svg, .png, .dot)", "application/json"),
    "/openapi.json": ("openapi", "This document", "application/json"),
    "/-/": ("page", "The live page", "text/html"),
    "/-/static/{file}": ("page_file", "A file of the live page (script, style)", "text/plain"),
    "/-/stats": ("stats", "The live page's figures", "application/json"),
    "/-/events": ("events", "The live page's figures as server-sent events (a stream)", "text/event-stream"),
}


def _operations_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, (operation_id, summary, media_type) in OPERATIONS.items():
        responses: dict[str, Any] = {"200": {"description": summary, "content": {media_type: {"schema": {}}}}}
        operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
        if path == "/-/ready":
            responses["503"] = _error_response("Starting, stopping, or a backend that cannot serve")
        if path.endswith("{file}"):
            operation["parameters"] = [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}]
            responses["404"] = _error_response("No such file (graph, format)")
        if path == "/-/graphs/{file}":
            responses["501"] = _error_response("Drawing needs Graphviz's dot, or the server has no renderer")
        paths[path] = {"get": operation}
    return paths


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _request_schema(plan: Plan, schemas: dict[str, Any]) -> dict[str, Any]:
    if plan.input_json_schema is None:
        return _fields_read(plan)
    schema = copy.deepcopy(plan.input_json_schema)
    renames: dict[str, str] = {}
    for name, definition in schema.pop("$defs", {}).items():
        renames[name] = _place(schemas, name, definition, plan.name)
    schema = _rewrite_refs(schema, renames)
    for new in renames.values():
        schemas[new] = _rewrite_refs(schemas[new], renames)
    title = str(schema.get("title") or _identifier(plan.name) + "Request")
    placed = _place(schemas, title, schema, plan.name)
    return {"$ref": f"#/components/schemas/{placed}"}


def _place(schemas: dict[str, Any], name: str, definition: Any, graph: str) -> str:
    """Store ``definition`` under ``name``, or a graph-qualified name when taken by another."""
    candidate = name
    if candidate in schemas and schemas[candidate] != definition:
        candidate = f"{_identifier(graph)}_{name}"
    schemas[candidate] = definition
    return candidate


def _rewrite_refs(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/"):
                name = item[len("#/$defs/") :]
                out[key] = f"#/components/schemas/{renames.get(name, name)}"
            else:
                out[key] = _rewrite_refs(item, renames)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(item, renames) for item in value]
    return value


def _fields_read(plan: Plan) -> dict[str, Any]:
    """Without a schema: the fields the graph reads from the request, if it reads any."""
    fields: dict[str, bool] = {}
    for node in plan.nodes:
        if node.kind != "attr" or not isinstance(node.key, str) or not node.args:
            continue
        source = node.args[0]
        if getattr(source, "node", None) == plan.input:
            fields[node.key] = fields.get(node.key, False) or node.guard is None
    if not fields:
        return {}
    schema: dict[str, Any] = {"type": "object", "properties": {key: {} for key in sorted(fields)}}
    required = sorted(key for key, always in fields.items() if always)
    if required:
        schema["required"] = required
    return schema


def _identifier(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
