"""Loading a template pack: a good one loads; a malformed or hostile one is refused whole, with
every problem named by file and path, before anything is built from it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from services.gallery import loader
from services.gallery.loader import PackInvalid, load_pack

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "packs" / "v1" / "mini-shop"


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    target = tmp_path / "mini-shop"
    shutil.copytree(GOOD, target)
    return target


def problems_of(directory: Path) -> set[tuple[str, str]]:
    with pytest.raises(PackInvalid) as refused:
        load_pack(directory)
    return {(p.pointer, p.code) for p in refused.value.errors or []}


def edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")


def test_the_fixture_pack_loads() -> None:
    loaded = load_pack(GOOD)
    assert (loaded.id, loaded.version, loaded.industry) == ("mini-shop", "1.0.0", "ecommerce")
    assert [i.ref for i in loaded.items] == [
        "collection:shop_orders",
        "procedure:ship_order",
        "automation:big_order_check",
        "document:packing_standard",
    ]


def test_unknown_keys_and_schema_violations_are_all_listed(pack: Path) -> None:
    edit(pack / "pack.yaml", lambda s: s.replace("industry: ecommerce", "industry: bakery\ncolour: red"))
    edit(
        pack / "collections" / "shop_orders.yaml",
        lambda s: s.replace("name: {zh-CN: 店铺订单, en: Shop orders}", "name: 订单"),
    )
    found = problems_of(pack)
    assert ("pack.yaml#/industry", "schema_enum") in found
    assert ("pack.yaml#", "schema_additionalProperties") in found
    assert ("collections/shop_orders.yaml#/name", "schema_type") in found


def test_a_text_in_one_language_only_is_refused(pack: Path) -> None:
    edit(
        pack / "procedures" / "ship_order.yaml",
        lambda s: s.replace("title: {zh-CN: 复核, en: Check}", "title: {zh-CN: 复核}"),
    )
    assert ("procedures/ship_order.yaml#/definition/steps/1/title", "schema_required") in problems_of(pack)


def test_definitions_are_checked_as_publishing_checks_them(pack: Path) -> None:
    edit(
        pack / "procedures" / "ship_order.yaml",
        lambda s: s.replace("on_reject: {goto: pack}", "on_reject: {goto: nowhere}"),
    )
    edit(
        pack / "procedures" / "ship_order.yaml",
        lambda s: s.replace("role: packer}\n      due", "role: cook}\n      due"),
    )
    found = problems_of(pack)
    assert any(pointer.startswith("procedures/ship_order.yaml#/definition/steps/1") for pointer, _ in found), found
    assert ("procedures/ship_order.yaml#", "unknown_reference") in found  # @role:cook


def test_references_to_missing_things_are_named(pack: Path) -> None:
    edit(pack / "automations" / "big_order_check.yaml", lambda s: s.replace("@procedure:ship_order", "@procedure:gone"))
    edit(pack / "procedures" / "ship_order.yaml", lambda s: s.replace("collection: shop_orders", "collection: stock"))
    found = problems_of(pack)
    assert ("automations/big_order_check.yaml#", "unknown_reference") in found
    assert ("procedures/ship_order.yaml#/collection", "unknown_collection") in found


def test_automations_and_samples_are_checked(pack: Path) -> None:
    edit(
        pack / "automations" / "big_order_check.yaml",
        lambda s: s.replace("event.record.amount > 1000", "event.record.amount >"),
    )
    edit(pack / "collections" / "shop_orders.yaml", lambda s: s.replace("amount: 99", "amount: lots"))
    found = problems_of(pack)
    assert ("automations/big_order_check.yaml#/conditions/0", "invalid_expression") in found
    assert any(p.startswith("collections/shop_orders.yaml#/samples/0/amount") for p, _ in found), found


def test_a_plugin_action_needs_the_plugin_required(pack: Path) -> None:
    edit(
        pack / "automations" / "big_order_check.yaml",
        lambda s: s.split("actions:")[0] + "actions:\n  - {kind: plugin, plugin: messaging, action: send_email}\n",
    )
    assert ("automations/big_order_check.yaml#/actions/0/plugin", "plugin_not_required") in problems_of(pack)


def test_yaml_aliases_are_refused_before_expansion(pack: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("bcdefgh", "cdefghi", strict=True))
    (pack / "documents" / "packing_standard.yaml").write_text(bomb)
    assert problems_of(pack) >= {("documents/packing_standard.yaml#", "unsafe_yaml")}


def test_duplicate_keys_and_bad_yaml_are_refused(pack: Path) -> None:
    edit(pack / "pack.yaml", lambda s: s + "id: other-id\n")
    (pack / "documents" / "packing_standard.yaml").write_text("key: [unclosed\n")
    found = problems_of(pack)
    assert ("pack.yaml#", "unsafe_yaml") in found
    assert ("documents/packing_standard.yaml#", "invalid_yaml") in found


def test_enormous_and_binary_files_are_refused_unread(pack: Path) -> None:
    (pack / "documents" / "packing_standard.yaml").write_text("k: " + "x" * (loader.MAX_FILE_BYTES + 10))
    (pack / "collections" / "shop_orders.yaml").write_bytes(b"\xff\xfe\x00binary")
    found = problems_of(pack)
    assert ("documents/packing_standard.yaml#", "file_too_large") in found
    assert ("collections/shop_orders.yaml#", "not_utf8") in found


def test_deep_nesting_and_stray_files_are_refused(pack: Path) -> None:
    (pack / "documents" / "packing_standard.yaml").write_text("a: " + "[" * 60 + "]" * 60 + "\n")
    (pack / "notes.txt").write_text("hello")
    (pack / "procedures" / "link.yaml").symlink_to(pack / "pack.yaml")
    found = problems_of(pack)
    assert ("documents/packing_standard.yaml#", "unsafe_yaml") in found
    assert ("notes.txt#", "unexpected_file") in found
    assert ("procedures/link.yaml#", "symlink") in found


def test_versions_and_the_changelog_must_agree(pack: Path) -> None:
    edit(pack / "pack.yaml", lambda s: s.replace("version: 1.0.0\nindustry", "version: 1.2.0\nindustry"))
    assert ("pack.yaml#/changelog", "version_not_logged") in problems_of(pack)


def test_a_missing_pack_yaml_and_duplicate_item_keys(pack: Path) -> None:
    shutil.copy(pack / "documents" / "packing_standard.yaml", pack / "documents" / "copy.yaml")
    found = problems_of(pack)
    assert ("documents/copy.yaml#/key", "file_name") in found
    assert ("documents/packing_standard.yaml#/key", "duplicate_key") in found
    (pack / "pack.yaml").unlink()
    assert ("pack.yaml#", "missing") in problems_of(pack)


def test_localize_and_resolve() -> None:
    value = {"title": {"zh-CN": "甲", "en": "A"}, "items": [{"zh-CN": "乙", "en": "B"}], "id": "@role:packer"}
    assert loader.localize(value, "en") == {"title": "A", "items": ["B"], "id": "@role:packer"}
    assert loader.resolve(value, lambda kind, key: f"{kind}={key}")["id"] == "role=packer"
    assert loader.owners_as_members({"owner": {"kind": "pack_role", "role": "x"}}) == {
        "owner": {"kind": "member", "user_id": "@role:x"}
    }
