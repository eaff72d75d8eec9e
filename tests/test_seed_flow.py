"""The seed's complete flow and Python examples, verbatim."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import BRAIN, ROOT


@pytest.fixture
def brain_on_path(tmp_path):
    """A `brain` on PATH that runs this checkout's CLI with this interpreter."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "brain"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{BRAIN}" "$@"\n')
    launcher.chmod(0o755)
    return f"{bindir}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_seed_complete_flow_verbatim(brain_on_path, tmp_path):
    # The seed's "Fluxo Completo", character for character, plus the reports
    # that the background workers would make, each with the credential in its
    # own launch prompt (what dispatch printed; no read command shows it).
    script = textwrap.dedent('''\
        set -e
        job_id=$(brain job create --distributed --ttl 300 \\
          --prompt "Validar endpoints" \\
          --subtask "GET /health" \\
          --subtask "POST /auth" \\
          --subtask "GET /users" | grep -oP "job_\\K\\w+")
        exec 3>&1 >dispatch.out
        brain job dispatch $job_id
        exec >&3
        cat dispatch.out
        brain job subtasks $job_id
        for sub in sub_1 sub_2 sub_3; do
          agent=$(grep -oP "$job_id $sub \\K[0-9a-f]+(?=: )" dispatch.out)
          brain job update $job_id $sub --status completed --result "[200 OK] $sub" --agent-id $agent
        done
        result=$(brain job consolidate $job_id --json)
        echo $result | jq '.results | map(select(.status == "completed")) | length'
    ''')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PATH=brain_on_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "3"
    assert "◉ sub_1: GET /health" in proc.stdout


def test_seed_python_examples_verbatim():
    code = textwrap.dedent('''\
        from scripts.memory.jobs import create_job_with_subtasks

        job_id = create_job_with_subtasks(
            ttl=3600,
            data={
                "prompt": "Busca paralela",
                "skills": ["python-pro-skill"]
            },
            subtasks=[
                "Buscar users no BD",
                "Buscar posts no BD",
                "Buscar comments no BD"
            ]
        )

        from scripts.memory.jobs import update_subtask_status

        update_subtask_status(
            job_id=job_id,
            sub_task_id="sub_1",
            status="completed",
            result="Encontrados 42 users",
            agent_id="agent_haiku_001"
        )

        from scripts.memory.jobs import consolidate_subtask_results

        result = consolidate_subtask_results(job_id=job_id)
        # result é um dict com todos os resultados consolidados
        import json; print(json.dumps(result))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["total_tasks"] == 3
    assert result["completed"] == 1 and result["failed"] == 0
    assert result["results"][0] == {"sub_task_id": "sub_1", "query": "Buscar users no BD",
                                    "status": "completed", "result": "Encontrados 42 users", "source": "report"}
    assert [r["status"] for r in result["results"][1:]] == ["pending", "pending"]
    assert set(result) >= {"job_id", "total_tasks", "completed", "failed", "results", "consolidated_at"}
