"""The real Polycrate's block features: `template: true`, `labels` and `kind`, per-block inventory and
kubeconfig from artifacts/blocks/<block>/ (and from another block), Go-templated script lines.
Real runs: bash for scripts, ansible-playbook over a local connection for the inventory."""
from __future__ import annotations

import json

from tests.conftest import write
from tests.helpers import assert_one_line_error, run_cli_inprocess


def _workspace(tmp_path, workflows: str = "") -> object:
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: blocks-ws
        organization: acme
        labels:
          team: ops
        config:
          runtime: local
        blocks:
          - name: db1
            from: postgres-base
            labels:
              tier: production
            config:
              db_name: orders
    """ + workflows)
    write(root / "blocks" / "postgres-base" / "block.poly", """
        name: postgres-base
        version: 1.2.0
        kind: k8sapp
        template: true
        labels:
          app.kubernetes.io/part-of: shop
          tier: staging
        config:
          db_name: postgres
          port: 5432
        actions:
          - name: install
            script:
              - echo "installing {{ .block.config.db_name }} on port {{ .block.config.port }} in {{ .workspace.name }}"
              - echo "{{ .block.config.db_name }}" > "$POLYCRATE_WORKSPACE/installed-{{ .block.name }}.txt"
    """)
    return root


def test_a_template_block_is_refused_alone_and_in_a_workflow_and_its_instance_runs(tmp_path, cli):
    root = _workspace(tmp_path, """
        workflows:
          - name: direct
            steps:
              - {name: one, block: db1, action: install}
              - {name: two, block: postgres-base, action: install}
    """)
    alone = cli("run", "postgres-base", "install", cwd=root)
    assert_one_line_error(alone, "blocks/postgres-base/block.poly:4", "block 'postgres-base' is a template",
                          "from: postgres-base")
    in_workflow = cli("workflow", "run", "direct", "--force", cwd=root)
    assert_one_line_error(in_workflow, "workspace.poly:", "step 'two'", "is a template")
    assert not list(root.glob("installed-*.txt")), "a refused run ran something"
    assert json.loads(cli("runs", "list", "-o", "json", cwd=root).stdout)["runs"] == [], "a refused run was recorded"
    validate = cli("workspace", "validate", cwd=root)
    assert validate.returncode == 2 and "step 'two'" in validate.stderr and "is a template" in validate.stderr
    # without that step the workspace is valid: a template's own actions are not checked (its config may be
    # incomplete; each instance is checked with its own): this template's script needs `owner`, db1 has it
    (root / "workspace.poly").write_text((root / "workspace.poly").read_text()
                                         .replace("      - {name: two, block: postgres-base, action: install}\n", "")
                                         .replace("      db_name: orders\n", "      db_name: orders\n      owner: {name: alice}\n"))
    block = root / "blocks" / "postgres-base" / "block.poly"
    block.write_text(block.read_text() + '          - echo "owner {{ .block.config.owner.name }}"\n'.removeprefix("    "))
    valid = cli("workspace", "validate", cwd=root)
    assert valid.returncode == 0, valid.output

    instance = cli("run", "db1", "install", cwd=root)
    assert instance.returncode == 0, instance.output
    assert (root / "installed-db1.txt").read_text() == "orders\n"
    assert "owner alice" in instance.stdout.splitlines()


def test_labels_and_kind_in_list_and_inspect(tmp_path):
    root = _workspace(tmp_path)
    shown = json.loads(run_cli_inprocess("block", "inspect", "db1", "-o", "json", cwd=root).stdout)
    # the definition's labels under the entry's; a configured instance of a k8sapp block is a k8sappinstance
    assert shown["labels"] == {"app.kubernetes.io/part-of": "shop", "tier": "production"}
    assert shown["kind"] == "k8sappinstance" and shown["template"] is False
    base = json.loads(run_cli_inprocess("block", "inspect", "postgres-base", "-o", "json", cwd=root).stdout)
    assert base["kind"] == "k8sapp" and base["template"] is True
    listed = run_cli_inprocess("block", "list", cwd=root)
    assert listed.returncode == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith("db1 "))
    assert "k8sappinstance" in row and "tier=production" in row
    assert "template" in next(line for line in listed.stdout.splitlines() if line.startswith("postgres-base "))
    inspected = run_cli_inprocess("workspace", "inspect", cwd=root).stdout
    assert "labels:       team=ops" in inspected, inspected
    snap = json.loads(run_cli_inprocess("workspace", "snapshot", "-o", "json", cwd=root).stdout)["workspace"]
    assert snap["labels"] == {"team": "ops"}
    db1 = next(b for b in snap["blocks"] if b["name"] == "db1")
    assert db1["labels"]["tier"] == "production" and db1["labels"]["blocks.polycrate.io/kind"] == "k8sappinstance"


def test_bad_labels_and_kind_name_the_file_and_line(tmp_path):
    root = _workspace(tmp_path)
    block = root / "blocks" / "postgres-base" / "block.poly"
    good = block.read_text()
    block.write_text(good.replace("  tier: staging\n", "  tier: [a, b]\n"))
    assert_one_line_error(run_cli_inprocess("block", "list", cwd=root), "blocks/postgres-base/block.poly:7",
                          "label 'tier'")
    block.write_text(good.replace("kind: k8sapp", "kind: two words"))
    assert_one_line_error(run_cli_inprocess("block", "list", cwd=root), "blocks/postgres-base/block.poly:3", "kind")
    block.write_text(good.replace("template: true", "template: yes please"))
    assert_one_line_error(run_cli_inprocess("block", "list", cwd=root), "blocks/postgres-base/block.poly:4",
                          "'template' must be true or false")


def test_a_templated_script_line_renders_the_blocks_merged_config(tmp_path, cli):
    root = _workspace(tmp_path)
    result = cli("run", "db1", "install", cwd=root)
    assert result.returncode == 0, result.output
    # workspace config over the template's defaults; the `+ line` trace shows the line as it ran
    assert "installing orders on port 5432 in blocks-ws" in result.stdout
    assert '+ echo "installing orders on port 5432 in blocks-ws"' in result.stdout


def test_a_template_error_is_one_line_naming_block_poly_and_line(tmp_path, cli):
    root = _workspace(tmp_path)
    block = root / "blocks" / "postgres-base" / "block.poly"
    good = block.read_text()
    # Jinja's spelling (no leading dot) is refused when block.poly is read, by every command
    block.write_text(good.replace("{{ .block.config.port }}", "{{ block.config.port }}"))
    listed = run_cli_inprocess("workflow", "list", cwd=root)
    assert_one_line_error(listed, "blocks/postgres-base/block.poly:14", "script line 1", "template",
                          "leading dot")
    # a field of a string is found when the values are filled in: before anything runs
    block.write_text(good.replace("{{ .block.config.port }}", "{{ .block.config.db_name.first }}"))
    result = cli("run", "db1", "install", cwd=root)
    assert_one_line_error(result, "blocks/postgres-base/block.poly:14", "script line 1", "template")
    assert not list(root.glob("installed-*.txt"))
    no_preflight = cli("run", "db1", "install", "--no-preflight", cwd=root)
    assert no_preflight.returncode == 1 and "block.poly:14" in no_preflight.output, no_preflight.output
    assert not list(root.glob("installed-*.txt"))


def _inventory(group: str, host: str) -> str:
    return (f"all:\n  children:\n    {group}:\n      hosts:\n        {host}:\n"
            "          ansible_connection: local\n"
            "          ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")


def test_a_blocks_artifacts_inventory_and_kubeconfig_reach_its_actions(tmp_path, cli):
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: inv-ws
        config:
          runtime: local
        blocks:
          - name: infra
          - name: app
            inventory: {from: infra}
            kubeconfig: {from: infra}
          - name: plain
            from: app
            inventory: {}
    """)
    (root / "inventory.yml").write_text(_inventory("fleet", "wshost"))
    for name, pattern in (("infra", "own"), ("app", "own")):
        write(root / "blocks" / name / "block.poly", f"""
            name: {name}
            actions:
              - name: probe
                playbook: probe.yml
              - name: show
                script:
                  - echo "KUBECONFIG=$KUBECONFIG"
                  - echo "templated={{{{ .block.kubeconfig.path }}}}"
        """)
        write(root / "blocks" / name / "probe.yml", f"""
            - hosts: {pattern}
              gather_facts: false
              tasks:
                - ansible.builtin.copy:
                    dest: "{{{{ workspace.root }}}}/ran-{{{{ block.name }}}}-on-{{{{ inventory_hostname }}}}"
                    content: "{{{{ lookup('env', 'ANSIBLE_INVENTORY') }}}}"
        """)
    artifacts = root / "artifacts" / "blocks" / "infra"
    artifacts.mkdir(parents=True)
    (artifacts / "inventory.yml").write_text(_inventory("own", "blockhost"))
    (artifacts / "kubeconfig.yml").write_text("apiVersion: v1\nkind: Config\nclusters: []\n")

    # the block's own artifacts inventory, and the one another block's `inventory: {from: ...}` names
    for block in ("infra", "app"):
        result = cli("run", block, "probe", cwd=root)
        assert result.returncode == 0, result.output
        ran = root / f"ran-{block}-on-blockhost"
        assert ran.read_text() == str(artifacts / "inventory.yml"), result.output
    assert not list(root.glob("ran-*-on-wshost"))

    shown = cli("run", "app", "show", cwd=root)
    assert shown.returncode == 0, shown.output
    assert f"KUBECONFIG={artifacts / 'kubeconfig.yml'}" in shown.stdout.splitlines()
    assert f"templated={artifacts / 'kubeconfig.yml'}" in shown.stdout.splitlines()

    # `plain` inherits app's actions; its own (empty) inventory setting: no artifacts file, so the workspace's
    (root / "blocks" / "app" / "probe.yml").write_text((root / "blocks" / "app" / "probe.yml").read_text()
                                                       .replace("hosts: own", "hosts: fleet"))
    result = cli("run", "plain", "probe", cwd=root)
    assert result.returncode == 0, result.output
    assert (root / "ran-plain-on-wshost").read_text() == str(root / "inventory.yml")
    # preflight checks a play's hosts against the inventory the block gets: `fleet` is not in infra's
    (root / "blocks" / "infra" / "probe.yml").write_text((root / "blocks" / "infra" / "probe.yml").read_text()
                                                         .replace("hosts: own", "hosts: fleet"))
    refused = cli("run", "infra", "probe", cwd=root)
    assert refused.returncode == 2 and "fleet" in refused.stderr, refused.output


