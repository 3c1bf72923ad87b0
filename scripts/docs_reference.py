"""The generated parts of the documentation's reference, and the MkDocs hook that puts them in.

A reference page holds a marker such as ``<!-- generated: cli -->``; at build time (`make docs`, and
`make test` through tests/unit/test_docs.py) ``on_page_markdown`` replaces it with text made from the
code itself, so the reference cannot drift from it:

- ``cli``: every command and option, walked from polycrate's own argparse parser (``build_parser``);
- ``files``: every key of workspace.poly, block.poly and secrets.poly, read out of the checks in
  ``polycrate.config.schema`` (the key sets its ``_check_keys`` calls allow, its key constants) with
  the type and default of the ``polycrate.config.model`` field each becomes; the words for each key
  are below, and a key the schema allows that has no words here (or words for a key the schema no
  longer allows) stops the build;
- ``exit-codes``: the ``EXIT_*`` constants of ``polycrate.errors``, likewise;
- ``schemas``: the JSON Schema files of the contract (``polycrate/contract/schemas``);
- ``packages``: the package layout by layer, each module with the first paragraph of its docstring.

It imports polycrate (the build runs in the project's virtualenv) and is not part of the package.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any

MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


class ReferenceError(Exception):
    """The reference and the code disagree (the build stops)."""


# --- the command line --------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, list[str], str, argparse.ArgumentParser]]:
    """(name, aliases, help, parser) of each sub-command, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            seen: dict[int, int] = {}
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias: the same parser under another name
                    out[seen[id(sub)]][1].append(name)
                    continue
                seen[id(sub)] = len(out)
                out.append((name, [], helps.get(name) or "", sub))
    return out


def command_tree(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()):
    """Every command as (words, aliases, help, parser), depth first: ``("workflow", "run")``."""
    if parser is None:
        from polycrate.cli import build_parser

        parser = build_parser()
    for name, aliases, help_text, sub in _subparsers(parser):
        yield (*prefix, name), aliases, help_text, sub
        yield from command_tree(sub, (*prefix, name))


def _global_dests() -> set[tuple[str, ...]]:
    """The option strings every command accepts (``polycrate.cli.common_options``): listed once."""
    from polycrate.cli import common_options

    return {tuple(a.option_strings) for a in common_options()._actions if a.option_strings}


def _usage(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> str:
    """The command's usage line, its global options (the same on every command) said as one word."""
    from polycrate.cli import common_options

    usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
    for action in common_options()._actions:
        flag = action.option_strings[0]
        if action.nargs == 0:
            fragment = f"[{flag}]"
        else:
            value = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices
                                       else action.dest.upper())
            fragment = f"[{flag} {value}]"
        usage = usage.replace(" " + fragment, "")
    usage = usage.replace(" [-h]", "")  # every command has --help
    prog = "polycrate " + " ".join(words)
    return usage.replace(prog, prog + " [global options]", 1)


def _option_row(action: argparse.Action) -> str:
    flags = ", ".join(f"`{s}`" for s in action.option_strings)
    value = ""
    if action.nargs != 0:
        metavar = action.metavar or (action.dest.upper() if not action.choices else None)
        value = " " + (", ".join(f"`{c}`" for c in action.choices) if action.choices else f"`{metavar}`")
    default = action.default
    shown = "" if default in (None, False, [], argparse.SUPPRESS, "") or action.nargs == 0 else f" (default: `{default}`)"
    help_text = (action.help or "").replace("|", "\\|").replace("%%", "%")
    return f"| {flags}{value} | {help_text}{shown} |"


def _positional_row(action: argparse.Action) -> str:
    name = action.metavar or action.dest
    if isinstance(name, tuple):
        name = " ".join(name)
    choices = f" (one of `{'`, `'.join(map(str, action.choices))}`)" if action.choices else ""
    many = {"*": " (any number)", "+": " (one or more)", "?": " (optional)", argparse.REMAINDER: " (the rest)"}
    text = (action.help or "").replace("|", "\\|")
    return f"| `{name}`{many.get(action.nargs, '')} | {text}{choices} |"


def anchor(words: tuple[str, ...]) -> str:
    return "polycrate-" + "-".join(words)


