"""Keep secrets out of everything the driver writes: the run record, Hydra's files, manifests, echoes.

The one rule, applied by a `Redactor` at every exit (RunRecorder for all of MLflow; the Hydra output
files; `orchestrator k8s` and `orchestrator submit`):
- a key looks secret when one of its words (split at dots, underscores, dashes and camelCase) is a
  secret word: `db.password`, `api_key`, `MLFLOW_TRACKING_TOKEN`, `awsSecretAccessKey`; such params and
  tags are left out, and `key: value` / `key=value` with such a key is masked in texts;
- some values are secrets by their shape, wherever they occur: the password in
  `scheme://user:password@host`, `?token=...`, and the well-known token formats (Hugging Face `hf_`,
  OpenAI `sk-`, GitHub `ghp_`/`github_pat_`, GitLab `glpat-`, Slack `xox?-`, AWS access key ids);
- and the values found that way in the job's config, its command line and the driver's environment
  are masked *verbatim* in every text, however they are embedded there (`{HF_TOKEN:hf_x}` inside an
  override, a token printed by the user's script, an argument after `--api-token`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SECRET_WORDS = frozenset({"password", "passwd", "pwd", "token", "secret", "key", "apikey", "credential", "credentials"})
MASK = "***"

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;][A-Za-z0-9_.-]+)=(?P<value>[^&#\s]*)")
# `key: value`, `key=value` and `"key": value` forms in YAML, logs and override lists
_ASSIGNMENT = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<quote>["']?)(?P<sep>\s*[:=]\s*)(?P<value>[^\s,}\]]+)"""
)
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16})\b"
)
_FLAG = re.compile(r"^-{1,2}(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)(?:=(?P<value>.*))?$")
MIN_SECRET_LENGTH = 4
"""Shorter values found under secret keys are not masked verbatim (they would mask ordinary text); the
key-based and shape-based rules still apply to them."""


def is_secret_key(key: str) -> bool:
    """True when a word of `key` names a secret (password, token, secret, key, credentials...)."""
    return any(word.lower() in SECRET_WORDS for word in _WORD.findall(key))


def redact_value(text: str) -> str:
    """Mask passwords in URLs, secret-named query parameters and known token formats; keep the rest."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _TOKEN_SHAPES.sub(MASK, text)
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


@dataclass(frozen=True)
class Redactor:
    """The redaction step: the rules above plus the literal secret values of one job, masked verbatim."""

    secrets: tuple[str, ...] = ()
    """Known secret values, longest first (so a secret that contains another is masked whole)."""

    @classmethod
    def of(cls, *sources: Any) -> "Redactor":
        """A redactor for the secrets found in `sources`: configs (nested dicts and lists), override
        lists, environments; see `secret_values`."""
        found: set[str] = set()
        for source in sources:
            found.update(secret_values(source))
        return cls(
            tuple(
                sorted(
                    (value for value in found if len(value) >= MIN_SECRET_LENGTH),
                    key=lambda value: (-len(value), value),
                )
            )
        )

    def _literals(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, text: str) -> str:
        """A single value (a param, a tag, a URL) fit to record."""
        return redact_value(self._literals(text))

    def text(self, text: str) -> str:
        """A free text (YAML, JSON, a console log, an error) fit to record."""
        return redact_text(self._literals(text))

    def items(self, items: Mapping[str, Any]) -> dict[str, str]:
        """Params or tags fit to record: secret-looking keys left out, every value redacted."""
        return {key: self.value(str(value)) for key, value in items.items() if not is_secret_key(key)}

    def is_secret(self, value: str) -> bool:
        """True when recording `value` would change it (it is or holds a secret)."""
        return self.value(value) != value


def secret_values(node: Any) -> Iterable[str]:
    """Every secret value inside `node` (a mapping, list or string, nested in any way).

    Under a secret-named key every leaf is secret (`env_vars: {HF_TOKEN: ...}`); in a list, the item
    after a secret-named flag (`[--api-token, X]`) and the value of `--api-token=X`; in a string, the
    value of `NAME=VALUE` or `NAME: VALUE` with a secret NAME (an override on the command line), URL
    passwords, secret query parameters and known token formats.
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            if is_secret_key(str(key)):
                yield from _leaves(value)
            else:
                yield from secret_values(value)
    elif isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            flag = _FLAG.match(item) if isinstance(item, str) else None
            if flag and is_secret_key(flag["name"]):
                if flag["value"] is not None:
                    yield flag["value"]
                elif index + 1 < len(node) and isinstance(node[index + 1], str):
                    yield node[index + 1]
            yield from secret_values(item)
    elif isinstance(node, str):
        yield from _string_secrets(node)


def _leaves(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _leaves(item)
    elif node is not None and not isinstance(node, bool):
        yield str(node)


def _string_secrets(text: str) -> Iterable[str]:
    yield from (match["password"] for match in _URL_USERINFO.finditer(text))
    yield from (match["value"] for match in _QUERY_SECRET.finditer(text) if is_secret_key(match["name"]))
    yield from (match[0] for match in _TOKEN_SHAPES.finditer(text))
    for match in _ASSIGNMENT.finditer(text):
        if is_secret_key(match["key"]):
            yield match["value"].strip("'\"")
    # a flag and its value inside a list on the command line: `script.args=[--api-token,x]`
    for flag in re.finditer(
        r"(?:^|[\[,\s])-{1,2}(?P<name>[A-Za-z][A-Za-z0-9_.\-]*)(?:\s*,\s*|\s+)(?P<value>[^\s,\]]+)", text
    ):
        if is_secret_key(flag["name"]):
            yield flag["value"].strip("'\"")
    # an assignment nested in a value: `env_vars={HF_TOKEN:x}` or `args=[--token=x]`
    for inner in re.finditer(r"[{\[,]\s*(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*[:=]\s*(?P<value>[^\s,}\]]+)", text):
        if is_secret_key(inner["key"]):
            yield inner["value"].strip("'\"")
