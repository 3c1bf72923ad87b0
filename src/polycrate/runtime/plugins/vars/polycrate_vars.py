"""Ansible vars plugin: the action's snapshot (POLYCRATE_WORKSPACE_SNAPSHOT_YAML) as variables.

An ansible-playbook started from a script action's line gets `workspace`, `block`, `action`, `workflow`,
`step`, `env` and `mounts` as a playbook action gets them through -e, as the real Polycrate's
polycrate_vars plugin gives them (hack/ansible/plugins/vars/polycrate_vars.py there). Script actions
enable it (runtime/script.py); it reads the file once per process.
"""
from __future__ import annotations

import os

from ansible.plugins.vars import BaseVarsPlugin

DOCUMENTATION = """
    name: polycrate_vars
    version_added: "2.10"
    short_description: the polycrate action's snapshot as variables
    description: Loads POLYCRATE_WORKSPACE_SNAPSHOT_YAML and returns its top-level keys as variables.
    options:
      stage:
        ini:
          - key: stage
            section: vars_polycrate_vars
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
"""

_LOADED: dict | None = None


def _snapshot() -> dict:
    global _LOADED
    if _LOADED is None:
        import yaml

        path = os.environ.get("POLYCRATE_WORKSPACE_SNAPSHOT_YAML")
        data = None
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        _LOADED = data if isinstance(data, dict) else {}
    return _LOADED


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True
    is_stateless = True

    def get_vars(self, loader, path, entities, cache=True):
        super().get_vars(loader, path, entities)
        return dict(_snapshot())
