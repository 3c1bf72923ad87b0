"""Entry point that runs ansible-core's own ansible-playbook CLI in this interpreter.

It is the real `ansible-playbook` (``ansible.cli.playbook.PlaybookCLI``) with one
change: the warning "Found variable using reserved name 'block'" is not shown
for the variable polycrate itself passes. The article's playbooks use
``block.config.*`` by design; every other reserved-name warning stays.
"""
from __future__ import annotations

import sys

OUR_VARIABLES = frozenset({"block"})


def _quiet_our_reserved_names() -> None:
    from ansible.vars import manager, reserved

    original = reserved.warn_if_reserved

    def warn_if_reserved(myvars, additional=None):
        return original([name for name in myvars if name not in OUR_VARIABLES], additional)

    manager.warn_if_reserved = warn_if_reserved


def main(argv: list[str]) -> int:
    from ansible.cli.playbook import main as playbook_main

    _quiet_our_reserved_names()
    sys.argv = ["ansible-playbook", *argv]
    return playbook_main(sys.argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
