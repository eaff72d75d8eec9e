"""What ``pip install`` puts into site-packages, and the seed's import path.

The distribution installs one package, ``brain_jobs``, and the ``brain``
console script; nothing named ``scripts`` (a name other projects use too)
reaches site-packages. The seed's ``from scripts.memory.jobs import ...``
keeps working from the plugin root and a checkout, as the same module.
"""

import json
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.sqlite_only

# What a wheel is built from: the files pyproject.toml names, copied so the build's
# ``build/`` and ``*.egg-info`` never land in the checkout.
SEED_IMPORT = re.compile(r"\b(from|import) scripts\b|[\"']scripts\.memory")
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "brain_jobs", "scripts")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: setuptools comes with the test venv; nothing is downloaded.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_only_brain_jobs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"brain_jobs", "brain_jobs-0.1.0.dist-info"}, top
    assert "brain_jobs/jobs.py" in names and "brain_jobs/store/sqlite.py" in names
    assert "brain_jobs/executors/guard.py" in names
    entry_points = zipfile.ZipFile(wheel).read("brain_jobs-0.1.0.dist-info/entry_points.txt").decode()
    assert "brain = brain_jobs.cli:main" in entry_points


def test_installed_it_runs_and_brings_no_scripts_package(wheel, tmp_path):
    """Installed in a clean venv (no checkout on the path): ``brain`` and ``brain_jobs`` work,
    and ``import scripts`` finds nothing of ours."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    installed = {p.name for p in Path(purelib).iterdir()}
    assert "brain_jobs" in installed and "scripts" not in installed, installed

    away = tmp_path / "elsewhere"  # not the checkout: cwd is on sys.path for -c
    away.mkdir()
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "BRAIN_DB": str(tmp_path / "jobs.db")}
    probe = subprocess.run([str(python), "-c", "import scripts"], cwd=away, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'scripts'" in probe.stderr

    brain = env_dir / "bin" / "brain"
    created = subprocess.run([str(brain), "job", "create", "-q", "--distributed", "--ttl", "300", "--prompt", "p",
                              "--subtask", "a", "--subtask", "b"], cwd=away, env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    job = created.stdout.strip()
    api = subprocess.run(
        [str(python), "-c", "import json, sys; from brain_jobs.jobs import consolidate_subtask_results; "
                            "print(json.dumps(consolidate_subtask_results(sys.argv[1])))", job],
        cwd=away, env=env, capture_output=True, text=True, timeout=60)
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout)["total_tasks"] == 2


def test_the_seed_import_path_is_the_same_module_from_the_checkout(tmp_path):
    code = ("import brain_jobs.jobs, scripts.memory.jobs as seed; "
            "from scripts.memory.jobs import create_job_with_subtasks, update_subtask_status, "
            "consolidate_subtask_results; "
            "assert seed is brain_jobs.jobs, seed; "
            "assert create_job_with_subtasks is brain_jobs.jobs.create_job_with_subtasks; print('ok')")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_nothing_in_the_package_imports_the_seed_path():
    """The re-export is for the seed's users only: the code, hooks and bench import ``brain_jobs``."""
    offenders = []
    for base in ("brain_jobs", "hooks", "bench", "bin"):
        for path in (ROOT / base).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", "") and "__pycache__" not in path.parts:
                if SEED_IMPORT.search(path.read_text(errors="replace")):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], offenders
