"""The generated parts of the documentation's reference, and the MkDocs hook that puts them in.

A reference page holds a marker such as ``<!-- generated: cli -->``; at build time (`make docs`, and
`make test` through tests/unit/test_docs.py) ``on_page_markdown`` replaces it with text made from the
code itself, so the reference cannot drift from it:

- ``cli``: every command and option, walked from polycrate's own argparse parser (``build_parser``);
- ``files``: every key of workspace.poly, block.poly and secrets.poly, the tables made from the
  declarations (``polycrate.config.declarations``: its type, default and words; the same declarations
  drive the checks, ``polycrate.config.validate``, and the shipped JSON Schemas);
- ``exit-codes``: the ``EXIT_*`` constants of ``polycrate.errors``, likewise;
- ``schemas``: the JSON Schema files of the contract (``polycrate/contract/schemas``);
- ``packages``: the package layout by layer, each module with the first paragraph of its docstring.

It imports polycrate (the build runs in the project's virtualenv) and is not part of the package.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
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

def files_reference() -> str:
    """Every key of workspace.poly, block.poly and secrets.poly: the tables the declarations make
    (polycrate.config.declarations, the same source as the checks' key lists and the JSON Schema)."""
    from polycrate.config.declarations import FILES
    from polycrate.config.schema_export import key_tables

    return "\n".join(f"## {file}\n\n" + key_tables(file, level=3) for file in FILES)


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
