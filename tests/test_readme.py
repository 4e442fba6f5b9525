"""The README is the first thing a new user reads: it must stay true."""

from __future__ import annotations

import re

from tests.conftest import REPO, trygg_cli
from trygg.settings import Settings

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`TRYGG_{name.upper()}`" in README, f"README does not list TRYGG_{name.upper()}"
    documented = set(re.findall(r"`TRYGG_([A-Z0-9_]+)`", README)) - {"CONFIG"}
    known = {n.upper() for n in Settings.model_fields}
    assert documented <= known, f"README lists settings trygg does not know: {documented - known}"


def test_the_two_commands_exist_and_every_cli_command_named_runs() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
    assert (REPO / "scripts" / "demo").exists() and (REPO / "scripts" / "test").exists()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", README, re.S))
    commands = re.findall(r"^trygg ([a-z-]+(?: [a-z-]+)?)\s", blocks, re.M)
    assert commands
    for cmd in set(commands):
        args = [a for a in cmd.split() if not a.endswith(".yaml")]
        assert trygg_cli(*args, "--help", check=False).returncode == 0, cmd
