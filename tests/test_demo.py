"""The README's first quick-start command works on a fresh HOME, with no key and no server."""

import json
import os
import subprocess

from conftest import ROOT


def test_demo_runs_a_real_fan_out_and_prints_a_complete_consolidation(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAIN_", "ANTHROPIC_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    proc = subprocess.run([str(ROOT / "demo")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["complete"] is True
    assert final["total_tasks"] >= 3 and final["completed"] == final["total_tasks"]
    assert all(r["result"] for r in final["results"])
    # It used the embedded default store under the (fresh) home directory.
    assert (tmp_path / "fresh-home" / ".brain" / "jobs.db").exists()
