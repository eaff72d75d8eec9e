"""The plugin as the host and the plugin directory see it: manifest, layout,
frontmatter, and ``claude plugin validate`` of the repository itself."""

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.host.claude_cli import claude_binary

ROOT = Path(__file__).resolve().parent.parent

# The plugin's files do not depend on the job store backend: one run is enough.
pytestmark = pytest.mark.sqlite_only



def frontmatter(path: Path) -> dict:
    text = path.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, f"{path} has no frontmatter"
    fields = {}
    for line in match.group(1).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip().strip('"')
    return fields


def test_manifest_names_the_plugin_and_its_metadata():
    manifest = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "brain-jobs"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    for key in ("description", "author", "license", "repository"):
        assert manifest[key], key
    assert manifest["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert not (ROOT / "plugin.json").exists(), "the host ignores a top-level plugin.json"


def test_icon_is_a_square_png_the_directory_accepts():
    data = (ROOT / ".claude-plugin" / "icon.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 2 * 1024 * 1024
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and 512 <= width <= 2048


def test_worker_agent_is_haiku_with_minimal_tools():
    fields = frontmatter(ROOT / "agents" / "subtask-worker.md")
    assert fields["name"] == "subtask-worker" and fields["model"] == "haiku"
    # What the host gives a plugin agent (it has no Grep or Glob tool); tests/host checks the requests.
    assert {t.strip() for t in fields["tools"].split(",")} == {"Bash", "Read"}
    body = (ROOT / "agents" / "subtask-worker.md").read_text()
    assert "200 characters" in body and "--status failed" in body and "brain job update" in body


def test_skill_carries_the_flow_and_the_ttl_guidance():
    path = ROOT / "skills" / "job-queue" / "SKILL.md"
    fields = frontmatter(path)
    assert fields["name"] == "job-queue" and "parallel" in fields["description"]
    assert len(fields["description"]) <= 300  # loaded into every session: kept short
    assert fields.get("argument-hint")
    body = path.read_text()
    assert "$ARGUMENTS" in body
    for needle in ("brain job create -q", "--glob", "--subtasks-from", "brain job dispatch <id> --executor claude",
                   "run_in_background: true", "brain job wait <id>", "--json", "ONE message", "at most 20",
                   "brain job retry", "60-300 s", "600-1800 s", "Workflow"):
        assert needle in body, needle


def test_hooks_config_points_at_executable_scripts():
    config = json.loads((ROOT / "hooks" / "hooks.json").read_text())["hooks"]
    assert set(config) == {"SessionStart", "PreToolUse", "PostToolUse", "SubagentStop", "Stop"}
    assert [group["matcher"] for group in config["PreToolUse"]] == ["Bash", "Agent|Task"]
    assert "Agent" in config["PostToolUse"][0]["matcher"].split("|")
    for event, groups in config.items():
        for group in groups:
            for h in group["hooks"]:
                if group.get("matcher") == "Bash":  # a shell prefilter that hands our commands to hooks/run pre_tool_use
                    assert h["command"] == '"${CLAUDE_PLUGIN_ROOT}/hooks/pre_tool_use.sh"'
                    continue
                name = h["command"].split()[-1]
                assert h["command"].startswith('"${CLAUDE_PLUGIN_ROOT}/hooks/run" ')
                assert (ROOT / "hooks" / f"{name}.py").is_file()
    for executable in ("hooks/run", "hooks/pre_tool_use.sh", "bin/brain", "scripts/brain"):
        assert os.access(ROOT / executable, os.X_OK), executable


def _validate(*args):
    """``claude plugin validate ARGS`` with the pinned CLI, offline, in a throwaway config dir."""
    return subprocess.run([str(claude_binary()), "plugin", "validate", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1",
                                                CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
                                                CLAUDE_CONFIG_DIR=str(Path(os.environ["HOME"]) / ".claude")))


def test_repository_is_its_own_marketplace():
    market = json.loads((ROOT / ".claude-plugin" / "marketplace.json").read_text())
    manifest = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    # `claude plugin install brain-jobs@brain-jobs` (README) names the plugin and this marketplace.
    assert market["name"] == "brain-jobs" and market["owner"]["name"]
    assert [(p["name"], p["source"]) for p in market["plugins"]] == [(manifest["name"], "./")]
    for name in ("marketplace.json", "plugin.json"):
        proc = _validate(str(ROOT / ".claude-plugin" / name), "--strict", "--json")
        report = json.loads(proc.stdout)
        assert proc.returncode == 0 and report["success"], json.dumps(report, indent=1)[:4000]
        assert report["manifest"]["errors"] == [] and report["manifest"]["warnings"] == [], name


def test_claude_plugin_validate_strict_for_the_plugin_directory():
    if not (ROOT / "README.md").exists():
        pytest.fail("README.md is missing: the plugin directory refuses a plugin without one")
    proc = _validate(str(ROOT), "--strict", "--profile", "directory", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["success"], json.dumps(report, indent=1)[:4000]
    assert report["manifest"]["errors"] == [] and report["manifest"]["warnings"] == []
    assert report["directory"]["findings"] == []
    provides = report["provides"]
    assert provides["skills"] == ["brain-jobs:job-queue"]
    assert provides["agents"] == ["brain-jobs:subtask-worker"]
    assert sorted(h["event"] for h in provides["hooks"]) == sorted(
        ["SessionStart", "PreToolUse", "PreToolUse", "PostToolUse", "SubagentStop", "Stop"])
    assert "brain" in json.dumps(provides["bin"])
    # The hosts the plugin reaches are declared (network.hosts), and the README has a real install line.
    assert report["hosts"]["declared"]["plugin"] is True, report["hosts"]
    declared = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())["network"]["hosts"]
    assert sorted(h["host"] for h in report["hosts"]["named"]) == sorted(declared)
    assert report["advice"] == [], report["advice"]
    text = _validate(str(ROOT), "--strict", "--profile", "directory").stdout
    assert "Hosts not declared" not in text and "no line that installs" not in text, text
