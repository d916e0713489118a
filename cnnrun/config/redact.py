"""Secrets never written or shown: credentials in URLs and the values of secret environment variables.

Two layers. `take_credentials` runs first, in the command line, before Hydra sees anything: the user-info
of a tracking URI (`http://alice:PW@host`, given as an override or in $MLFLOW_TRACKING_URI) is moved into
MLflow's own variables ($MLFLOW_TRACKING_USERNAME / _PASSWORD, which its client sends as HTTP basic
auth), so the config, Hydra's saved files and the lock never hold it. `redact(text)` is the second
layer, applied wherever text leaves the process (console, train.log, metrics.json, .lock, saved
configs, tracker params): it blanks user-info in any URL, secret-looking query parameters, and the
value of every environment variable whose name says it is secret.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://user[:password]@host — the user-info part, wherever a URL appears in text
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/\s@'\"]+)@")
# ?token=... &password=... in URLs
_QUERY = re.compile(r"(?i)([?&;](?:access_token|token|password|passwd|pwd|secret|api_key|apikey|key|sig|signature)=)"
                    r"[^&;#\s'\"]+")
SECRET_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)")
# key=value / key: value / "key": "value" where the key says it is secret (a hook's +hooks.n.api_token=..., a YAML
# line of a saved config, a JSON record)
_KEYED = re.compile(r"(?i)(?P<key>(?<![\w])[\w.+~-]*?(?:password|passwd|token|secret|api_?key|access_?key|private_?key"
                    r"|credentials?)(?P<q>['\"]?)\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s'\",}\]]+)")
_SECRET_KEY = re.compile(r"(?i)(?:^|[._\-+~])(?:password|passwd|token|secret|api_?key|access_?key|private_?key"
                         r"|credentials?)$")
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 4}
    return sorted(values, key=len, reverse=True)  # the longest first: one secret may contain another


def secret_key(key) -> bool:
    """Whether a setting's name says its value is secret (`hooks.notify.api_token`, `password`)."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def _masked(m: re.Match) -> str:
    value = m["value"]
    if value.strip("'\"") in (MASK, "null", "None", ""):
        return m.group(0)
    quote = value[0] if value[0] in "'\"" else ""
    return f"{m['key']}{quote}{MASK}{quote}"


def redact(text):
    """`text` with every secret blanked (non-text values are returned as they are)."""
    if not isinstance(text, str) or not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: m.group(1) + MASK, text)
    text = _KEYED.sub(_masked, text)
    for value in _secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(data):
    """Every string inside nested dicts, lists and tuples redacted (keys too)."""
    if isinstance(data, dict):  # a value under a secret-sounding key is blanked whole, whatever it looks like
        return {redact(k): MASK if secret_key(k) and isinstance(v, (str, int)) and
                not isinstance(v, bool) else redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(v) for v in data)
    return redact(data)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(url without user-info, user, password) of an http(s) URL; (url, None, None) when it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None, None
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, None
    info, _, host = parts.netloc.rpartition("@")
    user, _, password = info.partition(":")
    from urllib.parse import unquote

    return urlunsplit(parts._replace(netloc=host)), unquote(user) or None, unquote(password) or None


def _move_to_env(url: str, where: str) -> str:
    clean, user, password = split_credentials(url)
    if user is None and password is None:
        return url
    if user is not None:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
    if password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    logging.getLogger("cnnrun").debug("%s: credentials moved to MLFLOW_TRACKING_USERNAME/PASSWORD", where)
    return clean


def take_credentials(args: list[str]) -> list[str]:
    """Moves the user-info of tracking URIs (in `args` and in $MLFLOW_TRACKING_URI) into MLflow's
    username/password variables; returns `args` without it. Child processes inherit the variables."""
    for name in URI_VARIABLES:
        if os.environ.get(name):
            os.environ[name] = _move_to_env(os.environ[name], name)
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+~").endswith("tracking_uri"):
            value = value.strip("'\"")
            arg = f"{key}={_move_to_env(value, key)}"
        out.append(arg)
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (attached to every handler of a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's own business
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = redact(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.msg, record.args, record.exc_info, record.exc_text = f"{clean}: {text}", (), None, None
        return True


def guard_logging() -> None:
    """Attaches the redacting filter to every handler of the root and `cnnrun` loggers (idempotent)."""
    for logger in (logging.getLogger(), logging.getLogger("cnnrun")):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
