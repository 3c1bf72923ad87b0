"""Entry point that runs ansible-core's own ansible-playbook CLI in this interpreter.

It is the real `ansible-playbook` (``ansible.cli.playbook.PlaybookCLI``) with one
change: the warning "Found variable using reserved name 'block'" (or 'action') is not shown
for the variables polycrate itself passes (the real Polycrate's snapshot names). The article's playbooks use
``block.config.*`` by design; every other reserved-name warning stays.
And one fix: a ``no_log`` task's error message is censored like the rest of its result
(ansible-core 2.19 would print it). Both live in ``ansible_setup.py``.
"""
from __future__ import annotations

import sys

from polycrate.runtime.ansible_setup import censor_errors_of_no_log_tasks, quiet_our_reserved_names, terminal_width


def main(argv: list[str]) -> int:
    if argv[:1] == ["--polycrate-preflight"]:  # the preflight's Ansible half (runtime/playbook_check.py)
        from polycrate.runtime import playbook_check as ansible_preflight

        return ansible_preflight.main(argv[1])
    from ansible.cli.playbook import main as playbook_main

    terminal_width()
    quiet_our_reserved_names()
    censor_errors_of_no_log_tasks()
    sys.argv = ["ansible-playbook", *argv]
    return playbook_main(sys.argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
