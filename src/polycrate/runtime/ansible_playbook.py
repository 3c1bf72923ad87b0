"""Entry point that runs ansible-core's own ansible-playbook CLI in this interpreter.

It is the real `ansible-playbook` (``ansible.cli.playbook.PlaybookCLI``) with one
change: the warning "Found variable using reserved name 'block'" (or 'action') is not shown
for the variables polycrate itself passes (the real Polycrate's snapshot names). The article's
playbooks use ``block.config.*`` by design; every other reserved-name warning stays.
And one fix: a ``no_log`` task's error message is censored like the rest of its result
(ansible-core 2.19 would print it; see ``_censor_errors_of_no_log_tasks``).
"""
from __future__ import annotations

import sys

OUR_VARIABLES = frozenset({"workspace", "block", "action", "workflow", "step", "env", "mounts"})


def _quiet_our_reserved_names() -> None:
    from ansible.vars import manager, reserved

    original = reserved.warn_if_reserved

    def warn_if_reserved(myvars, additional=None):
        return original([name for name in myvars if name not in OUR_VARIABLES], additional)

    manager.warn_if_reserved = warn_if_reserved


def _censor_errors_of_no_log_tasks() -> None:
    """ansible-core 2.19 keeps the error summary of a ``no_log`` result ('exception', which
    carries e.g. a failing ``fail`` task's templated msg) and the default callback prints it
    as "[ERROR]: Task failed: ...". A ``no_log`` result keeps no message of any kind here."""
    from ansible.executor import task_result

    original = task_result.censor_result

    def censor_result(result):
        censored = original(result)
        for key in ("exception", "warnings", "deprecations"):
            censored.pop(key, None)
        return censored

    task_result.censor_result = censor_result


def _terminal_width() -> None:
    """Ansible measures its banners on its own stdout, which is polycrate's pipe: take the width of
    polycrate's terminal instead (POLYCRATE_COLUMNS, set only when polycrate writes to a terminal)."""
    import os

    try:
        columns = int(os.environ.get("POLYCRATE_COLUMNS", ""))
    except ValueError:
        return
    if columns > 1:
        from ansible.utils.display import Display

        Display().columns = max(79, columns - 1)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--polycrate-preflight"]:  # the preflight's Ansible half (runtime/ansible_preflight.py)
        from polycrate.runtime import playbook_check as ansible_preflight

        return ansible_preflight.main(argv[1])
    from ansible.cli.playbook import main as playbook_main

    _terminal_width()
    _quiet_our_reserved_names()
    _censor_errors_of_no_log_tasks()
    sys.argv = ["ansible-playbook", *argv]
    return playbook_main(sys.argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
