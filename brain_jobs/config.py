"""Settings of dispatch and the headless executors.

Precedence, lowest first: built-in defaults, the YAML file
(``BRAIN_CONFIG``, else ``~/.brain/config.yaml``), environment variables,
command-line flags. ``yaml`` is imported only when a file exists, so a
machine without a config file never pays for it.

The file (every key optional)::

    executor: http            # default of `brain job dispatch --executor`
    concurrency: 8            # sub-tasks run at once by one runner
    model: haiku              # default of --model
    models:                   # what each --model alias means for the anthropic and claude executors
      haiku: claude-haiku-4-5
    base_url: http://127.0.0.1:8080
    request_timeout: 10       # http: seconds per request
    shell_timeout: 30         # shell: seconds per command
    claude_timeout: 300       # claude: seconds per `claude -p`
    api_timeout: 60           # anthropic: seconds per API request
    api_retries: 4            # anthropic: retries of 429 / 5xx, with backoff
    max_turns: 6              # anthropic: model turns per sub-task (tool round trips)
    max_tokens: 1024          # anthropic: output tokens per turn
    max_total_tokens: 60000   # anthropic: input + output tokens per sub-task
"""

import os

from .errors import InvalidInput
from .vocabulary import DEFAULT_MODEL, EXECUTORS, HOST, MODEL_ALIASES


