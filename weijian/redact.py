"""Keeping secrets out of what weijian prints: ``config show``, configuration errors, logs.

Secrets hide in two places: keys that hold one (``password``, ``secret``, ``token``,
``*_secret``, ...; typed ``SecretStr`` in :mod:`weijian.config`) and URLs that carry one, as
the userinfo (``postgresql://weijian:pw@db/weijian``) or a query parameter (the WeCom robot's
``?key=``, DingTalk's ``?access_token=``, a signed request's ``sign=``). :func:`mask` replaces
both kinds inside any text with ``***``; :func:`is_secret_key` says whether a configuration key
may hold a secret, so that its value is never quoted at all.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "is_secret_key", "mask", "mask_tree"]

MASK = "***"

# Query parameters that carry credentials in the webhooks and APIs weijian talks to.
_SECRET_PARAMS = ("key", "access_token", "token", "secret", "sign", "signature", "password",
                  "passwd", "pwd", "apikey", "api_key", "accesskeysecret", "secretkey")
_PARAM = re.compile(r"(?i)([?&;](?:" + "|".join(_SECRET_PARAMS) + r")=)[^&#\s'\"]*")
# scheme://user:password@host -> scheme://user:***@host (and scheme://token@host -> ***@host)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:'\"]*)(:[^/@\s'\"]*)?@")

_SECRET_NAMES = ("password", "passwd", "secret", "token", "api_key", "apikey", "access_key")


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) configuration key names a value that may be a secret."""
    last = key.rsplit(".", 1)[-1].lower()
    return any(last == name or last.endswith("_" + name) for name in _SECRET_NAMES)


def _userinfo(match: re.Match[str]) -> str:
    scheme, user, password = match.group(1), match.group(2), match.group(3)
    if password is None:  # a lone userinfo is a token as often as a user name
        return f"{scheme}{MASK}@"
    return f"{scheme}{user}:{MASK}@"


def mask(text: str) -> str:
    """``text`` with every credential inside a URL replaced by ``***``."""
    return _PARAM.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(_userinfo, text))


def mask_tree(value: Any, key: str = "") -> Any:
    """A JSON-like tree with secret keys' values and credentials in URLs masked."""
    if isinstance(value, dict):
        return {k: mask_tree(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v, key) for v in value]
    if value is not None and is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask(value)
    return value
