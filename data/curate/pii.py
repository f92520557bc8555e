"""PII removal: emails, phone numbers, IP addresses, payment cards, IBANs and national ids become
typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<CARD>``, ``<IBAN>``, ``<NATIONAL_ID>``).

Nothing is dropped here: the stage rewrites the text and counts each replacement by type.

Choices:
- Candidates are found by regular expressions and then *validated* where a checksum or a range
  exists, which is what buys precision: card numbers (13-19 digits, optionally grouped by spaces or
  dashes) must pass the Luhn check, IBANs the ISO 13616 mod-97 check (both from python-stdnum),
  IPv4/IPv6 addresses must parse with ``ipaddress``, US social security numbers must pass
  python-stdnum's SSN rules (no 000/666/9xx area, no 00 group, no 0000 serial).
- Phone numbers: NANP (``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, ``+1 555 123
  4567``) and international ``+CC`` numbers with 7-15 digits in 2-5 groups. A phone needs a
  separator or a ``+``: a bare run of digits is an id or a number, not a phone.
- Order: email, IBAN, card, national id, IP, phone; each replacement removes the span, so a
  card number is never also read as a phone. The email rule follows datatrove's PIIFormatter.
- Placeholders are configurable (``placeholders``), e.g. to keep type-specific fake values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable

from lmforge.data.curate.document import Document
from lmforge.data.curate.verdict import Verdict

KINDS = ("EMAIL", "IBAN", "CARD", "NATIONAL_ID", "IP", "PHONE")

_EMAIL = re.compile(r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
# Hex groups and colons, at least two colons; ipaddress decides what is a real IPv6 address.
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # NANP
    r"|\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,5}"  # international, +CC first
    r")(?![\w-]|\.\d)")


@dataclasses.dataclass(frozen=True)
class PIIConfig:
    enabled: bool = True
    kinds: tuple[str, ...] = KINDS  # which kinds to replace
    placeholders: tuple[tuple[str, str], ...] = ()  # (kind, text) overrides of "<KIND>"

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"pii.kinds has unknown kinds {unknown}: expected some of {', '.join(KINDS)}")


def _luhn(digits: str) -> bool:
    from stdnum import luhn  # pylint: disable=import-outside-toplevel

    return luhn.is_valid(digits)


def _valid_card(s: str) -> bool:
    digits = re.sub(r"[ -]", "", s)
    # Real card numbers are grouped uniformly ("4111 1111 1111 1111") or not at all.
    return 13 <= len(digits) <= 19 and digits[0] in "2345689" and _luhn(digits)


def _valid_iban(s: str) -> bool:
    from stdnum import iban  # pylint: disable=import-outside-toplevel

    return iban.is_valid(s)


def _valid_ssn(s: str) -> bool:
    from stdnum.us import ssn  # pylint: disable=import-outside-toplevel

    return ssn.is_valid(s)


def _valid_ip(s: str) -> bool:
    if ":" in s and sum(c not in ":" for c in s) < 4:
        return False  # "::", "::1", "a::b": loopback or C++ scopes, not someone's address
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _valid_phone(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    return 7 <= digits <= 15


_RULES: tuple[tuple[str, tuple[re.Pattern, ...], Callable[[str], bool] | None], ...] = (
    ("EMAIL", (_EMAIL,), None),
    ("IBAN", (_IBAN,), _valid_iban),
    ("CARD", (_CARD,), _valid_card),
    ("NATIONAL_ID", (_SSN,), _valid_ssn),
    ("IP", (_IPV4, _IPV6), _valid_ip),
    ("PHONE", (_PHONE,), _valid_phone),
)


_NEEDS = {_EMAIL: "@", _IPV4: ".", _IPV6: ":"}


def scrub(text: str, kinds: tuple[str, ...] = KINDS, placeholders: dict[str, str] | None = None
          ) -> tuple[str, dict[str, int]]:
    """``text`` with each PII span replaced by its placeholder, and the count per kind."""
    counts: dict[str, int] = {}
    placeholders = placeholders or {}
    for kind, patterns, valid in _RULES:
        if kind not in kinds:
            continue
        token = placeholders.get(kind, f"<{kind}>")
        for pattern in patterns:
            if _NEEDS.get(pattern, "") not in text:
                continue  # cheap pre-check: most documents hold no '@'

            def repl(m: re.Match, token=token, valid=valid, kind=kind) -> str:
                if valid is not None and not valid(m.group(0)):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return token

            text = pattern.sub(repl, text)
    return text, counts


def pii(cfg: PIIConfig, doc: Document) -> Verdict:
    text, counts = scrub(doc.text, cfg.kinds, dict(cfg.placeholders))
    if not counts:
        return Verdict(doc)
    return Verdict(dataclasses.replace(doc, text=text), counts=counts)
