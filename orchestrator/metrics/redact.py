"""Keep secrets out of the run record: secret-looking keys are dropped, credentials in values masked.

A key looks secret when one of its words (split at dots, underscores, dashes and camelCase) is a
secret word: `db.password`, `api_key`, `MLFLOW_TRACKING_TOKEN`, `awsSecretAccessKey`. Values are
searched for credentials wherever they occur: `scheme://user:password@host` and `?token=...`.
"""

from __future__ import annotations

import re
from typing import Mapping

SECRET_WORDS = frozenset({"password", "passwd", "pwd", "token", "secret", "key", "apikey", "credential",
                          "credentials"})
MASK = "***"

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;][A-Za-z0-9_.-]+)=(?P<value>[^&#\s]*)")
# `key: value`, `key=value` and `"key": value` forms in YAML, logs and override lists
_ASSIGNMENT = re.compile(r"""(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<quote>["']?)(?P<sep>\s*[:=]\s*)(?P<value>[^\s,}\]]+)""")


def is_secret_key(key: str) -> bool:
    """True when a word of `key` names a secret (password, token, secret, key, credentials...)."""
    return any(word.lower() in SECRET_WORDS for word in _WORD.findall(key))


def redact_value(text: str) -> str:
    """Mask passwords in URLs and secret-named query parameters; the rest of the text is kept."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}={MASK}" if is_secret_key(m["name"]) else m[0], text)


def redact_text(text: str) -> str:
    """Mask the values of secret-named assignments and any credentials in a free text (YAML, logs)."""
    def mask(match: re.Match) -> str:
        if not is_secret_key(match["key"]):
            return match[0]
        return f"{match['key']}{match['quote']}{match['sep']}{MASK}"

    return _ASSIGNMENT.sub(mask, redact_value(text))


def safe_items(items: Mapping[str, str]) -> dict[str, str]:
    """Params or tags fit to record: secret-looking keys left out, credentials in values masked."""
    return {key: redact_value(str(value)) for key, value in items.items() if not is_secret_key(key)}
