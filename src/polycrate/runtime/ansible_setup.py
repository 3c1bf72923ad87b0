"""What we change in ansible-core before it runs a playbook (in the step's process, the zygote's child
or the preflight's Ansible half): the reserved-name warning for our own `block` variable, the censoring
of a ``no_log`` task's error, and the banner width. Imports ansible only inside the functions."""
from __future__ import annotations

OUR_VARIABLES = frozenset({"workspace", "block", "action", "workflow", "step", "env", "mounts"})  # the snapshot's names


def quiet_our_reserved_names() -> None:
    from ansible.vars import manager, reserved

    original = reserved.warn_if_reserved

    def warn_if_reserved(myvars, additional=None):
        return original([name for name in myvars if name not in OUR_VARIABLES], additional)

    manager.warn_if_reserved = warn_if_reserved


def censor_errors_of_no_log_tasks() -> None:
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


def terminal_width() -> None:
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