def cli_reference() -> str:
    from polycrate.cli import build_parser, common_options

    root = build_parser()
    lines = ["Generated from the parser of this version (`polycrate.cli.build_parser`).", ""]
    lines += ["## Global options", "",
              "Accepted by every command, before or after it (`polycrate -w ops run ...` = `polycrate run ... -w ops`).",
              "", "| option | |", "| --- | --- |"]
    lines += [_option_row(a) for a in common_options(workspace_default=None)._actions if a.option_strings and
              a.help != argparse.SUPPRESS]
    lines += ["| `--version` | print polycrate's version and exit |", "", "## Commands", ""]
    tree = list(command_tree(root))
    for words, _aliases, help_text, _ in tree:
        depth = "  " * (len(words) - 1)
        lines.append(f"{depth}- [`{' '.join(words)}`](#{anchor(words)}){': ' + help_text if help_text else ''}")
    lines.append("")
    skip = _global_dests()
    for words, aliases, help_text, sub in tree:
        level = "#" * min(2 + len(words), 6)
        lines += [f"{level} polycrate {' '.join(words)} {{#{anchor(words)}}}", ""]
        if aliases:
            lines += ["Also: " + ", ".join(f"`polycrate {' '.join((*words[:-1], a))}`" for a in aliases), ""]
        if help_text:
            lines += [help_text[0].upper() + help_text[1:] + ".", ""]
        if sub.description and sub.description != help_text:
            lines += [sub.description, ""]
        lines += ["```", _usage(sub, words), "```", ""]
        positionals = [a for a in sub._actions if not a.option_strings and
                       not isinstance(a, argparse._SubParsersAction) and a.help != argparse.SUPPRESS]
        options = [a for a in sub._actions if a.option_strings and tuple(a.option_strings) not in skip and
                   a.option_strings != ["-h", "--help"] and a.help != argparse.SUPPRESS]
        if positionals:
            lines += ["| argument | |", "| --- | --- |", *map(_positional_row, positionals), ""]
        if options:
            lines += ["| option | |", "| --- | --- |", *map(_option_row, options), ""]
        if _subparsers(sub):
            lines += ["Commands: " + ", ".join(f"[`{n}`](#{anchor((*words, n))})" for n, *_ in _subparsers(sub)), ""]
    return "\n".join(lines)


# --- the files' keys ---------------------------------------------------------------------------------

def _schema_tree() -> tuple[Any, ast.Module]:
    from polycrate.config import schema

    return schema, ast.parse(Path(inspect.getsourcefile(schema)).read_text(encoding="utf-8"))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ReferenceError(f"polycrate.config.schema has no function {name}() any more")


def _literal_keys(node: ast.AST, schema: Any) -> set[str]:
    """The keys an expression of schema.py names: a set or tuple literal, a module constant, or the
    left side of `{...} | OTHER[kind]` (the keys every variant has)."""
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return {elt.value for elt in node.elts if isinstance(elt, ast.Constant)}
    if isinstance(node, ast.Name):
        return set(getattr(schema, node.id))
    if isinstance(node, ast.BinOp):
        return _literal_keys(node.left, schema)
    raise ReferenceError(f"schema.py: cannot read the keys of {ast.unparse(node)}")


def schema_keys(locator: tuple) -> set[str]:
    """The keys schema.py allows where `locator` points:
    ("check", FUNCTION, N): the N-th `_check_keys(mapping, KEYS, ...)` call in FUNCTION;
    ("get", FUNCTION, VAR): every `VAR.get("key")` in FUNCTION;
    ("not-in", FUNCTION): the tuple of a `key not in (...)` test in FUNCTION;
    ("constant", NAME[, ITEM]): a module constant (or one item of a dict constant)."""
    schema, tree = _schema_tree()
    kind = locator[0]
    if kind == "constant":
        value = getattr(schema, locator[1])
        return set(value[locator[2]] if len(locator) > 2 else value)
    function = _function(tree, locator[1])
    if kind == "check":
        calls = [n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and
                 n.func.id == "_check_keys"]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        return _literal_keys(calls[locator[2]].args[1], schema)
    if kind == "get":
        return {n.args[0].value for n in ast.walk(function) if isinstance(n, ast.Call) and
                isinstance(n.func, ast.Attribute) and n.func.attr == "get" and isinstance(n.func.value, ast.Name)
                and n.func.value.id == locator[2] and n.args and isinstance(n.args[0], ast.Constant)}
    if kind == "not-in":
        for node in ast.walk(function):
            if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.NotIn):
                return _literal_keys(node.comparators[0], schema)
    raise ReferenceError(f"no keys at {locator}")


