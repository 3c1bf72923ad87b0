"""A file without its `name:` says so, at its line, instead of calling None an invalid name (QA finding)."""
from tests.helpers import assert_one_line_error, run_cli_inprocess, write


def test_an_empty_workspace_file_says_it_has_no_name(tmp_path):
    write(tmp_path / "workspace.poly", "")
    result = run_cli_inprocess("-w", str(tmp_path), "workflows", "list")
    assert_one_line_error(result, "workspace.poly", "the workspace has no name: write `name: ...`")
    assert "None" not in result.stderr


def test_a_block_without_name_says_so_at_its_line(tmp_path):
    write(tmp_path / "workspace.poly", "name: w\n")
    write(tmp_path / "blocks" / "web" / "block.poly", "version: 1\n")
    result = run_cli_inprocess("-w", str(tmp_path), "blocks", "list")
    assert_one_line_error(result, "blocks/web/block.poly:1:", "the block has no name")
    assert "None" not in result.stderr
