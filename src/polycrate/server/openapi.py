"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

The run objects are those of `polycrate runs list/show -o json`, with `workspace` added: the
schemas below name their fields as the CLI prints them.
"""
from __future__ import annotations

from polycrate.states import RunState

_STATUS = {"type": "string", "enum": [s.value for s in RunState]}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}

RUN = {
    "type": "object",
    "required": ["id", "workspace", "kind", "name", "status", "started"],
    "properties": {
        "workspace": {"type": "string", "description": "the served workspace's key (its name)"},
        "id": {"type": "string", "example": "20261201-021500-3fa9c1"},
        "kind": {"type": "string", "enum": ["workflow", "action"]},
        "name": {"type": "string"},
        "workflow": _NULLABLE_STR, "block": _NULLABLE_STR, "action": _NULLABLE_STR, "only_step": _NULLABLE_STR,
        "user": {"type": "string", "description": "who launched it: the Unix user, or web:NAME for the server"},
        "host": {"type": "string"}, "pid": {"type": ["integer", "null"]},
        "started": {"type": "number", "description": "epoch seconds"}, "ended": _NULLABLE_NUM,
        "duration": _NULLABLE_NUM, "status": _STATUS, "exit_code": {"type": ["integer", "null"]},
        "check_mode": {"type": "boolean"}, "diff_mode": {"type": "boolean"}, "resumed_from": _NULLABLE_STR,
        "failed_step": _NULLABLE_STR, "failed_task": _NULLABLE_STR, "failed_host": _NULLABLE_STR,
        "message": _NULLABLE_STR, "lock_key": _NULLABLE_STR,
        "workflow_success": {"type": "boolean", "description": "a whole run (no --step, no --check) that succeeded"},
        "current_step": {"type": ["string", "null"], "description": "the step a running run is at"},
        "workflow_success": {"type": "boolean", "description": "a full run (not --step, not --check) of a workflow"
                             " that succeeded: what metrics, --resume and webhooks count (polycrate.success)"},
        "ansible_options": {"type": "object", "description": "--limit, --tags, --skip-tags, --extra-vars, verbosity"},
        "notices": {"type": "array", "items": {"type": "object", "properties": {
            "time": {"type": "number"}, "text": {"type": "string"}}}},
    },
}
STEP = {
    "type": "object",
    "properties": {
        "position": {"type": "integer"}, "name": {"type": "string"}, "block": _NULLABLE_STR,
        "action": _NULLABLE_STR, "phase": {"type": "string", "enum": ["main", "on_failure"]},
        "status": {"type": "string"}, "exit_code": {"type": ["integer", "null"]}, "attempts": {"type": "integer"},
        "started": _NULLABLE_NUM, "ended": _NULLABLE_NUM, "duration": _NULLABLE_NUM,
        "failed_task": _NULLABLE_STR, "failed_host": _NULLABLE_STR, "message": _NULLABLE_STR,
        "note": _NULLABLE_STR, "log": _NULLABLE_STR,
        "hosts": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {
            "type": "integer"}}},
    },
}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "bad request", 401: "no or unknown token", 403: "the role does not allow it", 404: "not found",
            409: "conflict: the workflow is running, or the run is not", 422: "the workflow's prompts need confirm"}
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, text[c]) for c in codes}


def document(version: str) -> dict:
    run_ref = {"$ref": "#/components/schemas/Run"}
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a run id or a unique prefix of one"}
    filters = [
        {"name": "workspace", "in": "query", "schema": {"type": "string"}},
        {"name": "workflow", "in": "query", "schema": {"type": "string"}},
        {"name": "status", "in": "query", "schema": _STATUS},
        {"name": "since", "in": "query", "schema": {"type": "string"},
         "description": "1h, 6h, 1d, 7d, 30d, epoch seconds or an ISO date/time"},
        {"name": "until", "in": "query", "schema": {"type": "string"},
         "description": "runs started before this (as since); the next page: the last run's `started`"},
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
            "schemas": {"Run": RUN, "Step": STEP, "Error": ERROR,
                        "RunDetail": {"allOf": [run_ref, {"type": "object", "properties": {
                            "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}}}}]}},
        },
        "paths": {
            "/api/v1/runs": {"get": {
                "summary": "runs of every served workspace, newest first (as `polycrate runs list -o json`)",
                "parameters": filters,
                "responses": {"200": _json({"type": "array", "items": run_ref}, "runs"), **_errors(400, 401)}}},
            "/api/v1/runs/{run_id}": {"get": {
                "summary": "one run with its steps and per-host counts (as `polycrate runs show ID -o json`)",
                "parameters": [run_id],
                "responses": {"200": _json({"$ref": "#/components/schemas/RunDetail"}, "the run"),
                              **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/log": {"get": {
                "summary": "the run's log per step (as `polycrate runs logs ID -o json`)",
                "parameters": [run_id, {"name": "step", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "run_id": {"type": "string"}, "steps": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "status": {"type": "string"}, "log": {"type": "string"}}}}}},
                    "the log"), **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/log/events": {"get": {
                "summary": "the log followed live: server-sent events `step`, `line` and `end` (JSON data)",
                "parameters": [run_id],
                "responses": {"200": {"description": "text/event-stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_errors(401, 404)}}},
            "/api/v1/runs/{run_id}/stop": {"post": {
                "summary": "stop a running run (SIGTERM to its polycrate: recorded as interrupted); operator",
                "parameters": [run_id],
                "responses": {"202": _json({"type": "object"}, "stopping"), **_errors(401, 403, 404, 409)}}},
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
            "/api/v1/schedules": {"get": {"summary": "declared schedules with their next run times",
                                          "responses": {"200": _json({"type": "array"}, "rows"), **_errors(401)}}},
            "/api/v1/blocks": {"get": {"summary": "blocks with versions, origins and digests "
                                                  "(as `polycrate blocks list -o json`)",
                                       "responses": {"200": _json({"type": "array"}, "rows"), **_errors(401)}}},
            "/api/v1/audit": {"get": {"summary": "the audit log, newest first; admin",
                                      "responses": {"200": _json({"type": "array"}, "entries"),
                                                    **_errors(401, 403)}}},
            "/api/v1/users": {"get": {"summary": "users and roles; admin",
                                      "responses": {"200": _json({"type": "array"}, "users"), **_errors(401, 403)}}},
            "/api/v1/tokens": {"get": {"summary": "API tokens: names, roles, created, last used (never a token); admin",
                                       "responses": {"200": _json({"type": "array"}, "tokens"),
                                                     **_errors(401, 403)}}},
            "/api/v1/whoami": {"get": {"summary": "who the token or session is",
                                       "responses": {"200": _json({"type": "object"}, "name, role"),
                                                     **_errors(401)}}},
        },
    }
