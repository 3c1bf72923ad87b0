"""`polycrate git status|commit|pull|push|sync`: thin commands over the git CLI in the workspace root."""
from __future__ import annotations

from polycrate.cli.render import workspace_from
from polycrate.errors import PolycrateError


def register(sub, shared) -> None:
    group = sub.add_parser("git", parents=[shared], help="the workspace's git: status, commit, pull, push, sync")
    gsub = group.add_subparsers(dest="git_command", metavar="COMMAND")
    gsub.required = True
    for name, text in (("status", "git status of the workspace"), ("pull", "git pull (rebase)"),
                       ("push", "git push"), ("sync", "git pull --rebase, then git push")):
        p = gsub.add_parser(name, parents=[shared], help=text)
        p.set_defaults(func=cmd_git)
    p = gsub.add_parser("commit", parents=[shared], help="commit every change of the workspace (git add -A)")
    p.add_argument("--message", default="polycrate: update workspace", help="the commit message")
    p.set_defaults(func=cmd_git)


def cmd_git(args) -> int:
    from polycrate.config import gitrepo as gitcli

    ws = workspace_from(args)
    if not gitcli.is_repo(ws.root):
        raise PolycrateError("the workspace is not in a git repository (git init)", ws.root)
    command = args.git_command
    if command == "commit":
        commit = gitcli.commit_all(ws.root, args.message)
        print(f"committed {commit[:12]}: {args.message}" if commit else "nothing to commit")
        return 0
    # workspace.poly `sync.remote` (Polycrate's): pull from and push to that remote and branch
    remote, branch = ws.sync.remote, ws.sync.branch
    pull = ["pull", "--rebase"] + ([remote] + ([branch] if branch else []) if remote else [])
    push = ["push"] + ([remote, f"HEAD:{branch}" if branch else "HEAD"] if remote else [])
    steps = {"status": [["status", "--short", "--branch", "--", "."]], "pull": [pull],
             "push": [push], "sync": [pull, push]}[command]
    for step in steps:
        code = gitcli.git(ws.root, *step, capture=False).returncode
        if code:
            return code
    return 0
