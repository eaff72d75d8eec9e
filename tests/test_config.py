"""Settings: defaults < ~/.brain/config.yaml (or BRAIN_CONFIG) < environment < flags."""

import os
import subprocess
import sys

import pytest

from brain_jobs import config, jobs, paths
from brain_jobs.errors import InvalidInput
from tests.test_runner_support import LocalHTTP, cli, dispatch_event, finished, wait_until

pytestmark = pytest.mark.sqlite_only  # settings, not storage


def home_config(text):
    path = os.path.join(os.environ["HOME"], ".brain", "config.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_defaults_without_a_file():
    s = config.resolve()
    assert s["executor"] == "host" and s["concurrency"] == 4 and s["model"] == "haiku"
    assert s["models"] == {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-5"}


def test_file_then_environment_then_flags(monkeypatch):
    home_config("executor: grep\nconcurrency: 8\nbase_url: http://file.example:1/\n"
                "models:\n  haiku: haiku-from-file\n  opus: opus-from-file\nmax_turns: 3\n")
    s = config.resolve()
    assert (s["executor"], s["concurrency"], s["base_url"], s["max_turns"]) == ("grep", 8, "http://file.example:1", 3)
    assert s["models"] == {"haiku": "haiku-from-file", "sonnet": "claude-sonnet-4-5", "opus": "opus-from-file"}
    monkeypatch.setenv("BRAIN_CONCURRENCY", "6")
    monkeypatch.setenv("BRAIN_MODEL_HAIKU", "haiku-from-env")
    monkeypatch.setenv("BRAIN_EXECUTOR", "http")
    s = config.resolve()
    assert (s["executor"], s["concurrency"], s["base_url"]) == ("http", 6, "http://file.example:1")
    assert s["models"]["haiku"] == "haiku-from-env" and s["models"]["opus"] == "opus-from-file"
    s = config.resolve({"concurrency": 2, "executor": "shell", "base_url": None})
    assert (s["executor"], s["concurrency"], s["base_url"]) == ("shell", 2, "http://file.example:1")


def test_brain_config_names_the_file(tmp_path, monkeypatch):
    other = tmp_path / "team.yaml"
    other.write_text("concurrency: 16\n")
    home_config("concurrency: 8\n")
    monkeypatch.setenv("BRAIN_CONFIG", str(other))
    assert config.resolve()["concurrency"] == 16
    monkeypatch.setenv("BRAIN_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(InvalidInput, match="missing.yaml does not exist"):
        config.resolve()


@pytest.mark.parametrize("text, message", [
    ("concurrency: lots\n", "concurrency must be a number"),
    ("concurrency: 0\n", "concurrency must be a whole number of at least 1"),
    ("executor: robot\n", "unknown executor 'robot'"),
    ("model: gpt\n", "unknown model 'gpt'"),
    ("base_url: ftp://x\n", "base_url must be an http:// or https:// URL"),
    ("concurency: 3\n", "unknown setting 'concurency'"),
    ("models:\n  mini: x\n", "unknown model alias 'mini'"),
    ("- a list\n", "expected a mapping of settings"),
])
def test_bad_settings_name_the_file_and_the_key(text, message):
    path = home_config(text)
    with pytest.raises(InvalidInput) as info:
        config.resolve()
    assert message in str(info.value) and path in str(info.value)


def test_bad_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("BRAIN_REQUEST_TIMEOUT", "soon")
    with pytest.raises(InvalidInput, match="environment variable BRAIN_REQUEST_TIMEOUT: request_timeout must be a number"):
        config.resolve()


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e999", "0", "-1", "0.01", "86401"])
def test_seconds_settings_refuse_nan_inf_and_values_out_of_range(monkeypatch, raw):
    monkeypatch.setenv("BRAIN_REQUEST_TIMEOUT", raw)
    with pytest.raises(InvalidInput) as info:
        config.resolve()
    assert str(info.value) == (f"environment variable BRAIN_REQUEST_TIMEOUT: request_timeout must be a number of "
                               f"seconds from 0.1 to 86400, got {raw!r}")


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "0.001"])
def test_seconds_in_the_config_file_refuse_nan_inf_and_tiny_values(text):
    path = home_config(f"shell_timeout: {text}\n")
    with pytest.raises(InvalidInput, match="shell_timeout must be a number of seconds from 0.1 to 86400") as info:
        config.resolve()
    assert path in str(info.value)


def test_seconds_given_as_flags_refuse_nan():
    with pytest.raises(InvalidInput, match="option --api-timeout: api_timeout must be a number of seconds"):
        config.resolve({"api_timeout": float("nan")})


def test_a_nan_timeout_is_refused_by_dispatch_before_anything_changes(brain, db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["GET /health"], db=db)
    before = jobs.get_job(job, db=db)
    proc = brain("job", "dispatch", job, "--executor", "http", "--base-url", "http://127.0.0.1:9",
                 env={"BRAIN_REQUEST_TIMEOUT": "nan"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("brain: error: environment variable BRAIN_REQUEST_TIMEOUT: request_timeout must be "
                                   "a number of seconds from 0.1 to 86400, got 'nan'")
    assert jobs.get_job(job, db=db) == before


def test_malformed_yaml_is_a_clear_error_with_the_line(brain, db):
    path = home_config("executor: grep\nconcurrency: 4\nbase_url: http://host: 8080\nmodel: haiku\n")
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["x"], db=db)
    proc = brain("job", "dispatch", job)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"brain: error: config file {path}, line 3: invalid YAML: "
                                   "mapping values are not allowed here")
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["status"] == "pending"


def test_yaml_is_imported_only_when_a_file_exists(tmp_path):
    probe = ("import sys; from brain_jobs import config; config.resolve(); "
             "print('yaml' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=paths.PACKAGE_PARENT)
    run = lambda: subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                 timeout=30).stdout.strip()
    assert run() == "False"
    home_config("concurrency: 2\n")
    assert run() == "True"


def test_the_cli_takes_the_default_executor_from_the_file_and_flags_win(db, tmp_path):
    with LocalHTTP() as server:
        server.gate.set()
        (tmp_path / "notes.txt").write_text("needle\n")
        home_config(f"executor: http\nbase_url: {server.url}\nconcurrency: 3\n")
        job = jobs.create_job_with_subtasks(60, {"prompt": "p", "files": ["notes.txt"]}, ["GET /health"], db=db)
        proc = cli("job", "dispatch", job, cwd=tmp_path)  # no --executor: the file says http
        assert proc.returncode == 0, proc.stderr
        row = wait_until(lambda: finished(job, db), what="http runner")
        assert row["sub_tasks"][0]["result"] == "[200 OK] keys: status"
        log = open(dispatch_event(job, db)["runner"]["log"]).read()
        assert "executor http, 1 sub-tasks, concurrency 1" in log  # never more threads than sub-tasks

        job = jobs.create_job_with_subtasks(60, {"prompt": "p", "files": ["notes.txt"]}, ["needle"], db=db)
        proc = cli("job", "dispatch", job, "--executor", "grep", cwd=tmp_path, env={"BRAIN_EXECUTOR": "shell"})
        assert proc.returncode == 0, proc.stderr
        row = wait_until(lambda: finished(job, db), what="grep runner")
        assert row["sub_tasks"][0]["result"] == "1 match in 1 file, first: notes.txt:1"
        assert server.hits == [("GET", "/health")]
