"""The example linux-maintenance block's Ansible modules (library/) and what they share (module_utils/),
loaded as Ansible runs them: a module imports `ansible.module_utils.lm_archive`, which Ansible finds in
the module_utils/ folder beside the block's playbooks and ships with the module (AnsiballZ). Here the
folder is put into `ansible.module_utils`'s own path, so the same import finds the same file."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BLOCK = ROOT / "examples/acme-corp-automation/blocks/registry.acme-corp.com/acme/infra/linux-maintenance"
LIBRARY = BLOCK / "library"
MODULE_UTILS = BLOCK / "module_utils"

# python3 <module> <args.json>, as Ansible runs a module, with module_utils/ where the module looks for it
_BOOT = ("import runpy, sys, ansible.module_utils as m; m.__path__.append(sys.argv.pop(1)); sys.argv.pop(0); "
         "runpy.run_path(sys.argv[0], run_name='__main__')")


def with_module_utils() -> None:
    import ansible.module_utils

    if str(MODULE_UTILS) not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(MODULE_UTILS))


def load(name: str, as_name: str = "") -> ModuleType:
    """library/<name>.py imported in this process (module_utils/ reachable as Ansible ships it)."""
    with_module_utils()
    spec = importlib.util.spec_from_file_location(as_name or f"lm_{name}", LIBRARY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared() -> ModuleType:
    """module_utils/lm_archive.py, as the modules import it."""
    with_module_utils()
    import ansible.module_utils.lm_archive as lm_archive  # type: ignore[import-not-found]

    return lm_archive


def module_command(name: str, args_file: Path) -> list[str]:
    """The command that runs library/<name>.py with its arguments file in its own Python process."""
    return [sys.executable, "-c", _BOOT, str(MODULE_UTILS), str(LIBRARY / f"{name}.py"), str(args_file)]
