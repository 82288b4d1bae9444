"""Review 7: ``weijian.contract.verify_webhook`` does exactly what docs/alerts.md tells a relay to
do: the timestamp header must be digits, and the signature is over the header's exact text (not
a number parsed from it and printed again)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from weijian.contract import verify_webhook

SECRET = b"relay-shared-secret"
BODY = b'{"text": "x", "to": "13800000001"}'
NOW = 1_768_852_800
DOC = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


def _sign(text: str) -> str:
    return "sha256=" + hmac.new(SECRET, text.encode() + b"." + BODY, hashlib.sha256).hexdigest()


def _documented(stamp: str, signature: str) -> bool:
    """The relay's check, run as docs/alerts.md writes it (the Python block after "A relay:")."""
    section = DOC.read_text(encoding="utf-8").split("### SMS webhook format", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/alerts.md shows the relay's check"

    request = SimpleNamespace(headers={"X-Weijian-Timestamp": stamp, "X-Weijian-Signature": signature})
    space = {"request": request, "raw_body": BODY, "secret": SECRET, "hmac": hmac, "hashlib": hashlib,
             "time": type("clock", (), {"time": staticmethod(lambda: NOW)})}
    exec(code.group(1), space)
    return bool(space["ok"])


CANONICAL = str(NOW)
CASES = [
    # (the timestamp header's text, the text the signature was made over)
    (CANONICAL, CANONICAL),
    (f"+{CANONICAL}", CANONICAL),  # the number is right, the header's text is not digits
    (f" {CANONICAL} ", CANONICAL),
    (f"{CANONICAL[:2]}_{CANONICAL[2:]}", CANONICAL),
    (f"-{CANONICAL}", CANONICAL),
    (f"0{CANONICAL}", CANONICAL),  # leading zero: signed over another text
    (f"0{CANONICAL}", f"0{CANONICAL}"),  # ... and over its own: digits, fresh, signed: taken
    (f"+{CANONICAL}", f"+{CANONICAL}"),
    (f" {CANONICAL}", f" {CANONICAL}"),
    (str(NOW - 301), str(NOW - 301)),
    (str(NOW + 300), str(NOW + 300)),
    ("", ""),
    ("abc", "abc"),
    ("\u00b2", "\u00b2"),  # a digit to str.isdigit, not to int()
    ("\u0661\u0667", "\u0661\u0667"),  # Arabic-Indic digits: not the ASCII digits a sender writes
]


@pytest.mark.parametrize(("stamp", "signed_over"), CASES)
def test_verify_webhook_agrees_with_the_documented_relay_check(stamp: str, signed_over: str) -> None:
    signature = _sign(signed_over)
    expected = _documented(stamp, signature)
    assert verify_webhook(SECRET, BODY, signature, stamp, now=NOW) is expected


@pytest.mark.parametrize(("stamp", "accepted"), [
    (CANONICAL, True), (f"+{CANONICAL}", False), (f" {CANONICAL} ", False),
    (f"{CANONICAL[:2]}_{CANONICAL[2:]}", False), (f"0{CANONICAL}", False),
])
def test_a_signature_made_for_one_timestamp_text_does_not_pass_under_another(
    stamp: str, accepted: bool
) -> None:
    assert verify_webhook(SECRET, BODY, _sign(CANONICAL), stamp, now=NOW) is accepted


def test_odd_signature_headers_are_refused_not_raised() -> None:
    for signature in ("", "sha256=", "sha256=é", "sha256=" + "0" * 64, _sign(CANONICAL) + " "):
        assert verify_webhook(SECRET, BODY, signature, CANONICAL, now=NOW) is False
    assert verify_webhook(SECRET, BODY, _sign(CANONICAL), CANONICAL, now=time.time() + 10**6) is False
