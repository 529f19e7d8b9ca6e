"""The SDK's API version rule and the host's plugin loading from the ``guiju`` entry-point group."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest
from guiju_sdk import API_VERSION, PluginInfo, api_version_supported, hookimpl
from guiju_sdk.testing import PluginHarness
from guiju_sdk.version import DEPRECATED

from services.marketplace.service import load_plugins
from services.settings import Settings


def test_api_ranges() -> None:
    assert api_version_supported(">=1.0,<2.0", (1, 0))
    assert api_version_supported(">=1.0", (1, 7))
    assert not api_version_supported(">=1.1", (1, 0))
    assert not api_version_supported("<1.0", (1, 0))
    assert api_version_supported("==1.0", (1, 0))
    with pytest.raises(ValueError, match="cannot read"):
        api_version_supported("~1.0")
    with pytest.raises(ValueError, match="empty"):
        api_version_supported(" ")


def _module(
    name: str, api_range: str | None = ">=1.0,<2.0", extra: dict[str, object] | None = None, summary_zh: str = "测试"
) -> str:
    module = types.ModuleType(name)

    if api_range is not None:

        @hookimpl
        def guiju_plugin_info(register: object) -> None:
            register(
                PluginInfo(
                    name=name.removeprefix("plug_").replace("_", "-"),  # the entry point's name
                    version="1.2.3",
                    publisher="Acme",
                    summary_en="Test",
                    summary_zh=summary_zh,
                    api_range=api_range,
                )
            )

        module.guiju_plugin_info = guiju_plugin_info  # type: ignore[attr-defined]
    for key, value in (extra or {}).items():
        setattr(module, key, value)
    sys.modules[name] = module
    return name


def _ep(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group="guiju")


def test_loading_accepts_compatible_and_refuses_the_rest_with_reasons() -> None:
    @hookimpl
    def guiju_unknown_hook() -> None:
        pass

    eps = [
        _ep("good", _module("plug_good")),
        _ep("future", _module("plug_future", api_range=f">={API_VERSION[0] + 1}.0")),
        _ep("nomanifest", _module("plug_nomanifest", api_range=None)),
        _ep("unknownhook", _module("plug_unknownhook", extra={"guiju_unknown_hook": guiju_unknown_hook})),
        _ep("broken", "plug_does_not_exist"),
        _ep("denied", _module("plug_denied")),
        _ep("renamed", _module("plug_other")),
        _ep("untranslated", _module("plug_untranslated", summary_zh="")),
    ]
    manager, report = load_plugins(Settings(plugins_deny=("denied",)), eps=eps)
    by_name = {r.name: r for r in report}
    assert by_name["good"].loaded and by_name["good"].info and by_name["good"].info.version == "1.2.3"
    assert "supports plugin API" in by_name["future"].reason
    assert "registers no manifest" in by_name["nomanifest"].reason
    assert "unknown hooks" in by_name["unknownhook"].reason
    assert "failed to import" in by_name["broken"].reason
    assert "GUIJU_PLUGINS_DENY" in by_name["denied"].reason
    assert not any(r.loaded for r in report if r.name != "good")
    assert "the entry point is called" in by_name["renamed"].reason
    assert "/summary/zh-CN" in by_name["untranslated"].reason
    assert [name for name, _ in manager.list_name_plugin()] == ["good"]


def test_the_allow_list_keeps_others_out() -> None:
    eps = [_ep("one", _module("plug_one")), _ep("two", _module("plug_two"))]
    _manager, report = load_plugins(Settings(plugins_allow=("two",)), eps=eps)
    assert {r.name: r.loaded for r in report} == {"one": False, "two": True}


def test_a_deprecated_hook_still_loads_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEPRECATED, "guiju_installed", "use guiju_configuration_changed (example)")
    monkeypatch.setitem(DEPRECATED, "guiju_uninstalled:delete_data", "read context.config instead (example)")

    @hookimpl
    def guiju_installed(context: object) -> None:
        pass

    @hookimpl
    def guiju_uninstalled(context: object, delete_data: bool) -> None:
        pass

    module = _module("plug_aging", extra={"guiju_installed": guiju_installed, "guiju_uninstalled": guiju_uninstalled})
    _manager, report = load_plugins(Settings(), eps=[_ep("aging", module)])
    assert report[0].loaded
    assert report[0].deprecations == (
        "guiju_installed is deprecated: use guiju_configuration_changed (example)",
        "guiju_uninstalled:delete_data is deprecated: read context.config instead (example)",
    )
    with pytest.warns(DeprecationWarning, match="is deprecated") as warned:
        harness = PluginHarness(sys.modules[module], name="aging")
    assert [str(w.message) for w in warned] == list(report[0].deprecations) == harness.deprecations
