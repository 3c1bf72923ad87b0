"""The JSON contract (polycrate.contract) and its schema files, without running anything."""
import json
import re

import pytest
from jsonschema import Draft202012Validator

from polycrate import contract
from polycrate.history import RunRecord
from polycrate.states import RunState, StepState
from tests.helpers import schema_registry, validate_document

SCHEMA_FILES = sorted(contract.SCHEMA_DIR.glob("*.schema.json"))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_file_is_draft_2020_12_and_named_by_its_id(path):
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    name, version = re.fullmatch(r"(.+)\.v(\d+)\.schema\.json", path.name).groups()
    assert schema["$id"] == contract.schema_id(name, int(version))
    if name != "common":  # a document: its `schema` key is required and names this file
        assert "schema" in schema["required"]
        assert schema["properties"]["schema"] == {"const": schema["$id"]}
        if name != "run-snapshot":  # the real Polycrate's snapshot layout, open by design
            assert schema.get("unevaluatedProperties") is False or schema.get("additionalProperties") is False


def test_every_reference_resolves():
    registry = schema_registry()
    text = "\n".join(p.read_text(encoding="utf-8") for p in SCHEMA_FILES)
    refs = set(re.findall(r'"\$ref": "([^"]+)"', text))
    assert refs
    for ref in refs:
        base, _, pointer = ref.partition("#")
        resolved = registry.resolver().lookup(ref)
        assert resolved.contents is not None, ref


def test_timestamps_are_iso_8601_utc_and_durations_seconds():
    assert contract.timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert contract.timestamp(1764555300.1234) == "2025-12-01T02:15:00.123Z"
    assert contract.timestamp(None) is None
    assert contract.seconds(1.23456) == 1.235 and contract.seconds(None) is None


def _record(**over) -> RunRecord:
    """A run record as a store returns it (history.RunRecord), from its plain-dict shape."""
    record = {
        "id": "20261201-021500-3fa9c1", "kind": "workflow", "name": "nightly", "workflow": "nightly", "block": None,
        "action": None, "only_step": None, "user": "root", "host": "h", "pid": 42, "lock_key": "workflow-nightly",
        "started": 1764555300.0, "ended": 1764555306.5, "status": RunState.FAILED, "exit_code": 1, "check_mode": False,
        "diff_mode": False, "resumed_from": None, "failed_step": "update", "failed_task": "t", "failed_host": "h",
        "message": "m", "notices": [{"time": 1764555301.0, "text": "n"}], "ansible_options": {}, "duration": 6.5,
        "workflow_success": False,
        "steps": [{"position": 1, "name": "update", "block": "b", "action": "a", "phase": "main",
                   "status": StepState.FAILED, "exit_code": 2, "attempts": 1, "started": 1764555300.5,
                   "ended": 1764555306.0, "duration": 5.5, "failed_task": "t", "failed_host": "h", "message": "m",
                   "note": None, "log": ".polycrate/runs/x/01-update.log",
                   "hosts": {"h": {"ok": 1, "changed": 0, "failed": 1, "unreachable": 0, "skipped": 0, "rescued": 0,
                                   "ignored": 0}}}],
    }
    record.update(over)
    return RunRecord.from_dict(record)


def test_a_run_document_has_every_key_and_follows_its_schema():
    doc = validate_document(contract.run_document(_record(), "ops"), "run")
    assert list(doc)[:2] == ["schema", "run_id"]
    assert doc["run_id"] == "20261201-021500-3fa9c1" and "id" not in doc and "lock_key" not in doc
    assert doc["started"] == "2025-12-01T02:15:00.000Z" and doc["duration"] == 6.5
    assert doc["notices"] == [{"time": "2025-12-01T02:15:01.000Z", "text": "n"}]
    # an old store's empty options read in the one full shape
    assert doc["ansible_options"] == {"limit": None, "tags": [], "skip_tags": [], "extra_vars": [], "verbosity": None}
    assert doc["steps"][0]["status"] == "failed" and doc["steps"][0]["started"] == "2025-12-01T02:15:00.500Z"


def test_a_running_run_names_its_current_step_and_a_finished_one_none():
    running = _record(status=RunState.RUNNING, ended=None, exit_code=None, failed_step=None,
                      steps=[dict(_record().steps[0].as_dict(), status=StepState.RUNNING, ended=None, duration=None)])
    doc = validate_document(contract.run_document(running, "ops"), "run")
    assert doc["current_step"] == "update" and doc["ended"] is None and doc["exit_code"] is None
    assert contract.run_document(_record(), "ops")["current_step"] is None


def test_the_schema_refuses_what_the_contract_forbids():
    good = contract.run_document(_record(), "ops")
    for broken in (
        {**good, "id": good["run_id"]},  # a second name for the run id
        {k: v for k, v in good.items() if k != "ended"},  # a key missing instead of null
        {**good, "started": 1764555300.0},  # epoch seconds instead of ISO 8601
        {**good, "started": "2025-12-01T03:15:00+01:00"},  # not UTC
        {**good, "status": "done"},  # not a states.py value
        {**good, "check": False},  # the other spelling of check_mode
    ):
        with pytest.raises(AssertionError):
            validate_document(broken, "run")


def test_runs_and_webhook_documents():
    runs = validate_document(contract.runs_document([(_record(), "ops")]), "runs")
    assert "steps" not in runs["runs"][0]
    body = validate_document(contract.webhook_body(_record(), "ops"), "webhook")
    assert body["event"] == "run.finished"
    shown = contract.run_document(_record(), "ops")
    assert {k: v for k, v in body.items() if k not in ("schema", "event")} == {k: v for k, v in shown.items()
                                                                                 if k != "schema"}
    logs = validate_document(contract.logs_document(_record().id, [(_record().steps[0], "text\n")]), "run-logs")
    assert logs["run_id"] == shown["run_id"]
