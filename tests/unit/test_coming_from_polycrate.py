"""The "Coming from Polycrate" table in step with the real Polycrate and with our parser: every command and
flag of the real CLI (listed below from its cmd/*.go) is named in the table's first column; every command
and flag a row does not call `not built` is one our parser knows (or the row names ours that replaces it);
every row that claims `same` names the test that exercises it (SAME_TESTS)."""
from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The one place the table is read from.
TABLE_FILE = REPO / "docs" / "how-to" / "coming-from-polycrate.md"
SECTION = "# Coming from Polycrate"

# polycrate/polycrate at 52adf160, cmd/*.go: each command's `Use:` under its parent (hidden ones too).
GO_COMMANDS = (
    "run", "workflow list", "workflow inspect", "workflow run", "workflows", "block list", "block inspect",
    "block pull", "block push", "block uninstall", "block readme", "block search", "blocks", "action list",
    "action inspect", "action run", "actions", "install", "uninstall", "prune", "pull", "push", "init", "version",
    "checksum", "create ssh-keys", "ssh", "ssh list", "workspace init", "workspace inspect", "workspace snapshot",
    "workspace update", "workspace clone", "workspace list", "workspace sync", "k", "logs list", "logs inspect",
    "log", "serve", "chroot", "inventory", "inventory convert", "sandbox", "velero", "hub", "backplane", "cargo",
    "update", "completion bash", "completion zsh", "completion fish", "completion powershell",
)
# cmd/root.go's persistent flags, and the commands' own (workflows_run.go, version.go, init.go, ...).
GO_FLAGS = (
    "-l", "--local", "-i", "--interactive", "-p", "--pull", "--blocks-auto-pull", "-b", "--build", "-o",
    "--output-format", "-f", "--snapshot", "--dev", "--editor", "--config-dir", "--config-file", "--workspace-dir",
    "--runtime-dir", "-w", "--loglevel", "--check-updates", "--auto-commit", "--merge-v2", "--logformat",
    "--kubeconfig", "--registry-url", "--registry-base-image", "--hub-*", "--backplane-*", "--event-handler",
    "--event-endpoint", "--event-commit", "-e", "--env", "-m", "--mount", "--workspace-config", "--image-ref",
    "--image-version", "--logs-root", "--blocks-root", "--blocks-config", "--artifacts-root", "--workflows-root",
    "--dockerfile", "--ssh-private-key", "--ssh-public-key", "--remote-root", "--container-root",
    "--step", "--short", "--latest", "--with-name", "--with-ssh-keys", "--with-config",
)

COMMANDS = "tests/integration/test_polycrate_commands.py::"
WORKSPACE = "tests/integration/test_polycrate_workspace.py::"
FLAGS2 = "tests/integration/test_polycrate_flags_part_two.py::"
FLAGS = "tests/integration/test_polycrate_flags.py::"
HUB = "tests/integration/test_polycrate_hub_names.py::"
MODEL = "tests/integration/test_polycrate_data_model.py::"
SNAPSHOT = "tests/integration/test_polycrate_snapshot.py::"
BLOCKS = "tests/integration/test_polycrate_blocks.py::"
SCHEMA = "tests/unit/test_schema.py::"