@dataclasses.dataclass(frozen=True)
class Section:
    title: str  # where the keys are written, e.g. "workspace.poly: workflows[].steps[]"
    locator: tuple  # see schema_keys
    model: str | None  # the polycrate.config.model (or schema) class the keys become
    keys: dict[str, str]  # key -> what it means
    intro: str = ""
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> model field, where they differ


ON = "`[failure]` (the default: failed and interrupted runs), `[success]` or both; success is the workflow-success rule"
SECTIONS = (
    Section("workspace.poly", ("constant", "WORKSPACE_KEYS"), "WorkspaceFile", {
        "name": "the workspace's name (letters, digits, `.`, `_`, `-`); required",
        "organization": "the organization, as in Polycrate (in the snapshot and the labels)",
        "description": "one line about the workspace",
        "version": "Polycrate's workspace version; accepted, not used",
        "labels": "text keys to one-line text values (see block.poly's `labels`)",
        "config": "the workspace's config: merged over every block's defaults; `runtime`, `image`, `engine` below",
        "blocks": "the block entries: which installed blocks this workspace uses, with their config (below)",
        "workflows": "the named processes: steps of block actions (below)",
        "dependencies": "block references (`REGISTRY/PATH:VERSION`) that `polycrate workspace update` installs",
        "registries": "per registry name: `mirror` and `insecure` (below)",
        "encryption": "`recipients`: the age public keys the secrets are encrypted to",
        "webhooks": "JSON POSTs after a run (below)",
        "notifications": "mail and chat messages after a run (below)",
        "history": "retention of the run history (below)",
        "metrics": "the Prometheus textfile (below)",
        "inventory": "`{filename: FILE}`: the workspace's inventory instead of `inventory.yml`",
        "kubeconfig": "`{filename: FILE}`: the workspace's kubeconfig instead of `kubeconfig.yml` / "
                      "`artifacts/blocks/k8s/kubeconfig.yml`",
    }, intro="The workspace: its blocks, their config, its workflows. Unknown keys are refused with the "
             "file and line (Polycrate's `events:` among them: our events are the `--event-handler` flag)."),
    Section("workspace.poly: config (the toolchain keys)", ("get", "parse_toolchain", "config"), "Toolchain", {
        "runtime": "`container` (the default) or `local`: where actions run (`-l`/`--runtime` win over it)",
        "engine": "`podman` or `docker` (default: podman when installed, else docker)",
        "image": "the image actions run in (default `localhost/polycrate-base:latest`); `REFERENCE:TAG` or "
                 "Polycrate's `{reference, version}`",
    }, intro="Every other key under `config:` is the workspace's config for its blocks."),
    Section("workspace.poly: blocks[]", ("check", "parse_block_entry", 0), "BlockEntry", {
        "name": "the block's name in this workspace (one installed block can serve two entries)",
        "from": "the installed block it is: a registry reference `REGISTRY/PATH:VERSION` or another block's name",
        "description": "one line about this use of the block",
        "config": "config over the block's defaults (maps merge deeply, everything else is replaced)",
        "labels": "labels over the block's",
        "inventory": "`{from: BLOCK}` or `{filename: FILE}`: the inventory this block's actions get",
        "kubeconfig": "`{from: BLOCK}` or `{filename: FILE}`: the kubeconfig this block's actions get",
    }, renamed={"from": "source"}),
    Section("workspace.poly: workflows[]", ("check", "parse_workflow", 0), "Workflow", {
        "name": "the workflow's name; required",
        "description": "one line, shown by `workflows list`",
        "steps": "the steps, in order (below); at least one",
        "on_failure": "steps (same keys) that run only after a step failed, e.g. restore or notify",
        "prompt": "a question asked once before step 1 (`{message: ...}` or a string); `-f` answers yes",
        "schedule": "when it runs by itself: an OnCalendar or cron expression, or a mapping (below)",
        "allow_failure": "every step may fail without stopping the workflow (Polycrate's)",
        "labels": "labels (checked, shown in the snapshot)",
        "alias": "Polycrate's alias list: names checked, not used to look anything up",
    }),
    Section("workspace.poly: workflows[].steps[]", ("check", "parse_step", 0), "Step", {
        "name": "the step's name (`--step NAME`, `runs logs --step`)",
        "description": "one line about the step",
        "block": "the block whose action runs",
        "action": "the action of that block",
        "allow_failure": "the step may fail without stopping the workflow",
        "allow_no_hosts": "a play that matches no host does not fail the step (nor the preflight)",
        "timeout": "seconds per attempt; then the action is stopped and the attempt fails",
        "retries": "further attempts after a failed one (default 0)",
        "retry_delay": "seconds between attempts",
        "prompt": "a question asked with the run's other prompts, before step 1",
        "labels": "labels",
        "alias": "Polycrate's alias list (checked, not used)",
    }),
    Section("workspace.poly: workflows[].schedule", ("constant", "SCHEDULE_KEYS"), "Schedule", {
        "on_calendar": "a systemd OnCalendar expression, e.g. `*-*-* 02:00:00`",
        "cron": "a five-field cron expression, e.g. `0 2 * * *`",
        "randomized_delay": "seconds (or `5m`, `1h`) of random delay (systemd `RandomizedDelaySec`)",
        "user": "the user the scheduled run runs as",
        "group": "its group",
        "persistent": "run at boot when a time was missed (systemd `Persistent=`; default true)",
        "timeout": "stop the scheduled run after this long (`TimeoutStartSec`)",
        "log_file": "cron: append the run's output to this file",
    }, intro="A string is `on_calendar` (or `cron` when it has five fields)."),
    Section("workspace.poly: webhooks[]", ("check", "parse_run_settings", 1), "Webhook", {
        "name": "a name for messages about it",
        "url": "`http://` or `https://` URL that receives the run as JSON",
        "headers": "extra request headers (e.g. `Authorization`)",
        "on": ON,
    }),
    Section("workspace.poly: notifications[] (every type)", ("check", "parse_notification", 0), "Notification", {
        "name": "the channel's name (`notify test NAME`)",
        "type": "`email`, `slack`, `mattermost`, `teams` or `matrix`",
        "on": ON,
        "timeout": "seconds (default 10, at most 300)",
    }),
    Section("workspace.poly: notifications[] of type email", ("constant", "NOTIFICATION_KEYS", "email"),
            "Notification", {
        "host": "the SMTP server",
        "port": "default by `security`: 587, 465 or 25",
        "security": "`starttls` (default), `tls` (SMTPS) or `none` (no login then)",
        "username": "the SMTP login",
        "password": "`{secret: KEY}` (secrets.poly) or `{env: NAME}`; never a literal",
        "from": "the sender address",
        "to": "the recipients (a list)",
        "ca_file": "trust this CA (relative to the workspace) instead of the system's",
    }, renamed={"from": "sender"}),
    Section("workspace.poly: notifications[] of type slack, mattermost, teams", ("constant", "NOTIFICATION_KEYS", "slack"),
            "Notification", {"url": "the incoming webhook's URL: `{secret: KEY}` or `{env: NAME}` (it carries its token)"}),
    Section("workspace.poly: notifications[] of type matrix", ("constant", "NOTIFICATION_KEYS", "matrix"), "Notification", {
        "homeserver": "the homeserver's `https://` URL",
        "room": "the room ID (`!...:server`), not an alias",
        "token": "the bot's access token: `{secret: KEY}` or `{env: NAME}`",
    }),
    Section("workspace.poly: history", ("check", "parse_run_settings", 0), "RunSettings", {
        "keep_runs": "keep the newest N finished runs (with their logs)",
        "keep_days": "remove finished runs older than D days",
    }, intro="Without it every run is kept."),
    Section("workspace.poly: metrics", ("check", "parse_run_settings", 2), None, {
        "path": "the Prometheus textfile (default `.polycrate/metrics/polycrate.prom`)",
        "enabled": "`false`: write none",
    }),
    Section("workspace.poly: registries.NAME", ("not-in", "parse_registries"), None, {
        "mirror": "`HOST[:PORT]` that serves this registry name",
        "insecure": "`true`: plain HTTP for this registry",
    }),
    Section("workspace.poly: encryption", ("check", "check_recipients", 0), None, {
        "recipients": "age public keys (`age1...`) the secrets are encrypted to; never a secret key",
    }),
    Section("workspace.poly: inventory, kubeconfig", ("check", "_workspace_file", 0), None, {
        "filename": "a file inside the workspace",
    }),
    Section("block.poly", ("check", "parse_block_definition", 0), "BlockDefinition", {
        "name": "the block's name; required",
        "version": "its version (default `0.0.0`); `blocks push` tags it with this",
        "kind": "one word: `generic` (default), `k8sapp`, `k8scluster`, `linuxapp`, `dockerapp`, `library`, ...",
        "description": "one line about the block",
        "config": "the block's default config (the workspace's wins)",
        "actions": "its named actions (below)",
        "from": "inherit from another block: `REGISTRY/PATH:VERSION` or an installed block's name",
        "template": "`true`: only other blocks inherit from it; it never runs",
        "labels": "text keys to one-line text values",
        "inventory": "`{from: BLOCK}` or `{filename: FILE}` (default `artifacts/blocks/NAME/inventory.yml` when it exists)",
        "kubeconfig": "`{from: BLOCK}` or `{filename: FILE}` (default `artifacts/blocks/NAME/kubeconfig.yml` when it exists)",
        "alias": "Polycrate's alias list (checked, not used)",
        "type": "Polycrate's; accepted, descriptive",
        "flavor": "Polycrate's; accepted, descriptive",
    }, renamed={"from": "parent"}),
    Section("block.poly: actions[]", ("check", "parse_action", 0), "Action", {
        "name": "the action's name (`polycrate run BLOCK ACTION`)",
        "description": "one line about it",
        "type": "`ansible` (with `playbook`) or `script` (with `script`); guessed from which of the two is there",
        "playbook": "the playbook, relative to the block folder",
        "script": "shell lines, run in order under `set -euo pipefail`; each a Go template over the snapshot",
        "prompt": "a question asked before the run (`{message: ...}` or a string)",
        "labels": "labels",
        "alias": "Polycrate's alias list (checked, not used)",
        "interactive": "Polycrate's; accepted: actions never get a terminal (stdin is /dev/null)",
    }),
    Section("block.poly / workspace.poly: inventory, kubeconfig of a block", ("check", "parse_file_from", 0), "FileFrom", {
        "from": "take this file from block BLOCK's artifacts folder",
        "filename": "another file name in the artifacts folder",
    }, renamed={"from": "source"}),
    Section("secrets.poly", ("get", "parse_secrets", "raw"), "SecretsFile", {
        "config": "merged over workspace.poly's `config` (the one merge rule)",
        "blocks": "`[{name, config}]`: merged over the config of the block entry of that name",
    }, intro="Encrypted as `secrets.poly.age` by `workspace encrypt`. Every value is masked in output, logs and the run store."),
)


