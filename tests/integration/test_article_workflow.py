"""The article's workspace.poly and block.poly, unchanged, run over real SSH with real ansible-playbook."""
import yaml

from tests.conftest import ARTICLE_BLOCK, EXAMPLE, records, run_cli


def test_article_files_are_verbatim_and_the_example_keeps_them(article_workspace):
    from tests.conftest import ARTICLE_FILES

    seed = EXAMPLE.parents[2] / "shared" / "seed" / "polycrate-workflows-article.txt"
    if seed.exists():  # the copies in tests/data/article are the article's text, line for line
        text = seed.read_text()
        for name in ("workspace.poly", "inventory.yml", "block.poly", "backup.yml", "update.yml", "verify.yml"):
            for line in (ARTICLE_FILES / name).read_text().splitlines():
                assert line in text, (name, line)
    # the example workspace runs the article's workspace.poly and inventory.yml unchanged; its
    # workspace.poly only adds workflows after the article's text (the weekly backup-drill)
    assert (EXAMPLE / "inventory.yml").read_text() == (ARTICLE_FILES / "inventory.yml").read_text()
    example_ws, article_ws = (EXAMPLE / "workspace.poly").read_text(), (ARTICLE_FILES / "workspace.poly").read_text()
    assert example_ws.startswith(article_ws)
    added = yaml.safe_load(example_ws)
    assert {k: v for k, v in added.items() if k != "workflows"} == {
        k: v for k, v in yaml.safe_load(article_ws).items() if k != "workflows"}
    assert [w["name"] for w in added["workflows"]] == ["nightly-maintenance", "backup-drill"]
    assert added["workflows"][1]["steps"] == [{"name": "restore-test", "block": "linux-maintenance",
                                               "action": "restore-test"}]
    assert added["workflows"][1]["schedule"]["on_calendar"].startswith("Sun ")
    # the shipped block keeps every config key and action of the article's block.poly, same defaults
    article = yaml.safe_load((ARTICLE_FILES / "block.poly").read_text())
    ours = yaml.safe_load((EXAMPLE / ARTICLE_BLOCK / "block.poly").read_text())
    assert ours["name"] == article["name"] and ours["version"] == article["version"]
    for key, value in article["config"].items():
        assert ours["config"][key] == value, key
    assert {a["name"] for a in article["actions"]} <= {a["name"] for a in ours["actions"]}
    # and the test workspace uses the article's block.poly byte for byte
    assert (article_workspace / ARTICLE_BLOCK / "block.poly").read_text() == (ARTICLE_FILES / "block.poly").read_text()


def test_nightly_workflow_runs_steps_in_order_on_the_configured_groups(article_workspace):
    result = run_cli("workflows", "run", "nightly-maintenance", cwd=article_workspace)
    assert result.returncode == 0, result.output
    recs = records(article_workspace)
    assert [(r["action"], r["host"]) for r in recs] == [
        ("backup", "db01.acme-corp.com"),  # block.config.hosts = db_servers
        ("update", "app01.acme-corp.com"),  # block.config.web_hosts = web_servers
        ("verify", "app01.acme-corp.com"),
    ]
    assert all(r["workflow"] == "nightly-maintenance" for r in recs)
    assert [r["step"] for r in recs] == ["backup", "update", "verify"]
    assert recs[0]["version"] == "0.1.0" and recs[0]["workspace"] == "acme-corp-automation"
    # the reserved-name warning for `block` is not shown
    assert "reserved name" not in result.output


def test_workspace_override_reaches_the_play(article_workspace):
    poly = article_workspace / "workspace.poly"
    poly.write_text(poly.read_text().replace('db_name: "acme_app"', 'db_name: "override_db"'))
    result = run_cli("run", "linux-maintenance", "backup", cwd=article_workspace)
    assert result.returncode == 0, result.output
    (rec,) = records(article_workspace)
    assert rec["config"]["db_name"] == "override_db"
    assert rec["config"]["backup_dir"] == "/var/backups/acme-db"
    assert rec["step"] == "" and rec["workflow"] == ""


def test_retargeting_through_config_moves_the_play(article_workspace):
    poly = article_workspace / "workspace.poly"
    poly.write_text(poly.read_text().replace('hosts: "db_servers"', 'hosts: "web_servers"'))
    assert run_cli("run", "linux-maintenance", "backup", cwd=article_workspace).returncode == 0
    assert [r["host"] for r in records(article_workspace)] == ["app01.acme-corp.com"]
