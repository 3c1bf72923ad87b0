"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

Runs, their steps and logs are the documents of polycrate.contract, exactly as `polycrate runs
list/show/logs -o json` prints them: their schemas are the contract's JSON Schema files
(src/polycrate/contract/schemas/), copied in as components, so the two cannot drift apart.
"""
from __future__ import annotations

import json

from polycrate import contract
from polycrate.states import RunState

_STATUS = {"type": "string", "enum": [s.value for s in RunState]}
_COMMON = "urn:polycrate:common:v1#/$defs/"
DOCUMENTS = {"run": "RunDocument", "runs": "RunsDocument", "run-logs": "RunLogsDocument"}


def contract_components() -> dict:
    """The contract's definitions and the run documents as OpenAPI components (refs made local)."""
    schemas = dict(contract.load_schema("common")["$defs"])
    for name, component in DOCUMENTS.items():
        schema = {k: v for k, v in contract.load_schema(name).items() if k not in ("$schema", "$id")}
        schemas[component] = schema
    return json.loads(json.dumps(schemas).replace(_COMMON, "#/components/schemas/"))


ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad request", 401: "no or unknown token", 403: "the role does not allow it", 404: "not found",
            409: "conflict: the workflow is running, or the run is not", 422: "the workflow's prompts need confirm"}
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, text[c]) for c in codes}