DEFAULTS = {
    "executor": HOST,
    "concurrency": 4,
    "model": DEFAULT_MODEL,
    "models": {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-5"},
    "base_url": None,
    "request_timeout": 10.0,
    "shell_timeout": 30.0,
    "claude_timeout": 300.0,
    "api_timeout": 60.0,
    "api_retries": 4,
    "max_turns": 6,
    "max_tokens": 1024,
    "max_total_tokens": 60_000,
}

# key -> (kind, environment variable)
KEYS = {
    "executor": ("executor", "BRAIN_EXECUTOR"),
    "concurrency": ("count", "BRAIN_CONCURRENCY"),
    "model": ("alias", "BRAIN_MODEL"),
    "base_url": ("url", "BRAIN_BASE_URL"),
    "request_timeout": ("seconds", "BRAIN_REQUEST_TIMEOUT"),
    "shell_timeout": ("seconds", "BRAIN_SHELL_TIMEOUT"),
    "claude_timeout": ("seconds", "BRAIN_CLAUDE_TIMEOUT"),
    "api_timeout": ("seconds", "BRAIN_API_TIMEOUT"),
    "api_retries": ("retries", "BRAIN_API_RETRIES"),
    "max_turns": ("count", "BRAIN_MAX_TURNS"),
    "max_tokens": ("count", "BRAIN_MAX_TOKENS"),
    "max_total_tokens": ("count", "BRAIN_MAX_TOTAL_TOKENS"),
}
MODEL_ENV = {alias: f"BRAIN_MODEL_{alias.upper()}" for alias in MODEL_ALIASES}
MAX_CONCURRENCY = 256
# Every timeout: shorter only fails the work at once; longer than a day is no timeout (nor inf, nor NaN).
MIN_SECONDS = 0.1
MAX_SECONDS = 86400.0


def config_path():
    """``(path, explicit)``: the file to read and whether the user named it."""
    env = os.environ.get("BRAIN_CONFIG")
    if env:
        return os.path.abspath(os.path.expanduser(env)), True
    return os.path.join(os.path.expanduser("~"), ".brain", "config.yaml"), False


def _check(key, kind, value, where):
    """The value converted to its kind, or InvalidInput naming ``where``."""
    given = value

    def bad(expected):
        return InvalidInput(f"{where}: {key} must be {expected}, got {given!r}")

    if kind == "executor":
        if value not in EXECUTORS:
            raise InvalidInput(f"{where}: unknown executor {value!r}: use one of {', '.join(EXECUTORS)}")
        return value
    if kind == "alias":
        if value not in MODEL_ALIASES:
            raise InvalidInput(f"{where}: unknown model {value!r}: use one of {', '.join(MODEL_ALIASES)}")
        return value
    if kind == "model_id":
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise bad("a model id such as claude-haiku-4-5")
        return value
    if kind == "url":
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise bad("an http:// or https:// URL")
        return value.rstrip("/")
    if isinstance(value, bool):
        raise bad("a number")
    if isinstance(value, str):
        try:
            value = float(value) if kind == "seconds" else int(value)
        except ValueError:
            raise bad("a number") from None
    if kind == "seconds":
        # ``not (a <= v <= b)`` rather than ``v < a or v > b``: NaN fails every comparison.
        if not isinstance(value, (int, float)) or not MIN_SECONDS <= value <= MAX_SECONDS:
            raise bad(f"a number of seconds from {MIN_SECONDS:g} to {MAX_SECONDS:g}")
        return float(value)
    if not isinstance(value, int):
        raise bad("a whole number")
    if kind == "retries":
        if not 0 <= value <= 20:
            raise bad("a whole number from 0 to 20")
        return value
    if not 1 <= value <= (MAX_CONCURRENCY if key == "concurrency" else 10_000_000):
        raise bad("a whole number of at least 1" + (f" and at most {MAX_CONCURRENCY}" if key == "concurrency" else ""))
    return value


def _parse_yaml(path):
    import yaml  # only here: a machine without a config file never imports it

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"config file {where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"config file {path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {path}: expected a mapping of settings (key: value), got {type(data).__name__}")
    return data


def load_file(path=None) -> dict:
    """The settings of the config file, checked; ``{}`` when there is no file.

    A file named by ``BRAIN_CONFIG`` must exist. Unknown keys are errors
    (a typo would otherwise be silently ignored).
    """
    explicit = path is not None
    if path is None:
        path, explicit = config_path()
    if not os.path.exists(path):
        if explicit:
            raise InvalidInput(f"config file {path} does not exist (BRAIN_CONFIG names it)")
        return {}
    data = _parse_yaml(path)
    out = {}
    for key, value in data.items():
        if key == "models":
            if not isinstance(value, dict):
                raise InvalidInput(f"config file {path}: models must be a mapping such as haiku: claude-haiku-4-5")
            models = {}
            for alias, model_id in value.items():
                if alias not in MODEL_ALIASES:
                    raise InvalidInput(f"config file {path}: unknown model alias {alias!r} under models "
                                       f"(use {', '.join(MODEL_ALIASES)})")
                models[alias] = _check(f"models.{alias}", "model_id", model_id, f"config file {path}")
            out["models"] = models
        elif key in KEYS:
            out[key] = _check(key, KEYS[key][0], value, f"config file {path}")
        else:
            raise InvalidInput(f"config file {path}: unknown setting {key!r} "
                               f"(known: {', '.join(sorted([*KEYS, 'models']))})")
    return out


def from_env(environ=None) -> dict:
    """The settings given by environment variables, checked."""
    environ = os.environ if environ is None else environ
    out = {}
    for key, (kind, name) in KEYS.items():
        raw = environ.get(name)
        if raw not in (None, ""):
            out[key] = _check(key, kind, raw, f"environment variable {name}")
    models = {}
    for alias, name in MODEL_ENV.items():
        raw = environ.get(name)
        if raw not in (None, ""):
            models[alias] = _check(f"models.{alias}", "model_id", raw, f"environment variable {name}")
    if models:
        out["models"] = models
    return out


def resolve(flags=None, environ=None, path=None) -> dict:
    """Every setting: defaults < file < environment < ``flags`` (None values in flags are ignored)."""
    settings = dict(DEFAULTS, models=dict(DEFAULTS["models"]))
    for layer in (load_file(path), from_env(environ)):
        models = layer.pop("models", {})
        settings.update(layer)
        settings["models"].update(models)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key in KEYS:
            value = _check(key, KEYS[key][0], value, f"option --{key.replace('_', '-')}")
        settings[key] = value
    return settings


def model_id(settings, alias) -> str:
    """The API model id that ``alias`` (haiku, sonnet, opus) stands for."""
    return settings["models"][alias]
