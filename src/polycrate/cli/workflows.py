"""`polycrate workflows run|list|inspect`"""
from __future__ import annotations

from polycrate.cli.completion import STEP, WORKFLOW, names
from polycrate.cli.render import emit_json, table, workspace_from
from polycrate.cli.run import add_run_options, run_workflow


def register(sub, shared) -> None:
    group = sub.add_parser("workflow", aliases=["workflows"], parents=[shared], help="run and inspect workflows")
    wsub = group.add_subparsers(dest="workflows_command", metavar="COMMAND")
    wsub.required = False  # the group alone lists its items, as in the real Polycrate
    group.set_defaults(func=cmd_list)

    p = wsub.add_parser("run", parents=[shared], help="run a workflow's steps in order")
    names(p.add_argument("name"), WORKFLOW)
    names(p.add_argument("--step", metavar="STEP", help="run only this step"), STEP)
    p.add_argument(
        "--resume", action="store_true", help="continue the latest failed, interrupted or lost run at its first unfinished step"
    )
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = wsub.add_parser("list", parents=[shared], help="list workflows")
    p.set_defaults(func=cmd_list)

    p = wsub.add_parser("inspect", parents=[shared], help="show a workflow's steps")
    names(p.add_argument("name"), WORKFLOW)
    p.set_defaults(func=cmd_inspect)

    from polycrate.cli.schedules import add_workflow_schedule_command

    add_workflow_schedule_command(wsub, shared)


def cmd_list(args) -> int:
    ws = workspace_from(args)
    if args.output == "json":
        from polycrate import contract

        workflows = [contract.workflow(w) for w in ws.workflows.values()]
        emit_json(contract.document("workflows", {"workflows": workflows}), args.format)
    else:
        table([(w.name, len(w.steps), w.description) for w in ws.workflows.values()], ("NAME", "STEPS", "DESCRIPTION"))
    return 0


def cmd_inspect(args) -> int:
    from polycrate import contract
    ws = workspace_from(args)
    from polycrate.config.workspace import get_workflow

    data = contract.workflow(get_workflow(ws, args.name))
    if args.output == "json":
        emit_json(contract.document("workflow", data), args.format)
        return 0
    print(f"workflow: {data['name']}")
    if data["description"]:
        print(f"description: {data['description']}")
    if data["prompt"]:
        print(f"prompt: {data['prompt']}")
    if data["schedule"]:
        print(f"schedule: {data['schedule']['kind']} {data['schedule']['expression']}")
    if data["queue"] != "default":
        print(f"queue: {data['queue']}")
    if data["launch_variables"] is not None:
        print("launch values: " + (", ".join(_launch_variable(v) for v in data["launch_variables"]) or "none"))
    steps = [(str(i), s) for i, s in enumerate(data["steps"], 1)] + [("on_failure", s) for s in data["on_failure"]]
    table(
        [
            (
                i,
                s["name"],
                s["block"],
                s["action"],
                "yes" if s["allow_failure"] else "",
                f"{s['timeout']:g}s" if s.get("timeout") else "",
                f"{s['retries']} (every {s['retry_delay']:g}s)" if s.get("retries") else "",
            )
            for i, s in steps
        ],
        ("#", "STEP", "BLOCK", "ACTION", "ALLOW_FAILURE", "TIMEOUT", "RETRIES"),
    )
    return 0


def _launch_variable(v: dict) -> str:
    """`note (string, required)`, `replicas (integer, default 2)`, `size (choice, one of small|large)`."""
    said = [v["type"]] + (["required"] if v["required"] else [])
    if v["default"] is not None:
        said.append(f"default {v['default']}")
    if v["choices"]:
        said.append("one of " + "|".join(str(c) for c in v["choices"]))
    return f"{v['name']} ({', '.join(said)})"


cmd_run = run_workflow
