"""The three-way merge of template upgrades: one-sided changes win, two-sided ones conflict until
resolved, keyed lists merge element by element and keep a sensible order."""

from __future__ import annotations

from services.gallery.merge import ABSENT, merge


def step(key: str, **values: object) -> dict[str, object]:
    return {"key": key, "title": key.upper(), **values}


def test_one_sided_changes_apply_and_are_reported() -> None:
    base = {"title": "A", "purpose": "p", "metric": None}
    theirs = {"title": "A (ours)", "purpose": "p", "metric": None}
    ours = {"title": "A", "purpose": "p2", "metric": "m"}
    result = merge(base, theirs, ours)
    assert result.value == {"title": "A (ours)", "purpose": "p2", "metric": "m"}
    assert result.conflicts == []
    assert {c.path for c in result.changes} == {"/purpose", "/metric"}
    assert result.kept == ["/title"]


def test_both_sides_changing_a_value_conflict_until_resolved() -> None:
    base, theirs, ours = {"due": 4}, {"due": 6}, {"due": 2}
    open_result = merge(base, theirs, ours)
    assert open_result.value == {"due": 6}  # the workspace's value stands meanwhile
    assert [(c.path, c.base, c.theirs, c.ours) for c in open_result.conflicts] == [("/due", 4, 6, 2)]
    assert merge(base, theirs, ours, {"/due": "ours"}).value == {"due": 2}
    assert merge(base, theirs, ours, {"/due": "theirs"}).value == {"due": 6}


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    result = merge({"a": 1}, {"a": 2}, {"a": 2})
    assert result.value == {"a": 2} and result.conflicts == [] and result.changes == []


def test_keyed_lists_merge_by_key() -> None:
    base = [step("a"), step("b"), step("c")]
    theirs = [step("a", title="A!"), step("b"), step("c"), step("mine")]  # renamed a, added mine
    ours = [step("a"), step("b", title="B2"), step("new"), step("c")]  # renamed b, added new before c
    result = merge(base, theirs, ours)
    assert result.conflicts == []
    assert [s["key"] for s in result.value] == ["a", "b", "new", "c", "mine"]
    assert [s["title"] for s in result.value] == ["A!", "B2", "NEW", "C", "MINE"]


def test_a_removal_on_one_side_and_an_edit_on_the_other_conflict() -> None:
    base = [step("a"), step("b")]
    theirs = [step("a"), step("b", title="kept and edited")]
    ours = [step("a")]
    result = merge(base, theirs, ours)
    assert [(c.path, c.ours) for c in result.conflicts] == [("/b", ABSENT)]
    assert [s["key"] for s in merge(base, theirs, ours, {"/b": "ours"}).value] == ["a"]
    # Removed by the new version and untouched here: removed.
    assert [s["key"] for s in merge(base, [step("a"), step("b")], ours).value] == ["a"]
    # Removed here, untouched by the new version: stays removed.
    assert [s["key"] for s in merge(base, [step("a")], [step("a"), step("b")]).value] == ["a"]


def test_a_reordering_of_the_workspace_is_kept() -> None:
    base = [step("a"), step("b"), step("c")]
    theirs = [step("c"), step("a"), step("b")]
    ours = [step("a"), step("b"), step("c"), step("d")]
    # The new step follows the step it follows in the new version.
    assert [s["key"] for s in merge(base, theirs, ours).value] == ["c", "d", "a", "b"]


def test_lists_without_keys_are_whole_values() -> None:
    result = merge({"c": ["x > 1"]}, {"c": ["x > 2"]}, {"c": ["x > 3"]})
    assert [c.path for c in result.conflicts] == ["/c"]
    assert merge({"c": ["a"]}, {"c": ["a"]}, {"c": ["a", "b"]}).value == {"c": ["a", "b"]}


def test_paths_escape_slashes() -> None:
    result = merge({"a/b": 1}, {"a/b": 2}, {"a/b": 3})
    assert result.conflicts[0].path == "/a~1b"
