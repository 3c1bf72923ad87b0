"""The workspace a worker runs, across hosts: real `polycrate worker` processes started in a folder of their own
(no checkout of the workspace), a real PostgreSQL, real git (a bare "origin" the workspace pushes to), real age.

- the worker fetches exactly the launched commit from the remote into its cache and runs it; a commit that
  was not pushed fails the run with nothing executed;
- a worker's own age identity (`worker keygen`) decrypts the secrets when the workspace lists its recipient,
  and a worker not listed fails the run with one line naming the fix;
- `--resume` of a lost run, launched from another clone of the workspace, runs only the remaining steps.

No timed assertions: every wait polls for a state with a generous deadline.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.helpers import run_cli, validate_document, wait_for

pytestmark = pytest.mark.team

SECRET = "s3cr3t-GIT-WORKER-NOLOG"
GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def git(cwd: Path, *argv: str) -> str:
    done = subprocess.run(["git", *GIT_USER, *argv], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout.strip()


class Site:
    """A launching host's clone of the workspace (``ws``), its bare origin, and workers elsewhere."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.origin = tmp / "origin.git"
        self.ws = tmp / "launch" / "repo" / "ops"  # the workspace in a folder of its repository
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def cli(self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        return run_cli(*argv, cwd=cwd or self.ws, env=self.env | (env or {}))

    def commit(self, message: str, push: bool = True, repo: Path | None = None) -> str:
        repo = repo or self.ws.parent
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message)
        if push:
            git(repo, "push", "-q")
        return git(repo, "rev-parse", "HEAD")

    def start_worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        home = self.tmp / f"host-{name}"  # its own folder, config and cache: no checkout of the workspace there
        home.mkdir(exist_ok=True)
        out = open(self.tmp / f"worker-{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "polycrate", "worker", "--name", name, "--lost-after", "4", "--heartbeat", "0.5",
             *extra], cwd=home, env=os.environ | self.env | self.host_env(name) | (env or {}),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.workers[name] = proc
        return proc

    def host_env(self, name: str) -> dict[str, str]:
        home = self.tmp / f"host-{name}"
        return {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}

    def worker_log(self, name: str) -> str:
        return (self.tmp / f"worker-{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        proc = self.workers[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.stop(name)

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        from polycrate.history.postgres import connect

        db = connect(self.env["POLYCRATE_BACKEND"])
        try:
            return list(db.execute(query, args).fetchall())
        finally:
            db.close()

    def status(self, run_id: str) -> str | None:
        rows = self.sql("SELECT status FROM runs WHERE workspace = 'gitws' AND id = %s", run_id)
        return rows[0]["status"] if rows else None

    def show(self, run_id: str, cwd: Path | None = None) -> dict[str, Any]:
        shown = self.cli("runs", "show", run_id, "-o", "json", cwd=cwd)
        assert shown.returncode == 0, shown.output
        data: dict[str, Any] = json.loads(shown.stdout)
        return data

    def launch(self, workflow: str, *extra: str, cwd: Path | None = None) -> str:
        launched = self.cli("workflows", "run", workflow, *extra, cwd=cwd)
        assert launched.returncode == 0, launched.output
        return launched.stdout.strip().splitlines()[-1]


def _workspace(site: Site, recipients: tuple[str, ...] = ()) -> None:
    marks = site.marks
    encryption = f"encryption: {{recipients: {json.dumps(list(recipients))}}}" if recipients else ""
    write(site.ws / "workspace.poly", f"""
        name: gitws
        blocks:
          - name: b
        workflows:
          - name: show
            steps:
              - {{name: show, block: b, action: show}}
          - name: show-again
            steps:
              - {{name: show, block: b, action: show}}
          - name: secret
            steps:
              - {{name: secret, block: b, action: secret}}
          - name: three
            steps:
              - {{name: first, block: b, action: first}}
              - {{name: gate, block: b, action: gate}}
              - {{name: last, block: b, action: last}}
          - name: sliced
            steps:
              - {{name: mark, block: b, action: mark, slices: 2}}
        {encryption}
        """)
    write(site.ws / "blocks/b/block.poly", f"""
        name: b
        actions:
          - name: show
            script:
              - echo "version $(cat "$POLYCRATE_WORKSPACE/version.txt") at $POLYCRATE_WORKSPACE"
              - echo ran >> {marks}/show
          - name: secret
            script:
              - echo "the password is {{{{ .workspace.config.password }}}}"
              - echo ran >> {marks}/secret
          - name: first
            script:
              - echo first >> {marks}/first
          - name: gate
            script:
              - echo started >> {marks}/gate-started
              - while [ ! -e {marks}/open ]; do sleep 0.1; done
          - name: last
            script:
              - echo last >> {marks}/last
          - name: mark
            playbook: mark.yml
        """)
    write(site.ws / "blocks/b/mark.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.shell: echo "{{{{ inventory_hostname }}}} {{{{ playbook_dir }}}}" >> {marks}/sliced
        """)
    write(site.ws / "inventory.yml", "all:\n  hosts:\n" + "".join(
        f"    {h}:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        for h in ("node1", "node2")))
    write(site.ws / "version.txt", "one\n")
    write(site.ws.parent / ".gitignore", ".polycrate/\nsecrets.poly\n")


@pytest.fixture
def site(team_env, tmp_path) -> Iterator[Site]:
    site = Site(tmp_path, team_env)
    _workspace(site)
    subprocess.run(["git", "init", "-q", "--bare", str(site.origin)], check=True)
    repo = site.ws.parent
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", str(site.origin))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "workspace")
    git(repo, "push", "-q", "-u", "origin", "main")
    try:
        yield site
    finally:
        site.stop_all()


def test_each_run_runs_its_launched_commit_fetched_from_the_remote_by_a_worker_without_a_checkout(site):
    first = git(site.ws, "rev-parse", "HEAD")
    run_one = site.launch("show")  # queued at commit one: no worker yet
    (site.ws / "version.txt").write_text("two\n")
    second = site.commit("version two")
    run_two = site.launch("show-again")  # queued at commit two
    assert {r["id"]: r["git_commit"] for r in site.sql("SELECT id, git_commit FROM team_runs")} == {
        run_one: first, run_two: second}
    # the launching host's folder goes away: a worker has only the remote
    moved = site.tmp / "launch-moved"
    (site.tmp / "launch").rename(moved)
    site.ws = moved / "repo" / "ops"
    site.start_worker("w1")
    wait_for(lambda: site.status(run_one) == "succeeded" and site.status(run_two) == "succeeded", "both runs succeeded")
    cache = site.tmp / "host-w1" / "cache" / "polycrate" / "worker" / "w1"
    for run_id, commit, version in ((run_one, first, "one"), (run_two, second, "two")):
        logs = site.cli("runs", "logs", run_id)
        assert logs.returncode == 0, logs.output
        line = next(x for x in logs.stdout.splitlines() if x.startswith("version "))
        ran_in = Path(line.split(" at ", 1)[1])
        assert line.startswith(f"version {version} at ") and ran_in.is_relative_to(cache), line
        assert ran_in == next(cache.glob("*/checkouts")) / commit / "ops"
        assert git(ran_in, "rev-parse", "HEAD") == commit
    assert len((site.marks / "show").read_text().splitlines()) == 2

    # a third launch of commit two reuses its checkout; the cache has one mirror for the remote
    again = site.cli("workflows", "run", "show", "--wait")
    assert again.returncode == 0 and f"version two at {ran_in}" in again.stdout, again.output
    assert len(list(cache.glob("*/mirror.git"))) == 1
    assert sorted(p.name for p in next(cache.glob("*/checkouts")).iterdir() if p.is_dir()) == sorted([first, second])


def test_an_unpushed_commit_or_an_unreachable_remote_fails_the_run_with_nothing_executed(site):
    (site.ws / "version.txt").write_text("three\n")
    unpushed = site.commit("not pushed", push=False)
    site.start_worker("w1")
    waited = site.cli("workflows", "run", "show", "--wait")
    assert waited.returncode == 1, waited.output
    assert f"warning: commit {unpushed[:12]} is on no remote branch" in waited.stderr  # said at the launch too
    run_id = waited.stdout.splitlines()[0]
    shown = site.show(run_id)
    assert shown["status"] == "failed" and shown["steps"] == []
    assert f"commit {unpushed[:12]} is not on the remote {site.origin}" in shown["message"], shown["message"]
    assert "push it" in shown["message"] and "nothing executed" in shown["message"]
    assert "\n" not in shown["message"]
    assert not (site.marks / "show").exists()
    assert site.sql("SELECT state, reason FROM team_runs WHERE id = %s", run_id)[0]["state"] == "done"

    # a remote the workspace names (team.remote) that is not there: the fetch fails, one line, nothing runs
    with (site.ws / "workspace.poly").open("a") as fh:
        fh.write(f"team:\n  remote: {site.tmp / 'gone.git'}\n")
    site.commit("a remote that is not there")
    waited = site.cli("workflows", "run", "show", "--wait")
    assert waited.returncode == 1, waited.output
    shown = site.show(waited.stdout.splitlines()[0])
    assert shown["message"].startswith(f"refused: cannot fetch from {site.tmp / 'gone.git'}: "), shown["message"]
    assert shown["steps"] == [] and not (site.marks / "show").exists()


def test_a_worker_decrypts_secrets_with_its_own_identity_only_when_the_workspace_lists_it(site):
    made = site.cli("worker", "keygen", "--name", "good", env=site.host_env("good"))
    assert made.returncode == 0, made.output
    good = made.stdout.strip()
    key = site.tmp / "host-good" / "config" / "polycrate" / "worker" / "good" / "age-identity.txt"
    assert good.startswith("age1") and f"# public key: {good}" in key.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "encryption.recipients" in made.stderr
    before = key.read_bytes()
    twice = site.cli("worker", "keygen", "--name", "good", env=site.host_env("good"))
    assert twice.returncode != 0 and "refusing to overwrite" in twice.stderr and key.read_bytes() == before
    bad = site.cli("-o", "json", "worker", "keygen", "--name", "bad", env=site.host_env("bad"))
    assert bad.returncode == 0, bad.output
    recipient_bad = validate_document(json.loads(bad.stdout))["recipient"]
    operator = site.cli("workspace", "keygen", "--identity", str(site.tmp / "operator.txt"))
    assert operator.returncode == 0, operator.output

    _workspace(site, recipients=(good,))  # the good worker's recipient (the operator's own is added by encrypt)
    write(site.ws / "secrets.poly", f"config:\n  password: {SECRET}\n")
    encrypted = site.cli("workspace", "encrypt", "--identity", str(site.tmp / "operator.txt"))
    assert encrypted.returncode == 0, encrypted.output
    assert (site.ws / "secrets.poly.age").is_file() and not (site.ws / "secrets.poly").exists()
    site.commit("secrets for the good worker")

    site.start_worker("good", "--queue", "good")
    site.start_worker("bad", "--queue", "bad")
    ok = site.cli("workflows", "run", "secret", "--queue", "good", "--wait")
    assert ok.returncode == 0, ok.output + json.dumps(site.show(ok.stdout.splitlines()[0]), indent=1)
    assert "the password is ********" in ok.stdout
    ok_id = ok.stdout.splitlines()[0]
    assert site.show(ok_id)["status"] == "succeeded"

    refused = site.cli("workflows", "run", "secret", "--queue", "bad", "--wait")
    assert refused.returncode == 1, refused.output
    shown = site.show(refused.stdout.splitlines()[0])
    assert shown["status"] == "failed" and shown["steps"] == [], shown
    assert (f"secrets.poly.age is not encrypted to this worker's age identity ({recipient_bad}" in shown["message"]
            and "add that recipient to encryption.recipients in workspace.poly" in shown["message"]
            and "nothing executed" in shown["message"]), shown["message"]
    assert len((site.marks / "secret").read_text().splitlines()) == 1  # the good run's only
    everything = (ok.output + refused.output + json.dumps(site.show(ok_id)) + json.dumps(shown)
                  + site.cli("runs", "logs", ok_id).output + site.worker_log("good") + site.worker_log("bad"))
    assert SECRET not in everything
    assert f"secrets decrypt with its identity {key} (recipient {good})" in site.worker_log("good")


def test_resume_of_a_lost_run_from_another_clone_runs_only_the_remaining_steps(site):
    doomed = site.start_worker("w1")
    lost = site.launch("three")
    wait_for(lambda: (site.marks / "gate-started").exists(), "the gate step started")
    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its run's process: nobody records an end
    doomed.wait()
    site.start_worker("w2")
    wait_for(lambda: site.status(lost) == "lost", "the run is marked lost")
    wait_for(lambda: site.sql("SELECT status FROM procrastinate_jobs WHERE args->>'run_id' = %s", lost)[0]["status"]
             == "failed", "the lost run's job is finished (its workflow's lock is free)")

    # an operator elsewhere: another clone of the workspace repository, another folder
    other = site.tmp / "other-host"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(site.origin), str(other)], check=True, capture_output=True)
    (site.marks / "open").touch()
    resumed = site.cli("workflows", "run", "three", "--resume", "--wait", cwd=other / "ops")
    assert resumed.returncode == 0, resumed.output
    assert f"it resumes run {lost}" in resumed.stderr
    new = resumed.stdout.splitlines()[0]
    shown = site.show(new, cwd=other / "ops")
    assert shown["status"] == "succeeded" and shown["resumed_from"] == lost
    assert [(s["name"], s["status"]) for s in shown["steps"]][1:] == [("gate", "succeeded"), ("last", "succeeded")]
    assert shown["steps"][0]["name"] == "first" and shown["steps"][0]["status"] != "succeeded"
    assert len((site.marks / "first").read_text().splitlines()) == 1  # done before: not run again
    assert len((site.marks / "gate-started").read_text().splitlines()) == 2  # the lost run's, then the resumed one
    assert len((site.marks / "last").read_text().splitlines()) == 1
    old = site.show(lost)
    assert old["status"] == "lost" and any(f"resumed by run {new}" in n["text"] for n in old["notices"]), old
    assert site.sql("SELECT worker FROM team_runs WHERE id = %s", new)[0]["worker"] == "w2"

    nothing = site.cli("workflows", "run", "three", "--resume", cwd=other / "ops")
    assert nothing.returncode != 0 and "nothing to resume" in nothing.stderr and "nothing was queued" in nothing.stderr


def test_the_remote_a_launch_records_for_its_workers(tmp_path):
    """workspace_source, on real repositories: team.remote, else the upstream's remote, else the only one."""
    from polycrate.errors import PolycrateError
    from polycrate.team.source import WorkspaceSource, shown_url, workspace_source

    repo = tmp_path / "repo"
    ws = repo / "infra" / "ws"
    write(ws / "workspace.poly", "name: w\n")
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "w")
    assert workspace_source(ws) is None  # no remote: run from the same folder on the worker's host
    git(repo, "remote", "add", "origin", "https://git.example.invalid/ops.git")
    assert workspace_source(ws) == WorkspaceSource("https://git.example.invalid/ops.git", "infra/ws")
    git(repo, "remote", "add", "backup", str(tmp_path / "backup.git"))
    with pytest.raises(PolycrateError, match=r"2 remotes \(backup, origin\) and its branch has no upstream"):
        workspace_source(ws)
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "backup.git"))
    git(repo, "push", "-q", "-u", "backup", "main")
    assert workspace_source(ws) == WorkspaceSource(str(tmp_path / "backup.git"), "infra/ws")  # the upstream's
    write(ws / "workspace.poly", "name: w\nteam: {remote: origin}\n")  # a remote's name: its URL
    assert workspace_source(ws).remote == "https://git.example.invalid/ops.git"
    write(ws / "workspace.poly", "name: w\nteam: {remote: ../../../backup.git}\n")  # a path: made absolute
    assert workspace_source(ws).remote == str(tmp_path / "backup.git")
    assert shown_url("https://bot:t0ken@git.example.invalid/ops.git") == "https://bot:***@git.example.invalid/ops.git"
    git(repo, "remote", "set-url", "origin", "https://bot:t0ken@git.example.invalid:8443/ops.git")
    write(ws / "workspace.poly", "name: w\nteam: {remote: origin}\n")
    assert workspace_source(ws).remote == "https://bot@git.example.invalid:8443/ops.git"  # the token stays here


