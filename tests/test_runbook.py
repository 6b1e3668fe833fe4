"""The runbook is true of this system: every command, setting, alert and metric it names
exists, the English and Vietnamese versions have the same sections, and its commands run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from secureconnect.cli.main import app
from secureconnect.cli.oncall import oncall_app
from secureconnect.config import Settings

ROOT = Path(__file__).parents[1]
RUNBOOKS = {lang: ROOT / "docs" / "runbook" / f"RUNBOOK.{lang}.md" for lang in ("en", "vi")}
# Read by the CLI rather than the server, or (CONFIG) naming the file the settings come from.
CLI_SETTINGS = {
    "CONFIG",
    "SERVER",
    "PROFILE",
    "TARGET",
    "NAMESPACE",
    "TURN_URL",
    "DATA_DIR",
    "PASSWORD",
    "PASSPHRASE",
    "CLI_HOME",
}


def text(lang: str) -> str:
    return RUNBOOKS[lang].read_text()


def oncall_commands() -> set[str]:
    return {c.name for c in oncall_app.registered_commands if c.name}


@pytest.mark.parametrize("lang", ["en", "vi"])
def test_every_oncall_command_the_runbook_names_exists(lang: str) -> None:
    named = set(re.findall(r"secureconnect oncall ([a-z-]+)", text(lang)))
    assert named >= {"diagnose", "scale", "restart", "rollback", "block", "rate-limit"}
    assert named - oncall_commands() == set()


@pytest.mark.parametrize("lang", ["en", "vi"])
def test_every_setting_and_alert_the_runbook_names_exists(lang: str) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for name in set(re.findall(r"SECURECONNECT_([A-Z_]+)", text(lang))):
        assert name in settings or name in CLI_SETTINGS, name
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    named = set(
        re.findall(
            r"`([A-Z][A-Za-z]+(?:Down|Rate|Saturated|Unreachable|Spike|High|Requests))`", text(lang)
        )
    )
    assert named and named <= alerts


def test_both_languages_have_the_same_sections() -> None:
    def numbers(lang: str) -> list[str]:
        return re.findall(r"^## (23\.\d+)\.", text(lang), flags=re.MULTILINE)

    assert numbers("en") == numbers("vi") == [f"23.{n}" for n in range(1, 12)]
    for lang in ("en", "vi"):
        blocks = re.findall(r"```bash\n(.*?)```", text(lang), flags=re.DOTALL)
        assert len(blocks) >= 15, lang

    # The same commands in both.
    def commands(lang: str) -> list[str]:
        return sorted(set(re.findall(r"secureconnect oncall [a-z-]+", text(lang))))

    assert commands("en") == commands("vi")


def test_each_oncall_command_answers_help() -> None:
    runner = CliRunner()
    for command in sorted(oncall_commands()):
        done = runner.invoke(app, ["oncall", command, "--help"])
        assert done.exit_code == 0, (command, done.output)
        assert "Usage" in done.output
