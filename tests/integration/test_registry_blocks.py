"""Blocks shared through a real OCI registry on loopback (Debian's docker-registry): push, pull,
auto-install, upgrades, the lock file, tampered and malicious artifacts, inheritance."""
from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    ARTICLE_BLOCK,
    ARTICLE_FILES,
    assert_one_line_error,
    records,
    run_cli,
    run_cli_tty,
    write,
)
from tests.fleet.registry import LocalRegistry
from tests.helpers import tree as _tree


def tree(root: Path) -> dict[str, bytes]:
    return _tree(root, skip=())

pytestmark = pytest.mark.registry
ARTICLE_REF = "registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0"


@pytest.fixture(scope="module")
def registry():
    reg = LocalRegistry()
    yield reg
    reg.stop()


@pytest.fixture
def env(registry, tmp_path):
    """The article's registry name served by the loopback registry; an empty Docker config."""
    return {
        "POLYCRATE_REGISTRY_MIRRORS": f"registry.acme-corp.com={registry.host}",
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }


def fresh_workspace(tmp_path: Path, article_workspace: Path, name: str = "fresh") -> Path:
    """Only the article's workspace.poly and the (test-host) inventory.yml: no blocks/."""
    root = tmp_path / name
    root.mkdir()
    for f in ("workspace.poly", "inventory.yml"):
        shutil.copy(article_workspace / f, root / f)
    return root


def push_article(article_workspace: Path, env: dict) -> str:
    # --force: every test pushes the same content, which packs to the same digest
    result = run_cli("blocks", "push", "linux-maintenance", "--force", cwd=article_workspace, env=env)
    assert result.returncode == 0, result.output
    return result.stdout.split()[2]


def test_push_pull_into_fresh_workspace_then_the_articles_workflow_runs(article_workspace, registry, env, tmp_path):
    digest = push_article(article_workspace, env)
    # annotations: name, version, content digest; tagged with block.poly's version
    manifest = registry.manifest("acme/infra/linux-maintenance", "0.1.0")
    ann = manifest["annotations"]
    assert ann["io.polycrate.block.name"] == "linux-maintenance"
    assert ann["io.polycrate.block.version"] == "0.1.0"
    assert ann["io.polycrate.block.content-digest"].startswith("sha256:")
    # re-pushing an existing version is refused without --force
    again = run_cli("blocks", "push", "linux-maintenance", cwd=article_workspace, env=env)
    assert_one_line_error(again, "already exists", "--force")

    fresh = fresh_workspace(tmp_path, article_workspace)
    pulled = run_cli("blocks", "pull", ARTICLE_REF, cwd=fresh, env=env)
    assert pulled.returncode == 0, pulled.output
    installed = fresh / ARTICLE_BLOCK
    assert tree(installed) == tree(article_workspace / ARTICLE_BLOCK)
    lock = yaml.safe_load((fresh / "blocks.lock").read_text())
    assert lock["blocks"][ARTICLE_REF]["digest"] == digest

    listed = run_cli("blocks", "list", "-o", "json", cwd=fresh, env=env)
    (entry,) = json.loads(listed.stdout)["blocks"]
    assert entry["version"] == "0.1.0" and entry["origin"] == ARTICLE_REF and entry["digest"] == digest

    result = run_cli("workflows", "run", "nightly-maintenance", cwd=fresh, env=env)
    assert result.returncode == 0, result.output
    assert [(r["action"], r["host"]) for r in records(fresh)] == [
        ("backup", "db01.acme-corp.com"),
        ("update", "app01.acme-corp.com"),
        ("verify", "app01.acme-corp.com"),
    ]
    # the workspace.poly is the article's, unchanged
    assert (fresh / "workspace.poly").read_text() == (ARTICLE_FILES / "workspace.poly").read_text()


def test_auto_install_refuses_without_terminal_and_installs_with_force(article_workspace, env, tmp_path):
    push_article(article_workspace, env)
    fresh = fresh_workspace(tmp_path, article_workspace)
    refused = run_cli("workflows", "run", "nightly-maintenance", cwd=fresh, env=env)
    assert_one_line_error(refused, "workspace.poly:5", f"polycrate blocks pull {ARTICLE_REF}", "--blocks-auto-pull")
    assert not (fresh / "blocks").exists() and records(fresh) == []

    result = run_cli("workflows", "run", "nightly-maintenance", "--force", cwd=fresh, env=env)
    assert result.returncode == 0, result.output
    assert f"pulled {ARTICLE_REF}" in result.stderr
    assert [r["action"] for r in records(fresh)] == ["backup", "update", "verify"]
    assert (fresh / "blocks.lock").is_file()

    other = fresh_workspace(tmp_path, article_workspace, "other")
    result = run_cli("run", "linux-maintenance", "backup", "--blocks-auto-pull", cwd=other, env=env)
    assert result.returncode == 0, result.output
    assert [r["action"] for r in records(other)] == ["backup"]


