"""A small workspace for the terminal-view tests: script and ansible actions on localhost, local runtime.

The `gated` action prints a line, then waits until the test creates the file `go` in the
workspace, then prints again: a test can act while a run is known to be running, without timing.
"""
from __future__ import annotations

from pathlib import Path

from tests.conftest import write

WORKSPACE = """
name: term
config:
  runtime: local
blocks:
  - name: app
workflows:
  - name: gated
    steps:
      - {name: first, block: app, action: gated}
      - {name: second, block: app, action: hello}
  - name: gated-fails
    steps:
      - {name: first, block: app, action: gated}
      - {name: second, block: app, action: fail}
  - name: green
    steps:
      - {name: hello, block: app, action: hello}
  - name: broken
    steps:
      - {name: hello, block: app, action: hello}
      - {name: fail, block: app, action: fail}
  - name: plays
    steps:
      - {name: play, block: app, action: play}
      - {name: env, block: app, action: env}
  - name: quiet
    steps:
      - {name: quiet, block: app, action: quiet}
"""

BLOCK = """
name: app
version: 1.0.0
actions:
  - name: gated
    script:
      - echo "before the gate"
      - while [ ! -e "$POLYCRATE_WORKSPACE/go" ]; do sleep 0.1; done
      - echo "after the gate"
  - name: hello
    script:
      - echo "hello from ${POLYCRATE_STEP:-action}"
  - name: fail
    script:
      - echo "about to fail"
      - exit 3
  - name: env
    script:
      - echo "limit=$POLYCRATE_LIMIT tags=$POLYCRATE_TAGS skip=$POLYCRATE_SKIP_TAGS"
      - echo "extra=$POLYCRATE_EXTRA_VARS"
  - name: play
    playbook: play.yml
  - name: quiet
    playbook: quiet.yml
"""

PLAY = """
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: record the host
      ansible.builtin.shell: echo "{{ inventory_hostname }}" >> {{ workspace.root }}/hosts.txt
      tags: [record]
    - name: record a tagged task
      ansible.builtin.shell: echo "{{ inventory_hostname }}" >> {{ workspace.root }}/tagged.txt
      tags: [special]
    - name: check the extra variable
      ansible.builtin.assert:
        that: ["(wanted | default('none')) == (expected | default('none'))"]
        fail_msg: "wanted={{ wanted | default('none') }} expected={{ expected | default('none') }}"
      tags: [always]
"""

QUIET = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say something
      ansible.builtin.debug:
        msg: "starting"
    - name: sleep silently
      ansible.builtin.command: sleep {{ seconds | default(3) }}
"""

INVENTORY = """
all:
  hosts:
    h1:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
    h2:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
    localhost:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
"""


def make_term_workspace(root: Path) -> Path:
    write(root / "workspace.poly", WORKSPACE)
    write(root / "blocks/app/block.poly", BLOCK)
    write(root / "blocks/app/play.yml", PLAY)
    write(root / "blocks/app/quiet.yml", QUIET)
    write(root / "inventory.yml", INVENTORY)
    return root


def lines_of(root: Path, name: str) -> list[str]:
    path = root / name
    return path.read_text().split() if path.exists() else []