def test_a_worker_s_cache_keeps_the_recent_checkouts_and_those_in_use(tmp_path):
    """checkout() on real repositories: one mirror, a checkout per commit, reused; the oldest unused pruned."""
    from polycrate.team.source import COMPLETE, SourceUnavailable, WorkspaceSource, checkout

    origin, repo, cache = tmp_path / "origin.git", tmp_path / "repo", tmp_path / "cache"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "remote", "add", "origin", str(origin))
    commits = []
    for n in range(5):
        write(repo / "ws" / "workspace.poly", f"name: w{n}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"c{n}")
        git(repo, "push", "-q", "-u", "origin", "main")
        commits.append(git(repo, "rev-parse", "HEAD"))
    source = WorkspaceSource(str(origin), "ws")
    in_use = checkout(cache, source, commits[0], keep=2)  # a run holds it while the others come and go
    assert (in_use.root / "workspace.poly").read_text() == "name: w0\n"
    for commit in commits[1:]:
        got = checkout(cache, source, commit, keep=2)
        assert git(got.root, "rev-parse", "HEAD") == commit
        got.release()
    trees = next(cache.glob("*/checkouts"))
    assert sorted(p.name for p in trees.iterdir() if (p / COMPLETE).is_file()) == sorted([commits[0], *commits[3:]])
    in_use.release()
    again = checkout(cache, source, commits[4], keep=2)  # reused as it is; the one released is pruned now
    again.release()
    assert sorted(p.name for p in trees.iterdir() if (p / COMPLETE).is_file()) == sorted(commits[3:])
    with pytest.raises(SourceUnavailable, match=r"is not on the remote .*push it"):
        checkout(cache, source, "0" * 40)


def test_the_slices_of_a_step_run_the_launched_commit_from_their_workers_caches(site):
    site.start_worker("w1")
    site.start_worker("w2")
    waited = site.cli("workflows", "run", "sliced", "--wait")
    assert waited.returncode == 0, waited.output
    lines = sorted(line.split() for line in (site.marks / "sliced").read_text().splitlines())
    commit = git(site.ws, "rev-parse", "HEAD")
    assert [host for host, _ in lines] == ["node1", "node2"]  # each host once, each in a slice of its own
    for _, playbook_dir in lines:  # in a worker's checkout of the launched commit, never the launching folder
        where = Path(playbook_dir)
        assert where.parts[-3:] == ("ops", "blocks", "b") and where.parents[1].parent.name == commit, where
        assert where.is_relative_to(site.tmp / "host-w1" / "cache") or where.is_relative_to(site.tmp / "host-w2" / "cache")
