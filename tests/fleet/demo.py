"""The README's demo: the article's nightly workflow, for real, against a local self-contained test host.

`make demo` brings up the article's two hosts as Debian hosts that boot systemd as PID 1 in podman
(tests/fleet/systemdhost.py; sshd published on loopback addresses; the first run builds and caches
their image from polycrate's base image): db01 with PostgreSQL (postgresql.service) and the backups,
app01 with acme-app 1.0.0 (acme-app.service) from a local apt repository, using the database on db01
over TCP; and an S3 server on loopback. It shows each host's `systemctl is-system-running` and its
units; the block restarts acme-app with ansible.builtin.systemd. It copies examples/acme-corp-automation to .demo/, publishes acme-app
1.1.0, and runs `polycrate workflows run nightly-maintenance`: backup -> update -> verify; then the weekly
`backup-drill` (restore-test: the latest backup restored into a scratch database on db01 and compared
with its manifest table by table), whose table it prints.

`make demo-rollback` publishes a broken acme-app 1.2.0 whose migration empties a table and whose
health check answers 500: the update on app01 fails, its rollback restores the database on db01 and
reinstalls 1.1.0, and the workflow stops with the rollback message, which states each outcome.

Both leave .demo/acme-corp-automation behind (with its run history: `polycrate -w .demo/acme-corp-automation
runs list`); the hosts stop at the end. Running them again starts from scratch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / ".demo"


def say(text: str) -> None:
    print(f"\n\033[1mdemo: {text}\033[0m" if sys.stdout.isatty() else f"\ndemo: {text}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--rollback", action="store_true", help="publish a broken update and watch it roll back")
    args = parser.parse_args(argv)

    from tests.fleet.nightly import NightlyEnv

    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    polycrate = [sys.executable, "-m", "polycrate"]
    say("the actions run in the container (polycrate's default runtime): the base image, made or imported once")
    os.environ.pop("POLYCRATE_RUNTIME", None)  # the default, whatever the caller's environment says
    if subprocess.call([*polycrate, "toolchain", "build", "--base"], cwd=REPO) != 0:
        say("could not make the base image: see above (or run the demo's workflow yourself with --local)")
        return 1
    from tests.fleet.systemdhost import build_image

    say("the test hosts' image: systemd, sshd, PostgreSQL and acme-app on the base image (first run: built "
        "and cached, about 2 minutes)")
    build_image(log=lambda text: say(text))
    say("starting the test hosts db01 and app01 (systemd as PID 1, in podman) and S3 on loopback")
    with NightlyEnv(DEMO) as env:
        for host in (env.db, env.app):
            say(f"{host.name} (up in {host.start_seconds:.1f} s): {host_state(host)}")
        env.psql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        env.psql("INSERT INTO items SELECT g, 'order-' || g FROM generate_series(1, 1000) g")
        rows = env.psql("SELECT count(*) FROM items")
        say(f"db01 ({env.db.address}:{env.db.ssh_port}) has the database acme_app with {rows} rows; "
            f"app01 ({env.app.address}:{env.app.ssh_port}) runs acme-app {env.app.installed_version()}, "
            f"which uses the database at {env.db.peer_address}:{env.db.pg_port}; workspace {env.root}")
        app_pid = main_pid(env.app)
        env.app.publish("1.1.0")
        if args.rollback:
            env.apt_install("acme-app=1.1.0")
            env.app.publish("1.2.0", broken="health")
            say("published a BROKEN acme-app 1.2.0 (its migration empties `items`, /health answers 500)")
        else:
            say("published acme-app 1.1.0 in the host's apt repository")
        say("$ polycrate workflows run nightly-maintenance")
        code = subprocess.call([*polycrate, "workflows", "run", "nightly-maintenance"], cwd=env.root)
        status, body = env.health()
        after = env.psql("SELECT count(*) FROM items")
        say(f"exit status {code}; acme-app {env.app.installed_version()}, health {status} {body.strip()}; "
            f"items: {after} rows (before: {rows})")
        new_pid = main_pid(env.app)
        say(f"app01: {host_state(env.app)}; acme-app.service's main PID {app_pid} -> {new_pid} "
            f"({'restarted' if new_pid != app_pid else 'NOT restarted'} through ansible.builtin.systemd)")
        say("objects in s3://acme-backups-db/postgres/: " + ", ".join(sorted(env.remote_objects())))
        say("the weekly restore drill, run now: $ polycrate workflows run backup-drill")
        drill_code = subprocess.call([*polycrate, "workflows", "run", "backup-drill"], cwd=env.root)
        drill = json.loads(env.db.exec("cat /var/backups/acme-db/drills/last.json").stdout or "{}")
        say("the drill, as recorded on db01 in /var/backups/acme-db/drills/last.json:\n  "
            + "\n  ".join(drill.get("report", ["(no record)"])))
        subprocess.call([*polycrate, "runs", "list"], cwd=env.root)
    expected = 1 if args.rollback else 0
    ok = (code == expected and after == rows and drill_code == 0 and drill.get("passed") is True
          and new_pid != app_pid)
    say(("as expected: " if ok else "NOT as expected: ")
        + ("the update failed and was rolled back" if args.rollback else "backup, update and verify succeeded")
        + (", the restore drill passed" if drill.get("passed") else ", the restore drill did NOT pass"))
    return 0 if ok else 1


def host_state(host) -> str:
    """`systemctl is-system-running` and the units of the article, as systemd says them."""
    pid1 = host.exec(["ps", "-p", "1", "-o", "comm="]).stdout.strip()
    units = ", ".join(f"{unit} {host.unit_state(unit)}"
                      for unit in ("ssh.service", "postgresql.service", "acme-app.service"))
    return f"PID 1 {pid1}, systemctl is-system-running: {host.system_state()}; {units}"


def main_pid(host) -> str:
    return host.exec(["systemctl", "show", "-p", "MainPID", "--value", "acme-app.service"]).stdout.strip()


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main(sys.argv[1:]))
