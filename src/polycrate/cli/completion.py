"""Shell completion: `polycrate completion bash|zsh|fish` prints a script; the script asks
`polycrate __complete SHELL WORD...` (hidden) for the candidates of the word being typed.

Commands, flags and their choices come from the real argument parser (``cli.build_parser``), walked
here; the names of the workspace (workflows, blocks, actions, runs) come from the workspace itself.
A positional argument names what it takes with ``names(action, KIND)`` where it is declared.
``__complete`` never prints an error and never writes: a broken workspace completes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

# what a positional argument or an option's value names (set with ``names``)
WORKFLOW, BLOCK, ACTION, RUN, STEP, DIR, FILE = "workflow", "block", "action", "run", "step", "dir", "file"
WORKFLOW_OR_BLOCK = "workflow|block"  # `polycrate run WORKFLOW|BLOCK [ACTION]`
SHELLS = ("bash", "zsh", "fish")
HIDDEN = "__complete"


def names(action: argparse.Action, kind: str) -> argparse.Action:
    """Mark what an argument takes, for completion (``names(p.add_argument("name"), WORKFLOW)``)."""
    action.completes = kind  # type: ignore[attr-defined]
    return action


def register(sub, shared) -> None:
    p = sub.add_parser("completion", parents=[shared], help="print a shell completion script (bash, zsh or fish)",
                       description="Print a completion script. bash: `source <(polycrate completion bash)` "
                       "(or save it in /etc/bash_completion.d/polycrate); zsh: `source <(polycrate completion zsh)` "
                       "after compinit; fish: `polycrate completion fish > ~/.config/fish/completions/polycrate.fish`.")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)


def cmd_completion(args) -> int:
    sys.stdout.write(SCRIPTS[args.shell])
    return 0


# --- walking the parser ------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))


def _commands(sub: argparse._SubParsersAction) -> list[tuple[str, str]]:
    """(name, help) of each command, aliases after the names that have help. A command added without help
    (`worker execute`, a worker's own) is not offered, as `--help` does not list it."""
    helps = {c.dest: c.help or "" for c in sub._choices_actions}
    shown = {id(sub.choices[name]) for name in helps if name in sub.choices}
    return [(name, helps.get(name, "")) for name, parser in sub.choices.items()
            if not name.startswith("_") and id(parser) in shown]


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for flag in action.option_strings:
            out.append((flag, action.help or ""))
    return out


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    flag = word.split("=", 1)[0]
    for action in parser._actions:
        if flag in action.option_strings:
            return action
    return None


class _Walk:
    """Where the words before the one being typed leave us: the (sub)parser, the positionals given,
    the workspace named by -w, and the option whose value is being typed (if any)."""

    def __init__(self, parser: argparse.ArgumentParser, words: list[str]):
        self.parser = parser
        self.positionals: list[str] = []
        self.workspace: str | None = None
        self.pending: argparse.Action | None = None
        only_positionals = False
        for word in words:
            if self.pending is not None:
                self._value(self.pending, word)
                self.pending = None
            elif not only_positionals and word == "--":
                only_positionals = True
            elif not only_positionals and word.startswith("-") and word != "-":
                attached = word.startswith("--") and "=" in word or not word.startswith("--") and len(word) > 2
                action = _option(self.parser, word if word.startswith("--") else word[:2])
                if action is not None and _takes_value(action):
                    if not attached:
                        self.pending = action
                    else:
                        self._value(action, word.split("=", 1)[1] if word.startswith("--") else word[2:])
            else:
                sub = _subparsers(self.parser)
                if sub is not None and not self.positionals and word in sub.choices:
                    self.parser = sub.choices[word]
                else:
                    self.positionals.append(word)

    def _value(self, action: argparse.Action, value: str) -> None:
        if action.dest == "workspace":
            self.workspace = value

    def positional(self) -> argparse.Action | None:
        """The positional argument the next word fills."""
        filled = len(self.positionals)
        for action in self.parser._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            if action.nargs in ("+", "*", argparse.REMAINDER):
                return action
            count = 1 if action.nargs in (None, "?") else int(action.nargs)
            if filled < count:
                return action
            filled -= count
        return None


def candidates(words: list[str], parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(candidate, description) for the last word of ``words`` (the one being typed; may be empty).
    A candidate ``:dirs`` or ``:files`` asks the shell for its own file completion."""
    *before, current = words or [""]
    walk = _Walk(parser, before)
    if walk.pending is not None:
        return [(v, t) for v, t in _values(walk.pending, walk, current) if v.startswith((":", current))]
    if current.startswith("-"):
        if "=" in current and current.startswith("--"):
            action = _option(walk.parser, current)
            flag, typed = current.split("=", 1)
            if action is not None and _takes_value(action):
                return [(f"{flag}={value}", text) for value, text in _values(action, walk, typed)
                        if value.startswith(typed) and not value.startswith(":")]
            return []
        return [(flag, text) for flag, text in _options(walk.parser) if flag.startswith(current)]
    found: list[tuple[str, str]] = []
    sub = _subparsers(walk.parser)
    if sub is not None and not walk.positionals:
        found += _commands(sub)
    positional = walk.positional()
    if positional is not None:
        found += _values(positional, walk, current)
    return [(value, text) for value, text in found if value.startswith((":", current))]


def _values(action: argparse.Action, walk: _Walk, current: str) -> list[tuple[str, str]]:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return [(str(choice), "") for choice in action.choices]
    kind = getattr(action, "completes", None)
    if kind is None and action.dest == "workspace":
        kind = DIR
    if kind in (DIR, FILE):
        return [(f":{kind}s", "")]
    if kind is None:
        return []
    try:
        return _workspace_names(kind, walk)
    except Exception:
        return []


def _workspace_names(kind: str, walk: _Walk) -> list[tuple[str, str]]:
    from polycrate.config.workspace import find_root

    root = find_root(walk.workspace, explicit=walk.workspace is not None)
    if kind == RUN:
        return _run_ids(root)
    from polycrate.config.workspace import load_workspace

    ws = load_workspace(root)
    found: list[tuple[str, str]] = []
    if kind in (WORKFLOW, WORKFLOW_OR_BLOCK):
        found += [(w.name, w.description or "workflow") for w in ws.workflows.values()]
    if kind in (BLOCK, WORKFLOW_OR_BLOCK):
        found += [(b.name, b.definition.description or "block") for b in ws.blocks.values()]
    if kind == ACTION and walk.positionals:
        block = ws.blocks.get(walk.positionals[-1])
        if block is not None:
            found += [(a.name, a.description or a.type) for a in block.actions.values()]
    if kind == STEP:
        for workflow in ws.workflows.values():
            found += [(s.name, f"step of {workflow.name}") for s in (*workflow.steps, *workflow.on_failure)]
    seen: set[str] = set()
    unique = []
    for name, text in found:  # the first of each name, in order
        if name not in seen:
            seen.add(name)
            unique.append((name, text))
    return unique


def _run_ids(root) -> list[tuple[str, str]]:
    """`latest`, `latest~1`.. and the newest run ids, read-only (completion never migrates or repairs a store)."""
    import sqlite3

    from polycrate.history.store import DB_NAME

    path = root / ".polycrate" / DB_NAME
    if not path.is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
    try:
        rows = db.execute("SELECT id, name, status FROM runs ORDER BY started DESC LIMIT 50").fetchall()
    finally:
        db.close()
    found = [("latest", "the newest run")] if rows else []
    found += [(f"latest~{i}", f"{name} {status}") for i, (_, name, status) in enumerate(rows[1:4], 1)]
    return found + [(run_id, f"{name} {status}") for run_id, name, status in rows]


def complete_main(argv: list[str], build_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """`polycrate __complete SHELL WORD...`: one candidate a line (fish and zsh: `name<TAB>description`).
    `build_parser`: the command line's parser (cli.build_parser), built only when asked."""
    shell, words = (argv[0], argv[1:]) if argv and argv[0] in SHELLS else ("bash", argv)
    try:
        found = candidates(words, build_parser())
    except (Exception, SystemExit):
        return 0
    lines = [f"{value}\t{' '.join(text.split())}" if shell != "bash" and text.strip() else value
             for value, text in found]
    try:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader (a shell, `| head`) went away: nothing is owed to it
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --- the scripts --------------------------------------------------------------------------------

BASH = r"""# bash completion for polycrate: source <(polycrate completion bash)
_polycrate() {
    local cur=${COMP_WORDS[COMP_CWORD]} prog=${COMP_WORDS[0]} line
    local -a words=("${COMP_WORDS[@]:1:COMP_CWORD}")
    # bash splits words at '=' (COMP_WORDBREAKS): join --opt=value back for polycrate
    local i joined=() prefix=""
    for ((i = 0; i < ${#words[@]}; i++)); do
        if [[ ${words[i]} == "=" && ${#joined[@]} -gt 0 ]]; then
            joined[-1]+="=${words[i+1]}"
            ((i++))
        else
            joined+=("${words[i]}")
        fi
    done
    [[ $cur == "=" ]] && cur=""
    [[ ${joined[-1]} == *=* && $cur != *=* ]] && prefix=${joined[-1]%%=*}=
    [[ -x $prog ]] || prog=polycrate
    COMPREPLY=()
    local out
    out=$(command "$prog" __complete bash "${joined[@]}" 2>/dev/null) || return 0
    while IFS= read -r line; do
        case $line in
            "") ;;
            :dirs) compopt -o filenames 2>/dev/null
                   while IFS= read -r line; do COMPREPLY+=("$line"); done < <(compgen -d -- "$cur") ;;
            :files) compopt -o filenames 2>/dev/null
                    while IFS= read -r line; do COMPREPLY+=("$line"); done < <(compgen -f -- "$cur") ;;
            *) COMPREPLY+=("${line#"$prefix"}") ;;
        esac
    done <<< "$out"
}
complete -F _polycrate polycrate
"""

ZSH = r"""#compdef polycrate
# zsh completion for polycrate: source <(polycrate completion zsh) after compinit,
# or save it as _polycrate in a folder of $fpath
_polycrate() {
    local -a found
    local line out
    out=$(command ${words[1]} __complete zsh "${(@)words[2,CURRENT]}" 2>/dev/null) || return 1
    for line in ${(f)out}; do
        case $line in
            :dirs) _files -/ ;;
            :files) _files ;;
            *) found+=("${line//:/\\:}") ;;
        esac
    done
    found=("${(@)found//	/:}")
    (( ${#found} )) && _describe -t values polycrate found
    return 0
}
if [[ $funcstack[1] == _polycrate ]]; then
    _polycrate "$@"
else
    compdef _polycrate polycrate
fi
"""

FISH = r"""# fish completion for polycrate: polycrate completion fish > ~/.config/fish/completions/polycrate.fish
function __polycrate_complete
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    for line in (command $words[1] __complete fish $words[2..-1] "$current" 2>/dev/null)
        switch $line
            case :dirs
                __fish_complete_directories "$current"
            case :files
                __fish_complete_path "$current"
            case '*'
                echo $line
        end
    end
end
complete -c polycrate -f -a '(__polycrate_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}
