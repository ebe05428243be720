"""The adapters' shared keyword options: one TypedDict, spelled once."""

from __future__ import annotations

import inspect

from brownout.adapter import Adapter, AdapterOptions


def test_adapter_options_are_the_keyword_parameters_of_the_base() -> None:
    # Adapter.__init__ is where the options end up: a parameter added there without the
    # TypedDict (or the reverse) would make it unreachable through every adapter shell.
    params = inspect.signature(Adapter.__init__).parameters
    assert set(params) - {"self"} == set(AdapterOptions.__optional_keys__)
    assert not AdapterOptions.__required_keys__


def test_adapter_passes_the_options_on() -> None:
    options: AdapterOptions = {
        "name": "payments",
        "secrets": ["tok-123"],
        "probe_timeout": 0.5,
        "recent_operations": 3,
    }
    adapter = Adapter(**options)
    assert (adapter.name, adapter.probe_timeout) == ("payments", 0.5)
    assert "tok-123" in adapter._secrets
