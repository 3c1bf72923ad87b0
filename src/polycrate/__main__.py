"""The command's front door, for `polycrate` (the installed script calls `main`) and `python -m polycrate`.

Before anything else it takes SIGINT: a polycrate started with SIGINT ignored (a background job of a
script) takes it from here on, and one stopped while it loads ends quietly with exit 130, as a stop at
any later moment does (cli.take_stop_signals says why). This module imports nothing of polycrate at its
top, so that a stop signal finds it inside `main` as early as it can: what comes before its first line
is Python's own start-up."""
import _signal as signal  # type: ignore[import-not-found]  # built-in: nothing to load (`signal` loads `enum`)


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from polycrate.cli import main as run

        return run()
    except KeyboardInterrupt:  # while loading, or in the last instructions of run, after its own handler
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
