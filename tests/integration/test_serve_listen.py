"""`polycrate serve` on an address it cannot have: one line, the system's exit code, and no claim that it serves."""
import socket

from tests.helpers import assert_one_line_error, run_cli, write


def test_a_taken_port_is_one_line_and_nothing_is_served(tmp_path):
    ws = tmp_path / "ws"
    write(ws / "workspace.poly", "name: ws\n")
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = run_cli("serve", "--listen", f"127.0.0.1:{port}", "-w", str(ws), "--state", str(tmp_path / "state"),
                         timeout=120)
    finally:
        taken.close()
    assert_one_line_error(result, f"--listen 127.0.0.1:{port}", "in use", code=74)
    assert "polycrate serve: http" not in result.stderr