def _path(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _body(*names: str) -> dict:
    return {"content": {"application/json": {"schema": {
        "type": "object", "properties": {n: {"type": "string"} for n in names}, "additionalProperties": False}}}}


def document(version: str) -> dict:
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a run id or a unique prefix of one"}
    filters = [
        {"name": "workspace", "in": "query", "schema": {"type": "string"}},
        {"name": "workflow", "in": "query", "schema": {"type": "string"}},
        {"name": "status", "in": "query", "schema": _STATUS},
        {"name": "since", "in": "query", "schema": {"type": "string"},
         "description": "1h, 6h, 1d, 7d, 30d, epoch seconds or an ISO date/time"},
        {"name": "until", "in": "query", "schema": {"type": "string"},
         "description": "runs started before this (as since); the next page: the last run's `started` "
                        "(`ended` for a run that never started: `started` null)"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "polycrate serve", "version": version,
                 "description": "Runs, logs, launches and stops over the served workspaces' run stores."},
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "polycrate server token add NAME --role viewer|operator|admin"},
                "session": {"type": "apiKey", "in": "cookie", "name": "pc_session",
                            "description": "a browser session; state-changing requests need X-CSRF-Token"},
            },
            "schemas": {**contract_components(), "Error": ERROR},
        },
        "paths": {
            "/api/v1/runs": {"get": {
                "summary": "runs of every served workspace, newest first (as `polycrate runs list -o json`)",
                "parameters": filters,
                "responses": {"200": _json({"$ref": "#/components/schemas/RunsDocument"}, "runs"), **_errors(400, 401)}}},
            "/api/v1/runs/{run_id}": {"get": {
                "summary": "one run with its steps and per-host counts (as `polycrate runs show ID -o json`); in team "
                           "mode a run no worker has taken yet: its launch, with status `queued` and its queue",
                "parameters": [run_id],
                "responses": {"200": _json({"$ref": "#/components/schemas/RunDocument"}, "the run"),
                              **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/log": {"get": {
                "summary": "the run's log per step (as `polycrate runs logs ID -o json`)",
                "parameters": [run_id, {"name": "step", "in": "query", "schema": {"type": "string"}},
                               {"name": "search", "in": "query", "schema": {"type": "string", "maxLength": 200},
                                "description": "instead of the log: its lines holding this text (at most 500)"}],
                "responses": {"200": _json({"$ref": "#/components/schemas/RunLogsDocument"}, "the log"),
                              **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/log/events": {"get": {
                "summary": "the log followed live: server-sent events `step`, `line` and `end` (JSON data)",
                "parameters": [run_id],
                "responses": {"200": {"description": "text/event-stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/stop": {"post": {
                "summary": "stop a running run (SIGTERM to its polycrate: recorded as interrupted); in team mode a "
                           "queued run is taken off its queue (never runs; recorded as interrupted); operator",
                "parameters": [run_id],
                "responses": {"202": _json({"type": "object"}, "stopping"),
                              "200": _json({"type": "object"}, "a queued run: taken off the queue, interrupted"),
                              **_errors(401, 403, 404, 409)}}},
            "/api/v1/workspaces/{workspace}/workflows/{workflow}/runs": {"post": {
                "summary": "launch a workflow as a child `polycrate workflows run`; operator",
                "parameters": [{"name": "workspace", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "workflow", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "check": {"type": "boolean"}, "step": {"type": "string"}, "resume": {"type": "boolean"},
                    "limit": {"type": "string"},
                    "extra_vars": {"type": "array", "items": {"type": ["string", "object"]}},
                    "confirm": {"type": "boolean", "description": "yes to every prompt of the workflow"}}}}}},
                "responses": {"202": _json({"type": "object", "properties": {"run_id": {"type": "string"},
                                                                              "status": {"type": "string"},
                                                                              "url": {"type": "string"}}},
                                           "started; Location names the run"),
                              **_errors(400, 401, 403, 404, 409, 422)}}},
            "/api/v1/overview": {"get": {"summary": "every workflow: last status, last success, next run, overdue",
                                         "responses": {"200": _json({"type": "array"}, "rows"), **_errors(401)}}},
            "/api/v1/schedules": {"get": {"summary": "declared and installed schedules: next run times, `applied` "
                                                     "(the state `polycrate schedules list` tells, or `not applied`) "
                                                     "and `reason`",
                                          "responses": {"200": _json({"type": "array"}, "rows"), **_errors(401)}}},
            "/api/v1/blocks": {"get": {"summary": "blocks with versions, origins and digests "
                                                  "(as `polycrate blocks list -o json`)",
                                       "responses": {"200": _json({"type": "array"}, "rows"), **_errors(401)}}},
            "/api/v1/audit": {"get": {"summary": "the audit log, newest first; admin",
                                      "responses": {"200": _json({"type": "array"}, "entries"),
                                                    **_errors(401, 403)}}},
            "/api/v1/users": {
                "get": {"summary": "users and roles; admin",
                        "responses": {"200": _json({"type": "array"}, "users"), **_errors(401, 403)}},
                "post": {"summary": "add a user: {name, role, password}; admin",
                         "requestBody": _body("name", "role", "password"),
                         "responses": {"201": _json({"type": "object"}, "added"), **_errors(400, 401, 403)}}},
            "/api/v1/users/{name}": {
                "patch": {"summary": "set a user's role and/or password (ends their sessions); admin",
                          "parameters": [_path("name")], "requestBody": _body("role", "password"),
                          "responses": {"200": _json({"type": "object"}, "changed"),
                                        **_errors(400, 401, 403, 404, 409)}},
                "delete": {"summary": "remove a user; admin", "parameters": [_path("name")],
                           "responses": {"204": {"description": "removed"}, **_errors(401, 403, 404, 409)}}},
            "/api/v1/grants": {
                "get": {"summary": "every grant (user, team:NAME or token:NAME; workspace; role); admin",
                        "responses": {"200": _json({"type": "array"}, "grants"), **_errors(401, 403)}},
                "post": {"summary": "grant a role in one workspace: {principal, workspace, role}; admin",
                         "requestBody": _body("principal", "workspace", "role"),
                         "responses": {"201": _json({"type": "object"}, "granted"), **_errors(400, 401, 403, 404)}},
                "delete": {"summary": "take a grant back: ?principal=&workspace=; admin",
                           "responses": {"204": {"description": "revoked"}, **_errors(400, 401, 403, 404)}}},
            "/api/v1/teams": {
                "get": {"summary": "teams with members and grants; admin",
                        "responses": {"200": _json({"type": "array"}, "teams"), **_errors(401, 403)}},
                "post": {"summary": "make a team: {name}; admin", "requestBody": _body("name"),
                         "responses": {"201": _json({"type": "object"}, "made"), **_errors(400, 401, 403)}}},
            "/api/v1/teams/{name}": {"delete": {
                "summary": "remove a team and its grants; admin", "parameters": [_path("name")],
                "responses": {"204": {"description": "removed"}, **_errors(401, 403, 404)}}},
            "/api/v1/teams/{name}/members": {
                "post": {"summary": "put a user into the team: {user}; admin", "parameters": [_path("name")],
                         "requestBody": _body("user"),
                         "responses": {"201": _json({"type": "object"}, "added"), **_errors(400, 401, 403, 404)}},
                "delete": {"summary": "take a user out: ?user=; admin", "parameters": [_path("name")],
                           "responses": {"204": {"description": "removed"}, **_errors(400, 401, 403, 404)}}},
            "/api/v1/account/password": {"post": {
                "summary": "change your own password: {current, new} (a session; your other sessions end)",
                "requestBody": _body("current", "new"),
                "responses": {"200": _json({"type": "object"}, "changed"), **_errors(400, 401, 403)}}},
            "/api/v1/workspaces/{workspace}/blocks/{block}/actions/{action}/runs": {"post": {
                "summary": "launch one action of a block: {check, limit, confirm}; operator in that workspace",
                "parameters": [_path("workspace"), _path("block"), _path("action")],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "check": {"type": "boolean"}, "limit": {"type": "string"}, "confirm": {"type": "boolean"}}}}}},
                "responses": {"202": _json({"type": "object"}, "started; Location names the run"),
                              **_errors(400, 401, 403, 404, 409, 422)}}},
            "/api/v1/tokens": {"get": {"summary": "API tokens: names, roles, created, last used (never a token); admin",
                                       "responses": {"200": _json({"type": "array"}, "tokens"),
                                                     **_errors(401, 403)}}},
            "/api/v1/whoami": {"get": {"summary": "who the token or session is",
                                       "responses": {"200": _json({"type": "object"}, "name, role"),
                                                     **_errors(401)}}},
        },
    }
