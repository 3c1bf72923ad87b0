#!/usr/bin/python
# -*- coding: utf-8 -*-
# linux-maintenance block: the package half of the update's rollback.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: package_rollback
short_description: Put Debian packages back at the versions recorded before an update
description:
  - Compares the packages installed now with a record taken before the update (C(dpkg-query -W) lines of
    package, version and status) and puts them back, as far as the configured apt repositories allow.
  - "Changed packages (installed before, now at another version or gone): every previous version a
    repository still offers is installed in one C(apt-get install --allow-downgrades) transaction, one by
    one when that transaction fails, so one package that cannot go back does not hold the others. Versions
    no repository offers any more are reported in RV(missing)."
  - "New packages (installed now, not before): removed (purged when nothing of them was on the host before),
    but only when apt would remove nothing else with them; a new package that a package still at its new
    version depends on is kept and reported in RV(kept) with the reason."
  - "Never stops half-way: every step is tried and the module reports what is true afterwards. It fails only
    when the record cannot be read; whether a partial rollback is good enough is the play's decision
    (RV(not_back), RV(kept)). RV(summary) holds the two sentences of the update's rollback message."
  - Needs C(python3-apt) on the host (Ansible's apt module needs it too); without it C(apt-cache madison) is used.
options:
  before:
    description: The package record taken before the update (C(dpkg-query -W -f='${binary:Package}\t${Version}\t${db:Status-Abbrev}\n')).
    type: path
    required: true
notes:
  - In check mode nothing is installed or removed; the result says what would be (RV(changed_packages), RV(missing),
    RV(would_remove), RV(kept)).
author: linux-maintenance block
"""

EXAMPLES = r"""
- name: Record the installed version of every package
  ansible.builtin.shell: dpkg-query -W -f='${binary:Package}\t${Version}\t${db:Status-Abbrev}\n' > /var/backups/packages-before.tsv

- name: Put the packages back at their recorded versions; remove the packages the upgrade brought in
  package_rollback:
    before: /var/backups/packages-before.tsv
  register: rollback

- name: Say what could not go back
  ansible.builtin.debug:
    msg: "{{ rollback.summary.packages }}; {{ rollback.summary.new }}"
"""

RETURN = r"""
changed_packages:
  description: Packages installed before whose version changed (or that are gone), with the versions before and after the upgrade.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "acme-app", "before": "1.1.0", "after_upgrade": "1.2.0"}]
back:
  description: Names of the changed packages now back at their recorded versions.
  returned: always
  type: list
  elements: str
not_back:
  description: Changed packages not at their recorded version now (name, before, now).
  returned: always
  type: list
  elements: dict
missing:
  description: "Recorded versions no configured repository offers any more (C(name version))."
  returned: always
  type: list
  elements: str
failed:
  description: Packages whose install failed, with apt's last lines.
  returned: always
  type: list
  elements: dict
new:
  description: Packages installed now that were not installed before (name, version).
  returned: always
  type: list
  elements: dict
removed:
  description: New packages removed (C(name version)).
  returned: always
  type: list
  elements: str
would_remove:
  description: In check mode, the new packages that would be removed.
  returned: check mode
  type: list
  elements: str