# every row claiming `same`, by its first cell, and the test that exercises it
SAME_TESTS = {
    "`run WORKFLOW`": COMMANDS + "test_run_workflow_with_one_argument_is_recorded_as_a_workflow_run",
    "`run BLOCK ACTION`": WORKSPACE + "test_the_real_polycrates_example_workspace_loads_and_runs_unchanged",
    "`workflow list\\|inspect\\|run` (alias `workflows`), `workflow run --step STEP`":
        FLAGS2 + "test_a_bare_group_command_lists_its_items",
    "`block list\\|inspect\\|pull\\|push\\|uninstall\\|readme` (alias `blocks`)":
        COMMANDS + "test_singular_commands_and_plural_aliases",
    "`action list\\|inspect\\|run` (alias `actions`)":
        COMMANDS + "test_action_inspect_run_block_readme_and_yaml_output",
    "`pull`, `push`": HUB + "test_a_hub_named_block_from_a_short_reference_against_the_workspaces_default_registry",
    "`checksum DIR`": COMMANDS + "test_version_and_checksum",
    "`create ssh-keys`": COMMANDS + "test_create_ssh_keys_and_git_commit",
    "`k ARGS`": FLAGS2 + "test_k_passes_every_flag_to_kubectl_and_falls_back_to_kubectls_own_kubeconfig",
    "global `-w`, `-f`": FLAGS + "test_flags_before_and_after_the_command_reach_a_local_script",
    "global flags, before or after the command": FLAGS + "test_flags_before_and_after_the_command_reach_a_local_script",
    "`-l/--local`": MODEL + "test_the_reference_documentations_workflow_example_validates_and_runs_locally",
    "`--ssh-private-key`, `--ssh-public-key`, `config.sshprivatekey`/`sshpublickey`":
        MODEL + "test_every_field_loads_with_its_effect_or_one_warning",
    "workspace.poly: every field of Polycrate's Workspace, WorkspaceConfig, Block, Action, Workflow and Step":
        MODEL + "test_every_field_loads_with_its_effect_or_one_warning",
    "an action with both `script` and `playbook`":
        MODEL + "test_an_action_with_script_and_playbook_is_refused_at_load_with_its_line",
    "a workflow without steps": MODEL + "test_a_workflow_without_steps_is_refused_only_when_used",
    "the snapshot a playbook gets": SNAPSHOT + "test_our_snapshot_has_every_field_of_the_one_polycrate_recorded",
    "block `template: true`": BLOCKS + "test_a_template_block_is_refused_alone_and_in_a_workflow_and_its_instance_runs",
    "block `labels`, `kind`": BLOCKS + "test_labels_and_kind_in_list_and_inspect",
    "block `inventory`, `kubeconfig` (`from:`, `filename:`)":
        BLOCKS + "test_a_blocks_artifacts_inventory_and_kubeconfig_reach_its_actions",
    "`config.image: {reference, version}`": SCHEMA + "test_polycrates_image_mapping_is_a_reference",
}
VERDICTS = ("same", "different", "ours", "not built")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def table_rows() -> list[list[str]]:
    """The rows of the table whose header starts `| Polycrate |`, after SECTION when the file has it."""
    text = TABLE_FILE.read_text(encoding="utf-8")
    if SECTION in text:
        text = text[text.index(SECTION):]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Polycrate |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def names(cell: str) -> tuple[set[str], set[str]]:
    """(commands, flags) a cell names in backticks: `a\\|b c` is `a c` and `b c`; `-o/--output-format` two
    flags; words after a flag are its values; upper-case words are placeholders."""
    commands: set[str] = set()
    flags: set[str] = set()
    for span in re.findall(r"`([^`]+)`", cell):
        words: list[list[str]] = []
        for token in span.replace("\\|", "|").split():
            if token.startswith("-"):
                flags.update(f.split("=")[0].split("[")[0] for f in token.split("/") if f.startswith("-"))
                break
            if token.isupper() or not re.match(r"^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$", token):
                break
            words.append(token.split("|"))
        for combination in itertools.product(*words) if words else ():
            commands.add(" ".join(combination))
    return commands, flags


def our_parser():
    from polycrate.cli import build_parser

    parser = build_parser(None)
    commands: dict[str, argparse.ArgumentParser] = {}
    options: set[str] = {o for a in parser._actions for o in a.option_strings}

    def walk(node: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    commands[" ".join(path + (name,))] = child
                    options.update(o for a in child._actions for o in a.option_strings)
                    walk(child, path + (name,))

    walk(parser, ())
    return commands, options


def _known(command: str, commands: dict) -> bool:
    """A command line our parser takes: its longest known prefix leaves only words a positional takes."""
    words = command.split()
    for cut in range(len(words), 0, -1):
        prefix = " ".join(words[:cut])
        if prefix in commands:
            has_sub = any(isinstance(a, argparse._SubParsersAction) for a in commands[prefix]._actions)
            return cut == len(words) or not has_sub
    return False


def test_every_row_has_a_verdict_and_the_go_cli_is_covered():
    rows = table_rows()
    assert len(rows) > 40
    named_commands: set[str] = set()
    named_flags: set[str] = set()
    for row in rows:
        assert len(row) == 3, row
        assert row[2].startswith(VERDICTS), row
        found_commands, found_flags = names(row[0])
        named_commands |= found_commands
        named_flags |= found_flags
        named_flags |= set(re.findall(r"`(--[a-z-]+\*)`", row[0]))
    missing = [c for c in GO_COMMANDS if c not in named_commands]
    assert missing == [], missing
    missing = [f for f in GO_FLAGS if f not in named_flags]
    assert missing == [], missing


def test_what_the_table_says_we_have_our_parser_has():
    commands, options = our_parser()
    wrong = []
    for first, ours, verdict in table_rows():
        if verdict.startswith("not built") or not first.startswith(("`", "global")):
            continue  # the rows of workspace.poly's fields name no commands
        go_commands, go_flags = names(first)
        go_commands = {c for c in go_commands if c.split()[0] in {g.split()[0] for g in GO_COMMANDS}}
        replacements, _ = names(ours)
        for command in go_commands:
            if not _known(command, commands) and not any(_known(r, commands) for r in replacements):
                wrong.append(f"{first}: {command}")
        for flag in go_flags:
            if flag not in options:
                wrong.append(f"{first}: {flag}")
    assert wrong == [], wrong


def test_every_same_is_backed_by_a_test_that_exists():
    same = {row[0] for row in table_rows() if row[2].startswith("same")}
    assert same == set(SAME_TESTS), sorted(same ^ set(SAME_TESTS))
    for node in SAME_TESTS.values():
        path, _, name = node.partition("::")
        assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(), re.MULTILINE), node
