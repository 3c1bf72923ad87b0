"""The Go-template subset of script lines (gotemplate.py), against what Go's text/template prints."""
import pytest

from polycrate.config.gotemplate import TemplateError, parse, render

DATA = {"block": {"config": {"db_name": "acme_app", "camelCase": "A", "camelcase": "b", "n": 1.5, "hosts": [1, 2]}},
        "workspace": {"name": "ws"}}


@pytest.mark.parametrize("source,expected", [
    ("echo {{ .block.config.db_name }}", "echo acme_app"),
    ("{{ .Block.Config.db_name }}", "acme_app"),  # Go's exported field names
    ("{{.block.config.camelCase}} {{.block.config.camelcase}}", "A b"),  # exact key first
    ("{{ if .block.config.db_name }}yes{{ else }}no{{ end }}", "yes"),
    ("{{ range .block.config.hosts }}<{{ . }}>{{ end }}", "<1><2>"),
    ("{{ .block.config.missing }}", "<no value>"),
    ('{{ printf "%s-%d" .workspace.name 3 }}', "ws-3"),
    ('{{ .block.config.db_name | printf "%q" }}', '"acme_app"'),
    ('a {{- " b " -}} c', "a b c"),
    ("{{/* comment */}}z", "z"),
    ('{{ "{{" }}', "{{"),
    ('{{ index .block.config "db_name" }}', "acme_app"),
    ("{{ len .block.config.hosts }}", "2"),
    ("{{ $.workspace.name }}", "ws"),
    ("{{ with .workspace }}{{ .name }}{{ end }}", "ws"),
    ("{{ .block.config.n }}", "1.5"),
    ('{{ eq .workspace.name "ws" }}', "true"),
    ("no template here: ${HOME}", "no template here: ${HOME}"),
])
def test_renders_like_go(source, expected):
    assert render(source, DATA) == expected


@pytest.mark.parametrize("source,fragment", [
    ("{{ foo }}", 'function "foo" not defined'),
    ("{{ .a", "unclosed action"),
    ("{{ if .x }}", "missing {{ end }}"),
])
def test_syntax_errors(source, fragment):
    with pytest.raises(TemplateError, match=fragment):
        parse(source) if "foo" not in source else render(source, DATA)


def test_field_of_a_string_is_an_error():
    with pytest.raises(TemplateError, match="can't evaluate field 'x'"):
        render("{{ .block.config.db_name.x }}", DATA)


@pytest.mark.parametrize("source,expected", [
    ('docker inspect --format {{ "{{" }}.State.Status{{ "}}" }}', "docker inspect --format {{.State.Status}}"),
    ("echo {{`{{ raw }}`}}", "echo {{ raw }}"),
])
def test_literal_braces_through_string_literals(source, expected):
    assert render(source, DATA) == expected


@pytest.mark.parametrize("source,fragment", [
    ("echo {{ block.config.db_name }}", "not supported"),  # Jinja's spelling: `block` is Go's keyword
    ("echo {{ config.db_name }}", 'function "config" not defined'),
    ("echo {{ if lookup .a }}x{{ end }}", 'function "lookup" not defined'),
])
def test_check_refuses_what_gos_parser_refuses(source, fragment):
    from polycrate.config.gotemplate import check

    with pytest.raises(TemplateError, match=fragment):
        check(source)
    check("echo {{ .block.config.db_name | printf \"%q\" }} {{ if and .a (not .b) }}y{{ end }}")