def test_an_inventory_from_an_unknown_block_names_the_file_and_line(tmp_path):
    root = _workspace(tmp_path)
    text = (root / "workspace.poly").read_text()
    (root / "workspace.poly").write_text(text.replace("    labels:\n      tier: production\n",
                                                      "    inventory: {from: nosuch}\n"))
    assert_one_line_error(run_cli_inprocess("block", "list", cwd=root), "workspace.poly:10", "inventory from 'nosuch'")


def test_polycrates_workflow_and_action_keys(tmp_path, cli):
    """Workflow `allow_failure` and `labels`, a step's `prompt` and `labels`, an action's `labels`,
    `alias` and `interactive`, as Polycrate writes them."""
    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: keys-ws
        config:
          runtime: local
        workflows:
          - name: tolerant
            labels: {owner: ops}
            alias: [tol]
            allow_failure: true
            steps:
              - {name: breaks, block: sh, action: fail, labels: {x: y}}
              - {name: after, block: sh, action: ok, prompt: {message: "really run after?"}}
    """)
    write(root / "blocks" / "sh" / "block.poly", """
        name: sh
        actions:
          - name: fail
            script: ["exit 3"]
          - name: ok
            labels: {purpose: check}
            alias: [fine]
            interactive: false
            script: ['echo ran >> "$POLYCRATE_WORKSPACE/after.txt"']
    """)
    shown = json.loads(run_cli_inprocess("workflow", "inspect", "tolerant", "-o", "json", cwd=root).stdout)
    assert shown["labels"] == {"owner": "ops"}
    assert [(s["name"], s["allow_failure"], s.get("prompt")) for s in shown["steps"]] == [
        ("breaks", True, None), ("after", True, "really run after?")]
    action = json.loads(run_cli_inprocess("action", "inspect", "sh", "ok", "-o", "json", cwd=root).stdout)
    assert action["labels"] == {"purpose": "check"}

    # the step's prompt is asked with the run's prompts, before step 1: no terminal, no --force, nothing runs
    asked = cli("workflow", "run", "tolerant", cwd=root)
    assert asked.returncode == 2 and "really run after?" in asked.output, asked.output
    assert not (root / "after.txt").exists()
    ran = cli("workflow", "run", "tolerant", "--force", cwd=root)
    assert ran.returncode == 0, ran.output  # the failing step is allowed to fail: the next one ran
    assert (root / "after.txt").read_text() == "ran\n"


def test_k_uses_the_kubeconfig_a_block_takes_from_another_and_the_workspaces_filename(tmp_path, cli):
    from tests.integration.test_polycrate_commands import KUBECONFIG

    root = tmp_path / "ws"
    write(root / "workspace.poly", """
        name: k-ws
        kubeconfig: {filename: clusters/prod.yml}
        blocks:
          - name: cluster
          - name: app
            kubeconfig: {from: cluster}
    """)
    for name in ("cluster", "app"):
        write(root / "blocks" / name / "block.poly", f"name: {name}\n")
    write(root / "clusters" / "prod.yml", KUBECONFIG.replace("{who}", "prod"))
    assert cli("k", "config", "current-context", cwd=root).stdout.strip() == "ctx-prod"
    assert cli("k", "--block", "app", "config", "current-context", cwd=root).stdout.strip() == "ctx-prod"
    write(root / "artifacts" / "blocks" / "cluster" / "kubeconfig.yml", KUBECONFIG.replace("{who}", "cluster"))
    assert cli("k", "--block", "app", "config", "current-context", cwd=root).stdout.strip() == "ctx-cluster"