def _model_fields(model: str | None) -> dict[str, dataclasses.Field]:
    if model is None:
        return {}
    from polycrate.config import model as models
    from polycrate.config import schema

    cls = getattr(models, model, None) or getattr(schema, model)
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_text(field: dataclasses.Field | None, model: str | None) -> str:
    if field is None:
        return ""
    kind = field.type if isinstance(field.type, str) else typing.get_type_hints(field.type).__repr__()
    default = ""
    if field.default is not dataclasses.MISSING and field.default not in (None, "", (), False):
        default = f" = `{field.default!r}`"
    return f"`{kind}`{default}"


def check_sections() -> list[str]:
    """What the reference and the schema disagree about (empty when they agree)."""
    problems = []
    for section in SECTIONS:
        allowed = schema_keys(section.locator)
        for key in sorted(allowed - set(section.keys)):
            problems.append(f"{section.title}: the schema allows '{key}', the reference does not describe it")
        for key in sorted(set(section.keys) - allowed):
            problems.append(f"{section.title}: the reference describes '{key}', the schema does not allow it")
    return problems


def files_reference() -> str:
    problems = check_sections()
    if problems:
        raise ReferenceError("scripts/docs_reference.py: " + "; ".join(problems))
    lines = ["Generated from the checks in `src/polycrate/config/schema.py` (the keys each part of a file "
             "may have) and the fields of `src/polycrate/config/model.py` they become: a key missing "
             "here is refused by polycrate too.", ""]
    for section in SECTIONS:
        fields = _model_fields(section.model)
        lines += [f"### {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        model = f" (`{section.model}`)" if section.model else ""
        lines += [f"| key | | type{model} |", "| --- | --- | --- |"]
        for key in sorted(schema_keys(section.locator)):
            field = fields.get(section.renamed.get(key, key))
            lines.append(f"| `{key}` | {section.keys[key]} | {_type_text(field, section.model)} |")
        lines.append("")
    return "\n".join(lines)


# --- exit codes, schemas ------------------------------------------------------------------------------

EXIT_MEANINGS = {
    "EXIT_ACTION_FAILED": "an action, a workflow step or the workflow failed (or a prompt was answered no, or "
                          "`--resume` found nothing to resume)",
    "EXIT_BAD_INPUT": "bad input: an invalid or missing file, an unknown name, bad usage, or a run's preflight found "
                      "an error (nothing ran, nothing was recorded). One line on stderr names the file and line",
    "EXIT_LOCKED": "another run holds the workflow's lock (the message names it: pid, host, start, run id); "
                   "`--wait` waits instead",
    "EXIT_INTERNAL": "an internal error (a bug in polycrate): one line, no traceback; `POLYCRATE_DEBUG=1` shows it",
    "EXIT_SYSTEM": "the system refused: the disk is full, the workspace is read-only, the run store cannot be written",
    "EXIT_INTERRUPTED": "interrupted (SIGINT or SIGTERM)",
}


def exit_codes_reference() -> str:
    from polycrate import errors

    codes = {name: getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")}
    missing = sorted(set(codes) - set(EXIT_MEANINGS)) + sorted(set(EXIT_MEANINGS) - set(codes))
    if missing:
        raise ReferenceError(f"scripts/docs_reference.py: exit codes out of step with polycrate.errors: {missing}")
    lines = ["| code | name in `polycrate.errors` | meaning |", "| --- | --- | --- |", "| 0 | | success |"]
    for name, code in sorted(codes.items(), key=lambda item: item[1]):
        lines.append(f"| {code} | `{name}` | {EXIT_MEANINGS[name]} |")
    return "\n".join(lines)


def schemas_reference() -> str:
    import polycrate.contract

    folder = Path(inspect.getsourcefile(polycrate.contract)).parent / "schemas"
    lines = ["| `schema` | file | what |", "| --- | --- | --- |"]
    for path in sorted(folder.glob("*.schema.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        title = str(doc.get("title", "")).replace("|", "\\|")
        lines.append(f"| `{doc.get('$id', '')}` | `src/polycrate/contract/schemas/{path.name}` | {title} |")
    return "\n".join(lines)


# --- the package layout --------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def layers() -> tuple[tuple[str, ...], ...]:
    """The layers, low to high, as tests/unit/test_import_graph.py holds the code to them (its LAYERS,
    read from its source: one list for the test and the documentation)."""
    tree = ast.parse((REPO / "tests" / "unit" / "test_import_graph.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign)
                                                                      else None)
        if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
            return tuple(tuple(n for n in layer if n != "__main__") for layer in ast.literal_eval(node.value) if
                         layer != ("__main__",))
    raise ReferenceError("tests/unit/test_import_graph.py has no LAYERS")


def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def packages_reference() -> str:
    import polycrate

    root = Path(inspect.getsourcefile(polycrate)).parent
    present = {p.stem for p in root.glob("*.py") if p.stem not in ("__init__", "__main__")} | \
              {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    order = layers()
    layered = {name for layer in order for name in layer}
    if present != layered:
        raise ReferenceError(f"tests/unit/test_import_graph.py LAYERS is out of step with src/polycrate: "
                             f"not in LAYERS {sorted(present - layered)}, gone {sorted(layered - present)}")
    lines = ["| layer | module | what it is |", "| --- | --- | --- |"]
    for number, layer in enumerate(order, start=1):
        for name in layer:
            package = root / name
            if package.is_dir():
                lines.append(f"| {number} | **`{name}/`** | {_first_line(package / '__init__.py')} |")
                for module in sorted(package.glob("*.py")):
                    if module.stem != "__init__":
                        lines.append(f"| | `{name}/{module.name}` | {_first_line(module)} |")
            else:
                lines.append(f"| {number} | **`{name}.py`** | {_first_line(root / (name + '.py'))} |")
    return "\n".join(lines)


GENERATORS = {"packages": packages_reference, "cli": cli_reference, "files": files_reference, "exit-codes": exit_codes_reference,
              "schemas": schemas_reference}


def render(markdown: str) -> str:
    return MARKER.sub(lambda match: GENERATORS[match[1]](), markdown)


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None) -> str:
    """MkDocs hook (mkdocs.yml `hooks:`)."""
    return render(markdown)
