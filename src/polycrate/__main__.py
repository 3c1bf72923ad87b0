import signal
import sys

# Before anything else: a polycrate started with SIGINT ignored (a background job of a script) takes
# it from here on, and one stopped while it starts ends quietly (cli.take_stop_signals says why).
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    from polycrate.cli import main
except KeyboardInterrupt:
    sys.exit(130)

try:
    code = main()
except KeyboardInterrupt:  # a stop signal in the last instructions of main, after its own handler
    code = 130
raise SystemExit(code)