kept:
  description: New packages kept, with the reason (what still needs them, or apt's error).
  returned: always
  type: list
  elements: dict
summary:
  description: The two sentences of the rollback message (C(packages), C(new)).
  returned: always
  type: dict
  sample: {"packages": "packages: 1 of 1 back at their previous versions (acme-app 1.2.0 -> 1.1.0)",
           "new": "newly installed packages removed: acme-app-extras 1.0.0"}
"""

import os
import re
import subprocess

from ansible.module_utils.basic import AnsibleModule

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
APT_OPTS = ["-y", "-q", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]


def installed() -> dict[str, tuple[str, str]]:
    out = subprocess.run(["dpkg-query", "-W", "-f=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"],
                         capture_output=True, text=True, check=True).stdout
    return read_record(out)


def read_record(text: str) -> dict[str, tuple[str, str]]:
    """package -> (version, status abbreviation); architecture qualifiers of the native arch are dropped."""
    record = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0]:
            record[parts[0]] = (parts[1], parts[2].strip())
    return record


def is_installed(entry: tuple[str, str] | None) -> bool:
    return entry is not None and entry[1].startswith("ii")


def tail(text: str, n: int = 300) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:])[-n:]


def apt_get(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", *APT_OPTS, *args], capture_output=True, text=True, env=APT_ENV)


def downloadable(wanted: dict[str, str]) -> set[str]:
    """The packages whose wanted version some configured repository offers."""
    try:
        import apt  # python3-apt
    except ImportError:  # fall back to apt-cache: a version with a download source is listed by madison
        found = set()
        for name, version in wanted.items():
            res = subprocess.run(["apt-cache", "madison", name], capture_output=True, text=True)
            versions = {cols[1].strip() for cols in (line.split("|") for line in res.stdout.splitlines())
                        if len(cols) >= 3}
            if version in versions:
                found.add(name)
        return found
    cache = apt.Cache()
    found = set()
    for name, version in wanted.items():
        pkg = cache.get(name)
        candidate = pkg.versions.get(version) if pkg is not None else None
        if candidate is not None and candidate.downloadable:
            found.add(name)
    return found


def removal_set(names: list[str]) -> tuple[bool, set[str], str]:
    """What apt would remove to remove `names` (simulated): (ok, packages, error)."""
    res = apt_get("-s", "remove", *names)
    if res.returncode != 0:
        return False, set(), tail(res.stdout + res.stderr)
    return True, set(re.findall(r"^(?:Remv|Purg) (\S+)", res.stdout, re.M)), ""


def summary(r: dict) -> dict:
    """The two sentences of the rollback message: packages back, new packages removed."""
    if not r["changed"]:
        packages = "packages: none had changed"
    else:
        back = [c for c in r["changed"] if c["name"] in r["back"]]
        packages = f"packages: {len(back)} of {len(r['changed'])} back at their previous versions"
        if back:
            packages += " (" + ", ".join(f"{c['name']} {c['after_upgrade'] or '(removed)'} -> {c['before']}"
                                         for c in back) + ")"
        told = set()
        for m in r["missing"]:
            packages += f", `{m}` not in the repository"
            told.add(m.split()[0])
        for f in r["failed"]:
            packages += f", `{f['name']}` failed: {f['error']}"
            told.add(f["name"].split()[0])
        for n in r["not_back"]:
            if n["name"] not in told:
                packages += f", {n['name']} is at {n['now'] or '(not installed)'}, not {n['before']}"
    if not r["new"]:
        new = "newly installed packages removed: none were installed"
    else:
        new = "newly installed packages removed: " + (", ".join(r["removed"]) or "none")
        new += "".join(f", `{k['name']}` kept ({k['reason']})" for k in r["kept"])
    return {"packages": packages, "new": new}


def rollback(before: dict[str, tuple[str, str]], check_mode: bool = False) -> dict:
    """Put the packages back (see DOCUMENTATION); in check mode only say what would be done."""
    after_upgrade = installed()

    changed = {n: v for n, (v, st) in before.items()
               if st.startswith("ii") and (not is_installed(after_upgrade.get(n)) or after_upgrade[n][0] != v)}
    new = sorted(n for n, entry in after_upgrade.items() if is_installed(entry) and not is_installed(before.get(n)))
    result: dict = {
        "changed": [{"name": n, "before": v,
                     "after_upgrade": after_upgrade[n][0] if is_installed(after_upgrade.get(n)) else None}
                    for n, v in sorted(changed.items())],
        "missing": [], "failed": [], "new": [{"name": n, "version": after_upgrade[n][0]} for n in new],
        "removed": [], "kept": [],
    }

    # 1. the previous versions back, those the repositories still have
    try:
        available = downloadable(changed)
    except Exception as exc:  # the apt cache is unreadable: try them all, apt will say
        result["failed"].append({"name": "(apt cache)", "error": str(exc)[:300]})
        available = set(changed)
    result["missing"] = [f"{n} {v}" for n, v in sorted(changed.items()) if n not in available]
    specs = [f"{n}={changed[n]}" for n in sorted(available)]
    if specs and not check_mode:
        res = apt_get("install", "--allow-downgrades", *specs)
        if res.returncode != 0:  # one by one: one package that cannot go back must not hold the others
            for spec in specs:
                one = apt_get("install", "--allow-downgrades", spec)
                if one.returncode != 0:
                    result["failed"].append({"name": spec.replace("=", " "), "error": tail(one.stdout + one.stderr)})

    # 2. the packages the upgrade brought in, unless something still at its new version needs them
    purge = {n for n in new if before.get(n) is None}  # nothing of it was here: purge its config too
    todo: list[list[str]] = []
    if new:
        ok, would, error = removal_set(new)
        if ok and would <= set(new):
            todo = [new]
        else:  # one by one, each only when its removal takes nothing else along
            for n in new:
                ok1, would1, error1 = removal_set([n])
                if ok1 and would1 <= set(new):
                    todo.append([n])
                else:
                    others = sorted(would1 - set(new))
                    reason = ("needed by " + ", ".join(others)) if others else (error1 or "apt refused")
                    result["kept"].append({"name": n, "reason": reason})
    if check_mode:
        result["would_remove"] = [f"{n} {after_upgrade[n][0]}" for names in todo for n in names]
        result["back"] = []
        result["not_back"] = [{"name": c["name"], "before": c["before"], "now": c["after_upgrade"]}
                              for c in result["changed"]]
        result["summary"] = summary(result)
        return result
    for names in todo:
        purged = [n for n in names if n in purge]
        plain = [n for n in names if n not in purge]
        for verb, group in (("purge", purged), ("remove", plain)):
            if group:
                res = apt_get(verb, *group)
                if res.returncode != 0:
                    result["kept"].extend({"name": n, "reason": tail(res.stdout + res.stderr)} for n in group)

    # 3. what is true now
    now = installed()
    result["back"] = [c["name"] for c in result["changed"] if is_installed(now.get(c["name"]))
                      and now[c["name"]][0] == c["before"]]
    result["not_back"] = [{"name": c["name"], "before": c["before"],
                           "now": now[c["name"]][0] if is_installed(now.get(c["name"])) else None}
                          for c in result["changed"] if c["name"] not in result["back"]]
    result["removed"] = [f"{e['name']} {e['version']}" for e in result["new"] if not is_installed(now.get(e["name"]))]
    result["kept"] = [k for k in result["kept"] if is_installed(now.get(k["name"]))]
    result["summary"] = summary(result)
    return result


def run_module() -> None:
    module = AnsibleModule(argument_spec=dict(before=dict(type="path", required=True)), supports_check_mode=True)
    try:
        with open(module.params["before"]) as f:
            before = read_record(f.read())
    except OSError as exc:
        module.fail_json(msg=f"cannot read the package record {module.params['before']}: {exc.strerror}")
    if not before:
        module.fail_json(msg=f"the package record {module.params['before']} lists no packages")
    result = rollback(before, check_mode=module.check_mode)
    # `changed` is Ansible's word for "this task changed the host": the changed packages go out as changed_packages
    result["changed_packages"] = result.pop("changed")
    did = bool(result["back"] or result["removed"] or result["failed"])
    module.exit_json(changed=did, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
