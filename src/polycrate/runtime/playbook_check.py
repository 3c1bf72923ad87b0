"""The Ansible half of the preflight, run inside an Ansible process (the zygote's warm child or a
plain ``python -m polycrate.runtime.ansible_playbook --polycrate-preflight REQUEST``).

For each playbook it does what ``ansible-playbook --syntax-check`` does, with the variables the
action will get (``-e @vars``), and then what the check does not: every play's hosts pattern is
resolved against the inventory with Ansible's own ``InventoryManager``. Parsing the playbook
resolves every module and action name, so a misspelt module is an error here, as in Ansible.

The request (a JSON file, 0600: its variables may carry secrets) is::

    {"inventory": PATH | null,
     "playbooks": [{"key": K, "path": P, "vars_file": V, "allow_no_hosts": bool}]}

The answer is one line on stdout, ``RESULT_MARK`` + JSON: ``{"findings": [{"key", "path", "line",
"message", "severity"}], "plays": [{"key", "play", "pattern", "hosts"}], "inventory_hosts": N}``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

RESULT_MARK = "POLYCRATE-PREFLIGHT "
# tasks that add hosts or groups while the play runs: a later play's pattern may match only then
DYNAMIC_INVENTORY_ACTIONS = frozenset(
    {"add_host", "group_by", "ansible.builtin.add_host", "ansible.builtin.group_by",
     "ansible.legacy.add_host", "ansible.legacy.group_by"}
)


def _origin(exc: BaseException) -> tuple[str | None, int | None]:
    """File and line of an Ansible error (ansible-core 2.19 tags loaded data with its Origin)."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # another ansible-core: the message alone
        return None, None
    seen: BaseException | None = exc
    while seen is not None:
        obj = getattr(seen, "obj", None)
        origin = obj if isinstance(obj, Origin) else Origin.get_tag(obj) if obj is not None else None
        if origin is not None and origin.path:
            return origin.path, origin.line_num
        seen = seen.__cause__ or seen.__context__
    return None, None


def _message(exc: BaseException) -> str:
    """The error's message and its causes' ("Error processing keyword 'hosts'.: 'dict object' has no
    attribute 'nope'"), on one line."""
    from ansible.errors import AnsibleError

    parts: list[str] = []
    seen: BaseException | None = exc
    while isinstance(seen, AnsibleError) and len(parts) < 4:  # a YAML library's cause only repeats it, noisily
        text = getattr(seen, "_original_message", None) or getattr(seen, "message", None) or str(seen)
        text = " ".join(str(text).split())
        if text and not any(text in p for p in parts):
            parts.append(text.rstrip("."))
        seen = seen.__cause__
    text = ": ".join(parts)
    return text.replace("YAML parsing failed: ", "invalid YAML: ", 1)  # the wording of our own YAML errors


def _where(ds: Any) -> tuple[str | None, int | None]:
    """File and line a play was read from (an imported playbook names its own file)."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:
        return None, None
    origin = Origin.get_tag(ds)
    return (origin.path, origin.line_num) if origin is not None else (None, None)


def _tasks(blocks) -> list:
    found = []
    for item in blocks or []:
        if hasattr(item, "block"):  # a Block: its tasks, rescue and always, nested
            for part in (item.block, item.rescue, item.always):
                found.extend(_tasks(part))
        else:
            found.append(item)
    return found


def _adds_hosts(play) -> bool:
    tasks = _tasks(play.pre_tasks) + _tasks(play.tasks) + _tasks(play.post_tasks) + _tasks(play.handlers)
    for role in getattr(play, "roles", None) or []:
        try:
            tasks += _tasks(role.get_task_blocks())
        except Exception:
            pass
    return any(getattr(t, "action", None) in DYNAMIC_INVENTORY_ACTIONS for t in tasks)


def _names_a_plugin(path: str) -> bool:
    """Whether an inventory file may be an inventory plugin's configuration (a top-level `plugin:`)."""
    import re

    try:
        with open(path, "rb") as handle:
            return re.search(rb"^[\"']?plugin[\"']?\s*:", handle.read(), re.MULTILINE) is not None
    except OSError:
        return True  # let Ansible say what is wrong with it


def _collect_inventory_failures() -> list[tuple[str, BaseException]]:
    """Ansible shows why each inventory plugin failed only as warnings: keep them for the finding."""
    from ansible.inventory import manager

    failures: list[tuple[str, BaseException]] = []
    shown = manager.display.error_as_warning

    def error_as_warning(msg, exception, *args, **kwargs):
        plugin = msg.split("'")[1] if msg.count("'") >= 2 else ""
        failures.append((plugin, exception))
        return shown(msg, exception, *args, **kwargs)

    manager.display.error_as_warning = error_as_warning
    return failures


