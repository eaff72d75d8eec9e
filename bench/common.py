"""What every benchmark shares: statistics, the machine, temp stores and the real interpreter."""

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def median(values):
    return statistics.median(values) if values else None


def percentile(values, p):
    """The p-th percentile (0-100) by the nearest-rank method."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def real_python() -> str:
    """The interpreter behind ``python3`` on PATH (through any pyenv shim)."""
    out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                         check=True)
    return os.path.realpath(out.stdout.strip())


def python_env(extra=None) -> dict:
    """A clean environment for child processes: no store settings leak in from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BRAIN_", "PYTHON")) and k not in ("CLAUDE_PLUGIN_DATA",)}
    env.update(extra or {})
    return env


def child_env(extra=None) -> dict:
    """``python_env`` plus the repository on ``PYTHONPATH`` (for ``python -m bench.x`` children)."""
    env = python_env(extra)
    env["PYTHONPATH"] = ROOT
    return env


class TempDir:
    """A private directory for one benchmark's stores, removed afterwards."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="brain-bench-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def timed(fn, *args, **kwargs):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def machine() -> dict:
    """What the figures were measured on."""
    py = real_python()
    info = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_path": py,
        "sqlite": sqlite3.sqlite_version,
        "filesystem_tmp": _fs_type(tempfile.gettempdir()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import huey

        info["huey"] = huey.__version__
    except ImportError:
        pass
    try:
        import psycopg

        info["psycopg"] = psycopg.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fs_type(path) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()
        return out[1].split()[1]
    except (OSError, IndexError):
        return "unknown"


def write_json(figures: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(figures, fh, indent=2)
        fh.write("\n")


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)