def test_auto_install_asks_on_a_terminal(article_workspace, env, tmp_path, monkeypatch):
    push_article(article_workspace, env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    no = fresh_workspace(tmp_path, article_workspace, "no")
    result = run_cli_tty("run", "linux-maintenance", "backup", cwd=no, answer="n")
    assert result.returncode == 1, result.output
    assert "matches no installed block" in result.stdout and "[y/N]" in result.stdout
    assert not (no / "blocks").exists()
    yes = fresh_workspace(tmp_path, article_workspace, "yes")
    result = run_cli_tty("run", "linux-maintenance", "backup", cwd=yes, answer="y")
    assert result.returncode == 0, result.output
    assert [r["action"] for r in records(yes)] == ["backup"]


# --- small script blocks under the registry's own address --------------------------------------

TOOL = """
name: tool
version: {version}
config:
  word: {word}
actions:
  - name: show
    script:
      - echo "tool {version} says {{{{ .block.config.word }}}} $(cat payload.txt)"
"""


def publish(registry, tmp_path: Path, repo: str, version: str, payload: str = "v1", force: bool = False) -> Path:
    """A source workspace with blocks/<registry>/t/<repo>/, pushed; returns its root."""
    src = tmp_path / f"src-{repo}"
    folder = src / "blocks" / registry.host / "t" / repo
    write(src / "workspace.poly", "name: src\n")
    write(folder / "block.poly", TOOL.format(version=version, word="hi"))
    (folder / "payload.txt").write_text(payload + "\n")
    args = ["blocks", "push", "tool"] + (["--force"] if force else [])
    result = run_cli(*args, cwd=src)
    assert result.returncode == 0, result.output
    return src


def consumer(tmp_path: Path, ref: str, name: str = "consumer") -> Path:
    root = tmp_path / name
    write(root / "workspace.poly", f"name: consumer\nblocks:\n  - name: tool\n    from: {ref}\n")
    return root


def test_version_upgrade_through_auto_install_and_no_silent_downgrade(registry, tmp_path):
    base = f"{registry.host}/t/upgrade"
    publish(registry, tmp_path, "upgrade", "1.0.0", payload="first")
    publish(registry, tmp_path, "upgrade", "1.1.0", payload="second", force=True)
    root = consumer(tmp_path, f"{base}:1.0.0")
    result = run_cli("run", "tool", "show", "--blocks-auto-pull", cwd=root)
    assert result.returncode == 0, result.output
    assert "tool 1.0.0 says hi" in result.stdout and "first" in result.stdout

    write(root / "workspace.poly", (root / "workspace.poly").read_text().replace("1.0.0", "1.1.0"))
    refused = run_cli("run", "tool", "show", cwd=root)
    assert_one_line_error(refused, "installed at version 1.0.0 (upgrade)", f"polycrate blocks pull {base}:1.1.0")
    result = run_cli("run", "tool", "show", "--blocks-auto-pull", cwd=root)
    assert result.returncode == 0, result.output
    assert f"pulled {base}:1.1.0" in result.stderr and "(was 1.0.0)" in result.stderr
    assert "tool 1.1.0 says" in result.stdout and "second" in result.stdout
    lock = yaml.safe_load((root / "blocks.lock").read_text())["blocks"]
    assert set(lock) == {f"{base}:1.0.0", f"{base}:1.1.0"}

    # back to 1.0.0: a downgrade is never silent, and --blocks-auto-pull alone does not do it
    write(root / "workspace.poly", (root / "workspace.poly").read_text().replace("1.1.0", "1.0.0"))
    refused = run_cli("run", "tool", "show", "--blocks-auto-pull", cwd=root)
    assert_one_line_error(refused, "installed at version 1.1.0 (downgrade)", "--force")
    result = run_cli("run", "tool", "show", "--force", cwd=root)
    assert result.returncode == 0, result.output
    assert "downgrading" in result.stderr and "tool 1.0.0 says" in result.stdout


def test_pull_without_version_takes_the_highest(registry, tmp_path):
    publish(registry, tmp_path, "highest", "0.9.0")
    publish(registry, tmp_path, "highest", "0.10.0", force=True)
    root = consumer(tmp_path, f"{registry.host}/t/highest")
    result = run_cli("blocks", "pull", f"{registry.host}/t/highest", cwd=root)
    assert result.returncode == 0, result.output
    assert f"{registry.host}/t/highest:0.10.0" in result.stdout
    removed = run_cli("blocks", "uninstall", "tool", cwd=root)
    assert removed.returncode == 0, removed.output
    assert "uninstalled tool 0.10.0" in removed.stdout
    assert list((root / "blocks").iterdir()) == []  # the empty registry-path folders go too
    assert_one_line_error(run_cli("blocks", "uninstall", "tool", cwd=root), "no installed block 'tool'")


def test_repushed_tag_with_a_new_digest_is_refused_by_the_lock(registry, tmp_path):
    ref = f"{registry.host}/t/repush:1.0.0"
    src = publish(registry, tmp_path, "repush", "1.0.0", payload="original")
    root = consumer(tmp_path, ref)
    assert run_cli("blocks", "pull", ref, cwd=root).returncode == 0
    installed = root / "blocks" / registry.host / "t/repush"
    before, lock_before = tree(installed), (root / "blocks.lock").read_text()

    (src / "blocks" / registry.host / "t/repush/payload.txt").write_text("evil\n")
    pushed = run_cli("blocks", "push", "tool", "--force", "-o", "json", cwd=src)  # validated: block-push.v1
    assert pushed.returncode == 0, pushed.output
    pushed_doc = json.loads(pushed.stdout)
    assert pushed_doc["replaced"] and pushed_doc["replaced"] != pushed_doc["digest"]
    refused = run_cli("blocks", "pull", ref, cwd=root)
    assert_one_line_error(refused, ref, "blocks.lock", "re-pushed", "--update-lock")
    assert tree(installed) == before and (root / "blocks.lock").read_text() == lock_before

    accepted = run_cli("blocks", "pull", ref, "--update-lock", "-o", "json", cwd=root)  # validated: block-pull.v1
    assert accepted.returncode == 0, accepted.output
    assert json.loads(accepted.stdout)["digest"] == pushed_doc["digest"]
    assert (installed / "payload.txt").read_text() == "evil\n"
    assert (root / "blocks.lock").read_text() != lock_before


def test_tampered_archive_is_refused_and_nothing_is_written(registry, tmp_path):
    base = f"{registry.host}/t/tamper"
    publish(registry, tmp_path, "tamper", "1.0.0")
    publish(registry, tmp_path, "tamper", "2.0.0", force=True)
    root = consumer(tmp_path, f"{base}:1.0.0")
    assert run_cli("blocks", "pull", f"{base}:1.0.0", cwd=root).returncode == 0
    snapshot = tree(root)
    # corrupt the stored layer of 2.0.0 at rest in the registry's storage
    layer = registry.manifest("t/tamper", "2.0.0")["layers"][0]
    data = registry.blob_file(layer["digest"])
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    refused = run_cli("blocks", "pull", f"{base}:2.0.0", cwd=root)
    assert_one_line_error(refused, "tampered or corrupted", "nothing was installed")
    assert tree(root) == snapshot  # the old block, the lock: as they were
    assert sorted(p.name for p in (root / "blocks").iterdir()) == [registry.host]  # no staging left behind

    fresh = consumer(tmp_path, f"{base}:2.0.0", "fresh")
    refused = run_cli("run", "tool", "show", "--force", cwd=fresh)
    assert_one_line_error(refused, "tampered or corrupted")
    assert not (fresh / "blocks").exists() and not (fresh / "blocks.lock").exists()


def _raw_push(registry, repository: str, tag: str, tar_gz: bytes, annotations: dict) -> None:
    """Push a hand-made artifact with correct digests (a malicious publisher, not a broken registry)."""
    from polycrate.blocks import registry as reg

    client = reg.RegistryClient(registry.host)
    ref = reg.Reference(registry.host, repository, tag)
    tmp = registry.dir / f"raw-{repository.replace('/', '-')}"
    tmp.mkdir(exist_ok=True)
    (tmp / "layer").write_bytes(tar_gz)
    (tmp / "config").write_bytes(b"{}")
    config = client.upload_blob(ref, tmp / "config", reg.CONFIG_MEDIA_TYPE)
    layer = client.upload_blob(ref, tmp / "layer", reg.LAYER_MEDIA_TYPE)
    manifest = {"schemaVersion": 2, "mediaType": reg.MANIFEST_MEDIA_TYPE, "config": config, "layers": [layer],
                "annotations": annotations}
    client.put_manifest(ref, json.dumps(manifest).encode())


def test_dotdot_path_in_the_archive_is_refused_and_nothing_is_written(registry, tmp_path):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in (("block.poly", b"name: tool\nversion: 1.0.0\n"), ("../../../../escaped.txt", b"owned\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _raw_push(registry, "t/dotdot", "1.0.0", buf.getvalue(), {
        "io.polycrate.block.name": "tool", "io.polycrate.block.version": "1.0.0",
        "io.polycrate.block.content-digest": "sha256:" + "0" * 64,
    })
    root = consumer(tmp_path, f"{registry.host}/t/dotdot:1.0.0")
    refused = run_cli("blocks", "pull", f"{registry.host}/t/dotdot:1.0.0", cwd=root)
    assert_one_line_error(refused, "../../../../escaped.txt", "'..'")
    assert sorted(p.name for p in root.iterdir()) == ["workspace.poly"]
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/escaped.txt").exists()


def test_unknown_tag_and_unreachable_registry_are_one_line_errors(registry, tmp_path):
    from tests.fleet.process import free_port

    root = consumer(tmp_path, f"{registry.host}/t/none:1.0.0")
    assert_one_line_error(run_cli("blocks", "pull", f"{registry.host}/t/none:9.9.9", cwd=root), "no such version")
    closed = f"127.0.0.1:{free_port('127.0.0.1')}"
    assert_one_line_error(run_cli("blocks", "pull", f"{closed}/t/none:1.0.0", cwd=root), "unreachable")
    assert sorted(p.name for p in root.iterdir()) == ["workspace.poly"]


def test_inheritance_with_an_overridden_and_an_inherited_action(registry, tmp_path):
    # the parent, published: an ansible action and a script action
    src = tmp_path / "src-base"
    folder = src / "blocks" / registry.host / "t/base"
    write(src / "workspace.poly", "name: src\n")
    write(
        folder / "block.poly",
        """
        name: base
        version: 1.0.0
        config:
          greeting: hello
          target: world
        actions:
          - name: hello
            playbook: hello.yml
          - name: greet
            script: ["echo parent greet"]
        """,
    )
    write(
        folder / "hello.yml",
        """
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - ansible.builtin.copy:
                dest: "{{ workspace.root }}/hello.txt"
                content: "{{ block.config.greeting }} {{ block.config.target }} from {{ block.name }}\\n"
        """,
    )
    assert run_cli("blocks", "push", "base", cwd=src).returncode == 0
    # the child lives in the consumer's workspace and inherits from the registry block
    root = tmp_path / "consumer"
    write(root / "workspace.poly", "name: consumer\nblocks:\n  - name: child\n    config: {target: acme}\n")
    write(
        root / "blocks/child/block.poly",
        f"""
        name: child
        version: 0.1.0
        from: {registry.host}/t/base:1.0.0
        config:
          greeting: good night
        actions:
          - name: greet
            script: ["echo child greet"]
        """,
    )
    result = run_cli("run", "child", "greet", "--blocks-auto-pull", cwd=root)  # the parent is auto-installed
    assert result.returncode == 0, result.output
    assert f"pulled {registry.host}/t/base:1.0.0" in result.stderr
    assert "child greet" in result.stdout and "parent greet" not in result.stdout
    result = run_cli("run", "child", "hello", cwd=root)
    assert result.returncode == 0, result.output
    assert (root / "hello.txt").read_text() == "good night acme from child\n"


def test_workspace_update_installs_the_dependencies_from_the_registry(article_workspace, registry, env, tmp_path):
    """Polycrate's `dependencies:` and `workspace update`, against the real loopback registry."""
    digest = push_article(article_workspace, env)
    root = tmp_path / "deps"
    write(root / "workspace.poly", f"""
        name: deps
        dependencies:
          - {ARTICLE_REF}
        blocks:
          - name: maintenance
            from: {ARTICLE_REF}
    """)
    before = run_cli("block", "list", cwd=root, env=env)
    assert_one_line_error(before, "workspace.poly:5", "matches no installed block")

    update = run_cli("workspace", "update", cwd=root, env=env)
    assert update.returncode == 0, update.output
    assert f"pulled {ARTICLE_REF} {digest}" in update.stdout
    listed = json.loads(run_cli("block", "list", "-o", "json", cwd=root, env=env).stdout)["blocks"]
    assert [(b["name"], b["version"], b["origin"]) for b in listed] == [
        ("maintenance", "0.1.0", "registry.acme-corp.com/acme/infra/linux-maintenance:0.1.0")]
    assert digest in (root / "blocks.lock").read_text()

    # again: installed at the version it names, so nothing is fetched or written
    installed = tree(root)
    again = run_cli("workspace", "update", "-o", "json", cwd=root, env=env)
    assert again.returncode == 0, again.output
    assert [d["status"] for d in json.loads(again.stdout)["dependencies"]] == ["up to date"]
    assert tree(root) == installed

    (root / "workspace.poly").write_text((root / "workspace.poly").read_text().replace(
        f"  - {ARTICLE_REF}\n", "  - linux-maintenance\n"))
    edited = tree(root)
    assert_one_line_error(run_cli("workspace", "update", cwd=root, env=env), "workspace.poly:3",
                          "not a registry reference")
    assert tree(root) == edited
