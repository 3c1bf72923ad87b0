from polycrate.config.merge import merge_config


def test_maps_merge_deeply():
    defaults = {"db": {"name": "app", "port": 5432, "opts": {"ssl": True, "timeout": 5}}, "x": 1}
    overrides = {"db": {"port": 6543, "opts": {"timeout": 9}}}
    assert merge_config(defaults, overrides) == {
        "db": {"name": "app", "port": 6543, "opts": {"ssl": True, "timeout": 9}},
        "x": 1,
    }


def test_lists_are_replaced_whole():
    assert merge_config({"hosts": ["a", "b", "c"]}, {"hosts": ["z"]}) == {"hosts": ["z"]}
    assert merge_config({"hosts": ["a"]}, {"hosts": []}) == {"hosts": []}


def test_falsy_overrides_win():
    defaults = {"enabled": True, "count": 3, "name": "x", "opts": {"a": 1}}
    merged = merge_config(defaults, {"enabled": False, "count": 0, "name": "", "opts": None})
    assert merged == {"enabled": False, "count": 0, "name": "", "opts": None}


def test_scalar_replaces_map_and_map_replaces_scalar():
    assert merge_config({"a": {"b": 1}}, {"a": "flat"}) == {"a": "flat"}
    assert merge_config({"a": "flat"}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_inputs_are_not_modified():
    defaults = {"a": {"b": [1, 2]}}
    overrides = {"a": {"c": 3}}
    merged = merge_config(defaults, overrides)
    merged["a"]["b"].append(99)
    assert defaults == {"a": {"b": [1, 2]}} and overrides == {"a": {"c": 3}}


def test_missing_sides():
    assert merge_config(None, {"a": 1}) == {"a": 1}
    assert merge_config({"a": 1}, None) == {"a": 1}
