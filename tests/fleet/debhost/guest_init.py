#!/usr/bin/python3
"""PID 1 of a DebHost (copied to /usr/local/sbin/debhost-init in the root).

Runs inside the host's own PID+mount namespace, chrooted into its root.
Starts the given /etc/init.d services in order, writes /run/debhost-ready
(first line "ok" or "failed: ..."), then reaps orphans forever.  The harness
ends the host by SIGKILLing this process: the kernel then kills every
process of the namespace.
"""
import os
import signal
import subprocess
import sys
import time

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read_environment():
    env = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
    try:
        with open("/etc/environment") as fh:
            for line in fh:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"')
    except OSError:
        pass
    return env


def main():
    try:
        # ansible's service_mgr fact reads /proc/1/comm: "init" -> sysvinit.
        with open("/proc/self/comm", "w") as fh:
            fh.write("init")
    except OSError:
        pass
    os.chdir("/")
    os.environ.clear()
    os.environ.update(read_environment())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    for d, mode in (("/run/sshd", 0o755), ("/run/lock", 0o1777),
                    ("/run/postgresql", 0o2775)):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, mode)
    try:
        import pwd
        pg = pwd.getpwnam("postgres")
        os.chown("/run/postgresql", pg.pw_uid, pg.pw_gid)
    except (KeyError, OSError):
        pass
    failed = []
    with open("/var/log/debhost-init.log", "a") as log:
        for name in sys.argv[1:]:
            log.write("== starting %s at %s\n" % (name, time.strftime("%H:%M:%S")))
            log.flush()
            rc = subprocess.call(["/etc/init.d/" + name, "start"], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log)
            if rc != 0:
                failed.append("%s (rc=%d)" % (name, rc))
    with open("/run/debhost-ready.tmp", "w") as fh:
        fh.write("failed: " + ", ".join(failed) + "\n" if failed else "ok\n")
    os.rename("/run/debhost-ready.tmp", "/run/debhost-ready")
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.5)
        except InterruptedError:
            pass


if __name__ == "__main__":
    main()
