"""Test-suite wide configuration: the real-server fixtures live in tests/servers/plugin.py."""

pytest_plugins = ("tests.servers.plugin",)
