"""The pure naming rules of resources, templates and prompts (gateway.protocol): exposed names with servers
that keep their own names, the aerostack:// URI scheme both ways, and template matching."""

from __future__ import annotations

import pytest

from gateway.protocol import (
    build_exposed_names,
    build_exposed_uris,
    build_tool_names,
    matches_template,
    unwrap_uri,
    wrap_uri,
)


# -- names --------------------------------------------------------------------------------------------------
def test_without_verbatim_servers_it_is_the_tool_rule() -> None:
    pairs = [("gh", "search"), ("py", "math.mul"), ("py", "add")]
    exposed, conflicts = build_exposed_names(pairs)
    assert exposed == build_tool_names(pairs) and conflicts == []


def test_a_verbatim_server_keeps_its_names() -> None:
    exposed, conflicts = build_exposed_names([("gh", "search"), ("py", "add")], {"py": 2})
    assert [(t.name, t.server_slug, t.rewritten) for t in exposed] == [
        ("gh__search", "gh", False),
        ("add", "py", False),
    ]
    assert conflicts == []


def test_a_prefixed_name_wins_over_a_verbatim_one() -> None:
    exposed, conflicts = build_exposed_names([("gh", "search"), ("py", "gh__search")], {"py": 1})
    names = {(t.server_slug, t.original_name): t.name for t in exposed}
    assert names[("gh", "search")] == "gh__search"
    assert names[("py", "gh__search")] == "py__gh__search"
    assert [(c.server_slug, c.original) for c in conflicts] == [("py", "gh__search")]


def test_between_verbatim_servers_the_first_added_wins_whatever_the_order() -> None:
    pairs = [("zz", "search"), ("aa", "search")]
    for ordered in (pairs, pairs[::-1]):
        exposed, conflicts = build_exposed_names(ordered, {"zz": 1, "aa": 7})
        names = {t.server_slug: t.name for t in exposed}
        assert names == {"zz": "search", "aa": "aa__search"}
        assert [(c.server_slug, c.original) for c in conflicts] == [("aa", "search")]
        assert "server zz" in conflicts[0].reason


def test_an_invalid_verbatim_name_falls_back_to_a_valid_one() -> None:
    exposed, conflicts = build_exposed_names([("py", "math.mul")], {"py": 1})
    assert exposed[0].name == "py__math_mul" and "not a valid name" in conflicts[0].reason


def test_a_fallback_that_takes_another_verbatim_name_knocks_that_one_out_too() -> None:
    # b's "x" falls back to b__x, which is a's own name: a's falls back as well, and every name stays unique.
    exposed, conflicts = build_exposed_names([("a", "x"), ("b", "x"), ("a", "b__x")], {"a": 1, "b": 2})
    names = [t.name for t in exposed]
    assert len(names) == len(set(names)) == 3
    assert {(c.server_slug, c.original) for c in conflicts} == {("b", "x"), ("a", "b__x")}


# -- URIs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    ["file:///home/a b.txt", "demo://resource/static/1", "https://x.test/a?b=c#d", "notes://{topic}/summary"],
)
def test_a_wrapped_uri_unwraps_to_the_same(uri: str) -> None:
    assert unwrap_uri(wrap_uri("py", uri)) == ("py", uri)


def test_unwrapping_is_case_insensitive_in_scheme_and_host_only() -> None:
    assert unwrap_uri("AeroStack://PY/File:///X") == ("py", "File:///X")


@pytest.mark.parametrize("uri", ["aerostack://py", "aerostack://py/", "aerostack:///x", "file:///x", ""])
def test_other_uris_do_not_unwrap(uri: str) -> None:
    assert unwrap_uri(uri) is None


def test_filling_a_wrapped_template_gives_the_wrapped_filled_uri() -> None:
    template = "file:///{+path}{?q}"
    wrapped = wrap_uri("fs", template)
    filled = wrapped.replace("{+path}", "a/b%20c").replace("{?q}", "?q=1")
    assert unwrap_uri(filled) == ("fs", "file:///a/b%20c?q=1")


def test_uris_are_wrapped_and_sorted() -> None:
    exposed, conflicts = build_exposed_uris([("b", "x://1"), ("a", "x://1"), ("a", "x://0")])
    assert [(u.uri, u.server_slug, u.original) for u in exposed] == [
        ("aerostack://a/x://0", "a", "x://0"),
        ("aerostack://a/x://1", "a", "x://1"),
        ("aerostack://b/x://1", "b", "x://1"),
    ]
    assert conflicts == []


def test_a_verbatim_server_keeps_its_uris_unless_taken_or_in_our_scheme() -> None:
    items = [("a", "x://1"), ("b", "x://1"), ("b", "aerostack://z/y"), ("c", "x://1")]
    exposed, conflicts = build_exposed_uris(items, {"b": 1, "a": 2})
    uris = {(u.server_slug, u.original): u.uri for u in exposed}
    assert uris[("b", "x://1")] == "x://1"  # ranked first
    assert uris[("a", "x://1")] == "aerostack://a/x://1"  # taken by b
    assert uris[("b", "aerostack://z/y")] == "aerostack://b/aerostack://z/y"
    assert uris[("c", "x://1")] == "aerostack://c/x://1"  # c is not verbatim
    assert {(c.server_slug, c.original) for c in conflicts} == {("a", "x://1"), ("b", "aerostack://z/y")}


# -- templates ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "uri", "fits"),
    [
        ("notes://{topic}/summary", "notes://rust/summary", True),
        ("notes://{topic}/summary", "notes://a/b/summary", False),  # simple expansion encodes "/"
        ("notes://{topic}/summary", "notes://rust/other", False),
        ("file:///{+path}", "file:///a/b/c", True),
        ("search://{?q,lang}", "search://?q=x&lang=en", True),
        ("search://{?q,lang}", "search://", True),
        ("x://{a}.{b}", "x://1.2", True),
        ("x://a.b", "x://aXb", False),  # literal parts are literal, not regular expressions
    ],
)
def test_it_matches_uris_against_templates(template: str, uri: str, fits: bool) -> None:
    assert matches_template(template, uri) is fits
