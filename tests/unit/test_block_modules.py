"""The linux-maintenance block's Ansible modules (library/), tested the way Ansible tests modules:
module arguments through ``ansible.module_utils.testing.patch_module_args``, ``exit_json`` and
``fail_json`` patched to raise, the module's ``main()`` called in-process. Also: ``ansible-doc``
renders each module, and every option of its argument_spec is the one its DOCUMENTATION describes.
The package rollback runs in check mode against this machine's real dpkg and apt (it installs and
removes nothing there); the PostgreSQL-backed runs are in tests/integration/test_block_modules_pg.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

ansible_basic = pytest.importorskip("ansible.module_utils.basic")
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from tests.block_library import BLOCK, LIBRARY, MODULE_UTILS, load, shared  # noqa: E402

MODULES = ("pg_archive", "pg_restore_drill", "pg_restore_archive", "package_rollback")


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


@pytest.fixture(autouse=True)
def module_exits():
    # the modules clean up when they are stopped: their signal handlers must not outlive the test
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        with mock.patch.multiple(ansible_basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json):
            yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def argument_spec(module) -> tuple[dict, bool]:
    """The argument_spec and supports_check_mode the module hands AnsibleModule."""
    seen = {}

    class Stop(Exception):
        pass

    def capture(**kwargs):
        seen.update(kwargs)
        raise Stop

    with mock.patch.object(module, "AnsibleModule", side_effect=capture), pytest.raises(Stop):
        module.main()
    return seen["argument_spec"], seen.get("supports_check_mode", False)


# --- documentation ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders_the_module(name):
    doc = Path(sys.executable).parent / "ansible-doc"
    res = subprocess.run([str(doc), "-M", str(LIBRARY), name], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PAGER": "cat"})
    assert res.returncode == 0, res.stderr
    assert f"> MODULE {name} " in res.stdout
    assert "OPTIONS" in res.stdout and "EXAMPLES:" in res.stdout and "RETURN VALUES:" in res.stdout
    assert "ERROR" not in res.stderr


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_are_the_argument_spec(name):
    module = load(name)
    spec, check_mode = argument_spec(module)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    assert set(doc["options"]) == set(spec)
    for option, rule in spec.items():
        documented = doc["options"][option]
        assert documented["type"] == rule.get("type", "str"), option
        assert documented.get("required", False) == rule.get("required", False), option
        assert documented.get("default") == rule.get("default"), option
        assert documented.get("choices") == rule.get("choices"), option
        assert documented.get("elements") == rule.get("elements"), option
    assert check_mode  # each says what check mode does in its notes
    assert "check mode" in " ".join(doc["notes"]).lower()
    yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_required_options_missing_fail_with_their_names(name):
    module = load(name)
    spec, _ = argument_spec(module)
    required = sorted(k for k, v in spec.items() if v.get("required"))
    with patch_module_args({}), pytest.raises(AnsibleFailJson) as failed:
        module.main()
    msg = failed.value.args[0]["msg"]
    assert "missing required arguments" in msg and all(r in msg for r in required)


def test_an_unknown_option_is_refused():
    module = load("package_rollback")
    with patch_module_args({"before": "/nonexistent", "befor": "x"}), pytest.raises(AnsibleFailJson) as failed:
        module.main()
    assert "befor" in failed.value.args[0]["msg"]


# --- package_rollback ------------------------------------------------------------------------

def test_package_rollback_fails_naming_an_unreadable_record(tmp_path):
    module = load("package_rollback")
    with patch_module_args({"before": str(tmp_path / "missing.tsv")}), pytest.raises(AnsibleFailJson) as failed:
        module.main()
    assert str(tmp_path / "missing.tsv") in failed.value.args[0]["msg"]
    (tmp_path / "empty.tsv").write_text("")
    with patch_module_args({"before": str(tmp_path / "empty.tsv")}), pytest.raises(AnsibleFailJson) as failed:
        module.main()
    assert "lists no packages" in failed.value.args[0]["msg"]


def test_package_rollback_in_check_mode_says_what_it_would_do_and_changes_nothing(tmp_path):
    """This machine's own packages: a record in which `tar` had a version no repository has, and
    in which `zstd` was not installed yet. Check mode reports both and touches nothing."""
    if not Path("/usr/bin/dpkg-query").exists() or not Path("/usr/bin/apt-get").exists():
        pytest.skip("needs dpkg and apt")
    now = subprocess.run(["dpkg-query", "-W", "-f=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"],
                         capture_output=True, text=True, check=True).stdout
    lines = now.splitlines()
    assert any(line.startswith("zstd\t") for line in lines) and any(line.startswith("tar\t") for line in lines)
    record = [line for line in lines if not line.startswith("zstd\t")]
    record = [("tar\t0.0-never-released\tii " if line.startswith("tar\t") else line) for line in record]
    path = tmp_path / "before.tsv"
    path.write_text("\n".join(record) + "\n")
    module = load("package_rollback")
    with patch_module_args({"before": str(path), "_ansible_check_mode": True}), pytest.raises(AnsibleExitJson) as done:
        module.main()
    result = done.value.args[0]
    tar_now = next(line.split("\t")[1] for line in lines if line.startswith("tar\t"))
    assert {"name": "tar", "before": "0.0-never-released", "after_upgrade": tar_now} in result["changed_packages"]
    assert "tar 0.0-never-released" in result["missing"]
    assert [n["name"] for n in result["new"]] == ["zstd"]
    # zstd goes, unless something installed needs it: then it is kept with the reason
    assert result["would_remove"] == [f"zstd {next(line.split(chr(9))[1] for line in lines if line.startswith('zstd'))}"] \
        or (result["kept"] and result["kept"][0]["name"] == "zstd" and result["kept"][0]["reason"])
    assert result["back"] == [] and result["removed"] == []
    assert "`tar 0.0-never-released` not in the repository" in result["summary"]["packages"]
    # nothing changed on the machine
    assert subprocess.run(["dpkg-query", "-W", "-f=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"],
                          capture_output=True, text=True, check=True).stdout == now


def test_package_rollback_summary_states_each_outcome():
    module = load("package_rollback")
    r = {"changed": [{"name": "acme-app", "before": "1.1.0", "after_upgrade": "1.2.0"},
                     {"name": "libfoo", "before": "2", "after_upgrade": "3"}],
         "back": ["acme-app"], "missing": ["libfoo 2"], "failed": [], "not_back": [{"name": "libfoo", "before": "2", "now": "3"}],
         "new": [{"name": "acme-app-extras", "version": "1.0.0"}, {"name": "libbar", "version": "1"}],
         "removed": ["acme-app-extras 1.0.0"], "kept": [{"name": "libbar", "reason": "needed by libfoo"}]}
    assert module.summary(r) == {
        "packages": "packages: 1 of 2 back at their previous versions (acme-app 1.2.0 -> 1.1.0), "
                    "`libfoo 2` not in the repository",
        "new": "newly installed packages removed: acme-app-extras 1.0.0, `libbar` kept (needed by libfoo)"}


# --- pg_restore_drill ------------------------------------------------------------------------

def test_drill_compares_table_by_table_and_names_each_difference():
    drill = load("pg_restore_drill")
    manifest = {"public.a": {"rows": 3, "checksum": "x"}, "public.b": {"rows": 5, "checksum": "y"},
                "public.c": {"rows": 1, "checksum": "z"}, "public.d": {"rows": 2, "checksum": "w"}}
    restored = {"public.a": {"rows": 3, "checksum": "x"}, "public.b": {"rows": 0, "checksum": "e"},
                "public.d": {"rows": 2, "checksum": "W"}, "public.e": {"rows": 7, "checksum": "q"}}
    tables, differences = drill.compare(manifest, restored)
    assert [(t["table"], t["result"]) for t in tables] == [
        ("public.a", "ok"), ("public.b", "rows differ"), ("public.c", "missing"), ("public.d", "content differs"),
        ("public.e", "not in the manifest")]
    assert differences == [
        "table public.b: 0 rows restored, 5 in the manifest",
        "table public.c (1 rows in the manifest) is missing from the restore",
        "table public.d: same row count (2) but its content checksum differs (W, manifest w)",
        "table public.e is in the restore but not in the manifest"]
    assert drill.compare(manifest, manifest) == (
        [{"table": n, "manifest_rows": v["rows"], "restored_rows": v["rows"], "checksum": "same", "result": "ok"}
         for n, v in sorted(manifest.items())], [])


def test_drill_scratch_names_fit_postgres_and_do_not_repeat():
    drill = load("pg_restore_drill")
    names = {drill.scratch_name("acme_app", 1796515200.0) for _ in range(200)}
    assert len(names) == 200
    assert all(n.startswith("drill_acme_app_20261206T000000_") for n in names)
    long = drill.scratch_name("a-very-long-Database-name-" * 5, 1796515200.0)
    assert len(long.encode()) <= 63 and long.startswith("drill_a_very_long_database_name_")
    assert "_20261206T000000_" in long


def test_drill_report_is_a_table():
    drill = load("pg_restore_drill")
    tables, differences = drill.compare({"public.items": {"rows": 50, "checksum": "a"}},
                                        {"public.items": {"rows": 0, "checksum": "b"}})
    lines = drill.render({"archive": "acme_app-20261206T020000Z.tar.gz", "scratch_database": "drill_x",
                          "passed": False, "duration_seconds": 1.25, "tables": tables, "differences": differences})
    assert lines == [
        "restore drill of acme_app-20261206T020000Z.tar.gz into drill_x: FAIL (1.2 s)",
        "table         rows (manifest)  rows (restored)  checksum  result",
        "public.items  50               0                differs   rows differ",
        "differs: table public.items: 0 rows restored, 50 in the manifest"]


def test_drill_of_a_missing_archive_records_a_failure(tmp_path):
    drill = load("pg_restore_drill")
    args = {"archive": str(tmp_path / "latest.tar.gz"), "database": "acme_app", "table_stats_sql": "SELECT 1",
            "record_dir": str(tmp_path / "drills"), "metrics_file": str(tmp_path / "metrics" / "drill.prom")}
    with patch_module_args(args), pytest.raises(AnsibleExitJson) as done:
        drill.main()
    result = done.value.args[0]
    assert result["passed"] is False and result["changed"] is True
    assert result["differences"] == [f"no archive at {tmp_path / 'latest.tar.gz'}: run the backup action first"]
    assert json.loads((tmp_path / "drills" / "last.json").read_text())["passed"] is False
    assert not (tmp_path / "drills" / "last-pass.json").exists()
    prom = (tmp_path / "metrics" / "drill.prom").read_text()
    assert 'linux_maintenance_restore_drill_last_passed{database="acme_app"} 0' in prom
    assert 'linux_maintenance_restore_drill_last_success_timestamp_seconds{database="acme_app"} 0' in prom


def test_the_drill_computes_the_checksum_the_manifest_names():
    """The block's SQL names its checksum on its first line; a manifest without a name holds the first
    checksum (md5 of each row's text), for which the drill uses its own copy of that SQL; an unknown name
    fails with a sentence naming both."""
    drill_mod = load("pg_restore_drill")
    sql = (BLOCK / "files" / "table_stats.sql").read_text()
    assert drill_mod.checksum_kind(sql) == "row-hash/2"
    assert drill_mod.checksum_kind(drill_mod.LEGACY_TABLE_STATS_SQL) == "md5-row-text/1"
    assert "md5(ROW(r.*)::text)" in drill_mod.LEGACY_TABLE_STATS_SQL and "'pg\\_%'" in drill_mod.LEGACY_TABLE_STATS_SQL

    drill = drill_mod.Drill.__new__(drill_mod.Drill)
    drill.p = {"table_stats_sql": sql}
    assert drill.stats_sql({"table_checksum": "row-hash/2", "tables": {}}) is sql
    assert drill.stats_sql({"tables": {}}) is drill_mod.LEGACY_TABLE_STATS_SQL
    with pytest.raises(drill_mod.DrillFailed, match="table checksums are other/9, this drill's table_stats_sql "
                                                   "computes row-hash/2"):
        drill.stats_sql({"table_checksum": "other/9", "tables": {}})


# --- reading an archive's tar (restore and drill) ------------------------------------------------

def _tar(members: list[tuple[str, bytes]], fmt: int = 1) -> bytes:  # 1: tarfile.GNU_FORMAT, as the backup writes
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _pipe_reader(data: bytes):
    """`data` as the inflater's stdout is read: a buffered reader over a pipe, short reads and all."""
    import threading

    r, w = os.pipe()

    def write():
        try:
            with os.fdopen(w, "wb") as f:
                for i in range(0, len(data), 70_001):
                    f.write(data[i:i + 70_001])
        except BrokenPipeError:
            pass  # the reader stopped early (a disk fault)

    threading.Thread(target=write, daemon=True).start()
    return open(r, "rb")


@pytest.mark.parametrize("name", ("pg_restore_archive", "pg_restore_drill"))
def test_reading_the_tar_takes_the_dump_straight_or_through_tarfile_and_names_a_truncation(name, tmp_path):
    """read_members (module_utils/lm_archive.py, for both modules, each with its own failure): the dump first (the backup's layout: copied straight from the stream), the manifest
    first, a pax tar (both through tarfile), each gives the same dump and manifest; a stream cut inside
    the dump or its header fails as a damaged tar, and a disk that refuses the dump says so."""
    import hashlib
    import tarfile

    module, reader = load(name), shared()
    failed = module.not_restoring if name == "pg_restore_archive" else module.DrillFailed
    kind = module.RestoreFailed if name == "pg_restore_archive" else module.DrillFailed
    said = ", not restoring" if name == "pg_restore_archive" else ""
    dump = os.urandom(3 * (1 << 20) + 777)  # more than one 1 MiB read, not a whole number of tar blocks
    manifest = json.dumps({"database": "acme_app", "size": len(dump)}).encode()
    layouts = {
        "dump first": _tar([("acme_app.dump", dump), ("manifest.json", manifest)]),
        "manifest first": _tar([("manifest.json", manifest), ("acme_app.dump", dump)]),
        "pax": _tar([("acme_app.dump", dump), ("manifest.json", manifest)], fmt=tarfile.PAX_FORMAT),
    }
    for i, (layout, data) in enumerate(layouts.items()):
        work = tmp_path / f"w{i}"
        work.mkdir()
        with _pipe_reader(data) as stream:
            got_manifest, path, sha, size = reader.read_members(stream, str(work), None, failed)
            assert stream.read() == b"", layout  # read to its end: the inflater checks the last CRC-32
        assert got_manifest == json.loads(manifest), layout
        assert Path(path) == work / "acme_app.dump" and Path(path).read_bytes() == dump, layout
        assert (sha, size) == (hashlib.sha256(dump).hexdigest(), len(dump)), layout
    good = layouts["dump first"]
    for cut in (len(good) // 2, 300, 512 + len(dump) + 10):  # in the dump, in its header, in its padding
        work = tmp_path / f"cut{cut}"
        work.mkdir()
        with _pipe_reader(good[:cut]) as stream, pytest.raises((tarfile.TarError, EOFError, ValueError)):
            reader.read_members(stream, str(work), None, failed)
    full = tmp_path / "full"
    full.mkdir()
    (full / "acme_app.dump").write_bytes(b"")  # the dump cannot be created there: a disk fault, not the archive
    with _pipe_reader(good) as stream, pytest.raises(kind, match=f"^could not write the dump to .*{said}$"):
        reader.read_members(stream, str(full), None, failed)


def test_the_postgresql_tools_run_as_the_os_user_whatever_this_process_was_given(monkeypatch):
    """The restore and the drill run createdb/pg_restore/psql as os_user (peer authentication): PGUSER,
    PGDATABASE and PGHOST set for the module (an `environment:` of the play) must not reach them."""
    for name, value in (("PGUSER", "intruder"), ("PGDATABASE", "elsewhere"), ("PGHOST", "db.example"), ("LANG", "C")):
        monkeypatch.setenv(name, value)
    uid, gid, env = shared().as_os_user("root", 5433, "/run/pg-test")
    assert (uid, gid) == (0, 0)
    assert "PGUSER" not in env and "PGDATABASE" not in env
    assert (env["PGHOST"], env["PGPORT"], env["USER"], env["LOGNAME"], env["HOME"]) == (
        "/run/pg-test", "5433", "root", "root", "/root")
    assert env["LANG"] == "C"  # the rest of the environment stays
    assert "PGHOST" not in shared().as_os_user("root", 5432)[2]  # no host: the tools' own default


def test_drill_scratch_leftovers_are_what_scratch_names_look_like():
    drill = load("pg_restore_drill")
    import re

    pattern = re.escape(drill._scratch_prefix("Acme-App")) + drill.SCRATCH_SUFFIX
    assert re.fullmatch(pattern, drill.scratch_name("Acme-App", 1796600000.0))
    long = "x" * 80
    assert re.fullmatch(re.escape(drill._scratch_prefix(long)) + drill.SCRATCH_SUFFIX, drill.scratch_name(long, 0.0))
    assert not re.fullmatch(pattern, "drill_acme_app_20261206T043000_0badc0dX")
    assert not re.fullmatch(pattern, "drill_acme_app_other_20261206T043000_0badc0de")


# A module's process whose result pipe loses its reader: what a module on a host sees when the run that
# started it is stopped (ansible-playbook ends, and with it the SSH session). Real processes, a real pipe.
_ORPHANED = r"""
import os, signal, sys, time
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils import lm_archive
record = open(sys.argv[2], "a", buffering=1)

def stopped(signum, frame):
    record.write(f"stopped by {signum}\n")
    sys.exit(1)

lm_archive.on_stop(stopped)
if sys.argv[3] == "held":
    with lm_archive.stops_held():
        print("ready", file=sys.stderr, flush=True)
        while signal.SIGTERM not in signal.sigpending():  # the stop came, and waits
            time.sleep(0.05)
        record.write("pending while held\n")
else:
    print("ready", file=sys.stderr, flush=True)
time.sleep(600)
record.write("not stopped\n")
"""


@pytest.mark.parametrize("how", ["running", "held"])
def test_a_module_whose_controller_is_gone_stops_as_if_signalled(how, tmp_path):
    """The module's standard output is the pipe its result goes back on. Once nobody reads it (the run was
    stopped: ansible-playbook and its SSH session ended, and nothing signals the module), the module stops
    as SIGTERM stops it, so its clean-up runs; inside stops_held the stop waits for the block's end."""
    record = tmp_path / "record"
    proc = subprocess.Popen([sys.executable, "-c", _ORPHANED, str(MODULE_UTILS), str(record), how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().strip() == "ready", proc.stderr.read()
        proc.stdout.close()  # the controller is gone: the pipe's reader with it
        assert proc.wait(timeout=120) == 1, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expected = ["pending while held", "stopped by 15"] if how == "held" else ["stopped by 15"]
    assert record.read_text().splitlines() == expected