def check(request: dict) -> dict:
    from ansible import constants as C
    from ansible import context
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.module_utils.common.collections import ImmutableDict
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook import Playbook
    from ansible.plugins.loader import init_plugin_loader
    from ansible.vars.manager import VariableManager

    try:
        from ansible._internal._templating._engine import TemplateEngine
    except ImportError:  # ansible-core < 2.19
        from ansible.template import Templar as TemplateEngine

    from polycrate.runtime.ansible_setup import quiet_our_reserved_names

    quiet_our_reserved_names()
    context.CLIARGS = ImmutableDict(syntax=True, tags=(), skip_tags=(), start_at_task=None, extra_vars=())
    init_plugin_loader([])
    findings: list[dict] = []
    plays: list[dict] = []

    def finding(key, path, line, message, severity="error"):
        findings.append({"key": key, "path": path, "line": line, "message": message, "severity": severity})

    loader = DataLoader()
    source = request.get("inventory")
    # an inventory.yml Ansible cannot read is an error here, not a warning (without one: implicit localhost)
    C.INVENTORY_UNPARSED_IS_FAILED = bool(source)
    failures = _collect_inventory_failures()
    if source and not _names_a_plugin(source):
        # the `auto` plugin reads (and deep-copies) the whole file only to find no top-level `plugin:`
        # key and decline; without that key the result is the same without it, in half the time
        C.INVENTORY_ENABLED = [p for p in C.INVENTORY_ENABLED if p not in ("auto", "ansible.builtin.auto")]
    try:
        inventory = InventoryManager(loader=loader, sources=[source] if source else C.DEFAULT_HOST_LIST)
    except AnsibleError as exc:
        # the plugin that should have read it says why (a .yml file: the yaml plugin), else Ansible's summary
        yaml_first = sorted(failures, key=lambda f: f[0] != "yaml" if str(source).endswith((".yml", ".yaml")) else 0)
        cause = yaml_first[0][1] if yaml_first else exc
        path, line = _origin(cause)
        finding(None, path or source, line, f"inventory: {_message(cause)}")
        return {"findings": findings, "plays": plays, "inventory_hosts": 0}
    host_count = len(inventory.hosts)
    limit = request.get("limit")
    for item in request.get("playbooks", []):
        key, path = item["key"], item["path"]
        variables = VariableManager(loader=loader, inventory=inventory)
        variables._extra_vars = loader.load_from_file(item["vars_file"], trusted_as_template=True)
        try:
            book = Playbook.load(path, variable_manager=variables, loader=loader)
            adds_hosts = False
            for play in book.get_plays():
                loader.set_basedir(play._included_path or book._basedir)
                inventory.remove_restriction()
                if limit:
                    inventory.subset(limit)  # --limit, as ansible-playbook applies it to every play
                templar = TemplateEngine(loader=loader, variables=variables.get_vars(play=play))
                play.post_validate(templar)
                pattern = play.hosts
                text = ",".join(map(str, pattern)) if isinstance(pattern, (list, tuple)) else str(pattern)
                matched = inventory.list_hosts(pattern)
                plays.append({"key": key, "play": play.get_name(), "pattern": text, "hosts": len(matched)})
                if not matched and not item.get("allow_no_hosts"):
                    from polycrate.runtime.events import no_hosts_message

                    where, line = _where(play._ds)
                    message = no_hosts_message(play.get_name(), text) + (f" with --limit '{limit}'" if limit else "")
                    if adds_hosts:  # an earlier play adds hosts or groups at run time
                        finding(key, where or path, line, message + " before the playbook runs; an earlier play "
                                "adds hosts at run time (add_host/group_by)", "warning")
                    else:
                        finding(key, where or path, line, message)
                adds_hosts = adds_hosts or _adds_hosts(play)
        except AnsibleError as exc:
            where, line = _origin(exc)
            finding(key, where or path, line, _message(exc))
    return {"findings": findings, "plays": plays, "inventory_hosts": host_count}


def main(request_file: str) -> int:
    with open(request_file, encoding="utf-8") as handle:
        request = json.load(handle)
    try:
        result = check(request)
    except Exception as exc:  # the preflight's own failure is reported, never a traceback
        result = {"error": f"{type(exc).__name__}: {exc}", "findings": [], "plays": []}
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
