"""The real Polycrate's flags, part two (cmd/root.go, init.go, workspace_init.go, version.go, kubectl.go,
workflows.go, blocks.go, actions.go): --output-format, init --with-name/--with-ssh-keys/--with-config,
version --short/--latest (a package index on loopback; offline: "cannot check"), `k` passing every flag to
the real kubectl and its own kubeconfig rules, and a bare group command listing its items."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import assert_one_line_error, free_port, run_cli, write

WORKSPACE = """\
name: flags
blocks:
  - name: b
    actions:
      - {name: a, script: [echo a]}
workflows:
  - name: w
    steps: [{name: s, block: b, action: a}]
"""

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: {context}, context: {cluster: c, user: u}}]
current-context: {context}
"""


def kubeconfig(context: str) -> str:
    return KUBECONFIG.replace("{context}", context)


def test_output_format_is_the_long_name_of_o(tmp_path):
    write(tmp_path / "workspace.poly", WORKSPACE)
    for argv in (("workflow", "list", "--output-format", "json"), ("--output-format", "json", "workflow", "list")):
        shown = run_cli(*argv, cwd=tmp_path)
        assert shown.returncode == 0, shown.output
        assert [w["name"] for w in json.loads(shown.stdout)["workflows"]] == ["w"]


def test_a_bare_group_command_lists_its_items(tmp_path):
    write(tmp_path / "workspace.poly", WORKSPACE)
    for group, header in (("workflow", "NAME"), ("workflows", "NAME"), ("block", "NAME"), ("action", "BLOCK")):
        shown = run_cli(group, cwd=tmp_path)
        assert shown.returncode == 0, shown.output
        assert shown.stdout.split()[0] == header, shown.stdout
    assert json.loads(run_cli("block", "-o", "json", cwd=tmp_path).stdout)["blocks"][0]["name"] == "b"
    assert json.loads(run_cli("action", "-o", "json", cwd=tmp_path).stdout)["actions"][0]["name"] == "a"


def test_init_with_name_ssh_keys_and_config(tmp_path):
    folder = tmp_path / "new"
    made = run_cli("init", str(folder), "--with-name", "named", "--with-ssh-keys", "--bare")
    assert made.returncode == 0, made.output
    assert "name: named" in (folder / "workspace.poly").read_text()
    assert (folder / "id_rsa").stat().st_mode & 0o777 == 0o600
    assert (folder / "id_rsa.pub").read_text().startswith("ssh-rsa ")

    plain = tmp_path / "plain"
    made = run_cli("init", str(plain), "--with-ssh-keys=false", "--bare")
    assert made.returncode == 0, made.output
    assert not (plain / "id_rsa").exists()
    # --with-config=false: Polycrate's init in a workspace that exists: only its keys
    before = (plain / "workspace.poly").read_text()
    keys = run_cli("init", str(plain), "--with-config=false", "--with-ssh-keys=true")
    assert keys.returncode == 0, keys.output
    assert (plain / "id_rsa").is_file() and (plain / "workspace.poly").read_text() == before
    assert_one_line_error(run_cli("init", str(tmp_path / "x"), "--with-config=false"), "nothing to do")
    assert_one_line_error(run_cli("init", str(tmp_path / "y"), "--with-ssh-keys=maybe"), "expected true or false")


class _Index(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"info": {"version": "2.0.0rc1"}, "releases": {
            "0.9.0": [{"filename": "a.whl"}], "1.10.0": [{"filename": "b.whl"}], "1.9.0": [{"filename": "c.whl"}],
            "2.0.0rc1": [{"filename": "d.whl"}], "3.0.0": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_version_short_and_latest_from_the_package_index_or_cannot_check(tmp_path):
    from polycrate import __version__

    short = run_cli("version", "--short")
    assert short.returncode == 0 and short.stdout == f"{__version__}\n", short.output
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/pypi/polycrate/json"
        latest = run_cli("version", "--latest", env={"POLYCRATE_VERSION_INDEX": index})
        assert latest.returncode == 0, latest.output
        # the newest published release: 1.10.0 (not the pre-release, not the one without files)
        lines = latest.stdout.splitlines()
        assert (lines[0], lines[-1]) == (f"polycrate {__version__}", "Latest stable version: 1.10.0"), lines
        short = run_cli("version", "--short", "--latest", env={"POLYCRATE_VERSION_INDEX": index})
        assert short.stdout.splitlines() == [__version__, "Latest stable version: 1.10.0"], short.output
        shown = json.loads(run_cli("version", "--latest", "-o", "json", env={"POLYCRATE_VERSION_INDEX": index}).stdout)
        assert shown["latest"] == "1.10.0"
    finally:
        server.shutdown()
        server.server_close()
    offline = run_cli("version", "--latest", env={"POLYCRATE_VERSION_INDEX": f"http://127.0.0.1:{free_port()}/"})
    assert offline.returncode == 0, offline.output
    assert offline.stdout.splitlines()[-1].startswith("latest version: cannot check: "), offline.stdout


def test_k_passes_every_flag_to_kubectl_and_falls_back_to_kubectls_own_kubeconfig(tmp_path):
    root = tmp_path / "ws"
    write(root / "workspace.poly", WORKSPACE)
    own = write(tmp_path / "own-kubeconfig", kubeconfig("from-kubeconfig-env"))
    # no workspace kubeconfig: kubectl's own rules (KUBECONFIG here)
    shown = run_cli("k", "-n", "kube-system", "config", "view", "--minify", "-o", "jsonpath={.contexts[0].name}",
                    cwd=root, env={"KUBECONFIG": str(own)})
    assert shown.returncode == 0, shown.output
    assert shown.stdout == "from-kubeconfig-env", shown.output
    # the workspace's kubeconfig wins, and kubectl's flags (-n, --context, -o) all reach it
    write(root / "kubeconfig.yml", kubeconfig("from-workspace"))
    shown = run_cli("k", "--context", "from-workspace", "config", "view", "--minify",
                    "-o", "jsonpath={.contexts[0].name}", cwd=root, env={"KUBECONFIG": str(own)})
    assert shown.returncode == 0, shown.output
    assert shown.stdout == "from-workspace", shown.output
    shown = run_cli("k", "-n", "kube-system", "create", "configmap", "x", "--from-literal=a=b", "--dry-run=client",
                    "--validate=false", "-o", "jsonpath={.metadata.namespace}", cwd=root)
    assert shown.returncode == 0, shown.output
    assert shown.stdout == "kube-system", shown.output
    # --block is ours, before kubectl's words
    assert_one_line_error(run_cli("k", "--block", "nosuch", "get", "pods", cwd=root), "unknown block 'nosuch'")
    assert Path(own).read_text() == kubeconfig("from-kubeconfig-env")
