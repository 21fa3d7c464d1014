"""The OpenAPI 3.0.3 document, generated from the route table and each handler's `@operation` metadata.

Pydantic emits JSON Schema 2020-12; OpenAPI 3.0 speaks an older dialect (`nullable` instead of a
`null` type, no `const`, boolean `exclusiveMinimum`), so every schema passes through `_to_oas30`.
All models are generated in one pass so that pydantic disambiguates classes that share a name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter

from rayborg.api import microversion

REF_TEMPLATE = "#/components/schemas/{model}"
PUBLIC_PATHS = frozenset({"/", "/v2", "/v2/openapi.json"})
PATH_PARAM = re.compile(r"{(\w+)}")

ERROR_BODY = {
    "type": "object",
    "description": "Cyborg's envelope: `error_message` is a string holding JSON "
                   '`{"faultcode": "Client"|"Server", "faultstring": "...", "debuginfo": null}`.',
    "required": ["error_message"],
    "properties": {"error_message": {"type": "string"}},
}

ERROR_REASONS = {
    400: "Malformed request: bad JSON, body, query argument or uuid",
    401: "Missing, invalid or expired token",
    403: "Denied by policy (the faultstring names the rule), or a service token is required",
    404: "No such resource",
    406: "Microversion not supported, or the feature needs a higher one",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Request body is not JSON",
    423: "Some accelerator request of the instance is not resolved yet",
}

VERSION_HEADER = {
    "name": microversion.HEADER, "in": "header", "required": False,
    "description": f"`{microversion.SERVICE_TYPE} X.Y` (or `latest`); absent means "
                   f"{microversion.fmt(microversion.MIN_VERSION)}",
    "schema": {"type": "string",
               "pattern": rf"^{microversion.SERVICE_TYPE} ({microversion.MAX_VERSION[0]}\.[0-"
                          rf"{microversion.MAX_VERSION[1]}]|latest)$"},
}

# openstacksdk's pagination; every collection GET accepts it (see api/http.py: paginate).
PAGING = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    {"name": "marker", "in": "query", "required": False,
     "schema": {"type": "string", "description": "uuid of the last item of the previous page"}},
]


def build_document(routes: Iterable[tuple[str, str, Any]]) -> dict:
    """OpenAPI 3.0.3 for `routes` = [(method, path, handler)], e.g. `rayborg.api.app.ROUTES`."""
    routes = list(routes)
    schemas, components = _generate_schemas(routes)
    paths: dict[str, dict] = {}
    op_ids: set[str] = set()
    tags: list[str] = []
    for method, path, handler in routes:
        meta = getattr(handler, "__openapi__", None) or _default_meta(handler)
        op = _operation(method, path, handler, meta, schemas)
        op["operationId"] = _unique(handler.__name__, op_ids)
        tags += [t for t in op.get("tags", []) if t not in tags]
        paths.setdefault(path, {})[method.lower()] = op
    components["ErrorBody"] = ERROR_BODY
    return {
        "openapi": "3.0.3",
        "info": {"title": "rayborg accelerator API (OpenStack Cyborg v2)",
                 "version": microversion.fmt(microversion.MAX_VERSION),
                 "description": "Served at the root and under `/accelerator`; errors use Cyborg's envelope."},
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"keystone": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
        },
    }


def _default_meta(handler: Any) -> dict:
    """Metadata for a handler without `@operation` (the document itself): a JSON object."""
    doc = (handler.__doc__ or handler.__name__.replace("_", " ").capitalize()).strip().splitlines()[0]
    return {"summary": doc, "responses": {200: dict}, "body": None, "query": None, "tags": []}


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 1
    while candidate in seen:
        n += 1
        candidate = f"{name}_{n}"
    seen.add(candidate)
    return candidate


def _generate_schemas(routes: list) -> tuple[dict[tuple, dict], dict[str, dict]]:
    """Schemas of every body and response type: {(type id, mode): schema}, and the components.
    (Query models are flat and become parameters: `_query_params`.)"""
    inputs: dict[tuple, tuple] = {}
    for _, _, handler in routes:
        meta = getattr(handler, "__openapi__", None) or _default_meta(handler)
        typed = [(meta["body"], "validation")]
        typed += [(model, "serialization") for model in meta["responses"].values()]
        for tp, mode in typed:
            if tp is not None:
                inputs.setdefault((id(tp), mode), (tp, mode))
    if not inputs:
        return {}, {}
    keyed = [(key, mode, TypeAdapter(tp)) for key, (tp, mode) in inputs.items()]
    mapping, defs = TypeAdapter.json_schemas(keyed, ref_template=REF_TEMPLATE)
    components = {name: _to_oas30(schema) for name, schema in defs.get("$defs", {}).items()}
    return {key: _to_oas30(schema) for (key, _), schema in mapping.items()}, components


def _schema(schemas: dict, tp: Any, mode: str) -> dict:
    return schemas[(id(tp), mode)]


def _operation(method: str, path: str, handler: Any, meta: dict, schemas: dict) -> dict:
    v2 = path.startswith("/v2")
    public = path in PUBLIC_PATHS
    op: dict[str, Any] = {"summary": meta["summary"], "tags": list(meta["tags"])}
    doc = (handler.__doc__ or "").strip()
    if doc and doc.splitlines()[0] != meta["summary"]:
        op["description"] = doc
    params = [{"name": name, "in": "path", "required": True, "schema": _path_param_schema(name)}
              for name in PATH_PARAM.findall(path)]
    if meta["query"] is not None:
        params += _query_params(_to_oas30(meta["query"].model_json_schema()))
    if method == "GET" and v2 and not public and not PATH_PARAM.search(path):
        params += PAGING
    if v2:
        params.append(VERSION_HEADER)
    if params:
        op["parameters"] = params
    if meta["body"] is not None:
        op["requestBody"] = {"required": meta.get("body_required", True), "content": {
            "application/json": {"schema": _schema(schemas, meta["body"], "validation")}}}
    op["responses"] = _responses(method, path, meta, schemas)
    if not public:
        op["security"] = [{"keystone": []}]
    return op


def _path_param_schema(name: str) -> dict:
    if name.startswith("uuid"):
        return {"type": "string", "format": "uuid"}
    return {"type": "string", "minLength": 1}


def _query_params(model_schema: dict) -> list[dict]:
    required = set(model_schema.get("required", []))
    out = []
    for name, schema in model_schema.get("properties", {}).items():
        schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
        # A query string carries no null: drop `nullable`, absence already means "not given".
        schema.pop("nullable", None)
        param = {"name": name, "in": "query", "required": name in required, "schema": schema}
        if "description" in schema:
            param["description"] = schema.pop("description")
        out.append(param)
    return out


def _error_statuses(method: str, path: str, meta: dict) -> list[int]:
    """The 4xx a request to this operation can meet, from what the middlewares and helpers raise."""
    if path == "/":
        return []
    statuses = [406]  # microversion negotiation covers all of /v2
    if path in PUBLIC_PATHS:
        return statuses
    statuses += [400, 401, 403]
    if PATH_PARAM.search(path) or method in ("PATCH", "DELETE", "POST"):
        statuses.append(404)
    if method in ("POST", "PATCH", "DELETE"):
        statuses.append(409)
    if meta["body"] is not None:
        statuses += [413, 415]
    if method == "GET" and path == "/v2/accelerator_requests":
        statuses.append(423)
    return sorted(statuses)


def _responses(method: str, path: str, meta: dict, schemas: dict) -> dict:
    out: dict[str, dict] = {}
    for status, model in sorted(meta["responses"].items()):
        entry: dict[str, Any] = {"description": _reason(status)}
        if model is not None:
            entry["content"] = {"application/json": {"schema": _schema(schemas, model, "serialization")}}
        out[str(status)] = entry
    error = {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}}
    for status in _error_statuses(method, path, meta):
        out.setdefault(str(status), {"description": ERROR_REASONS[status], "content": error})
    return out


def _reason(status: int) -> str:
    return {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}.get(status, str(status))


# Keys whose values are data (copied as they are) or maps of name -> schema.
DATA_KEYS = frozenset({"example", "default", "enum", "required"})
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs"})


def _to_oas30(schema: Any) -> Any:
    """JSON Schema 2020-12 (pydantic) -> the OpenAPI 3.0 schema dialect, recursively."""
    if isinstance(schema, list):
        return [_to_oas30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DATA_KEYS:
            out[key] = value
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _to_oas30(sub) for name, sub in value.items()}
        else:
            out[key] = _to_oas30(value)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out["example"] = examples[0]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out[bound], bool):
            out[plain] = out[bound]
            out[bound] = True
    for combiner in ("anyOf", "oneOf"):
        if combiner in out:
            _nullable(out, combiner)
    if isinstance(out.get("type"), list):  # ["string", "null"]
        types = [t for t in out.pop("type") if t != "null"]
        out["nullable"] = True
        if len(types) == 1:
            out["type"] = types[0]
        elif types:
            out["anyOf"] = [{"type": t} for t in types]
    return out


def _nullable(out: dict, combiner: str) -> None:
    """`anyOf: [X, {type: null}]` -> X with `nullable: true` (a `$ref` X is wrapped in `allOf`)."""
    options = out[combiner]
    rest = [o for o in options if o != {"type": "null"}]
    if len(rest) == len(options):
        return
    out["nullable"] = True
    if len(rest) != 1:
        out[combiner] = rest
        return
    del out[combiner]
    (only,) = rest
    if "$ref" in only:
        out["allOf"] = [only]
    else:
        for key, value in only.items():
            out.setdefault(key, value)
