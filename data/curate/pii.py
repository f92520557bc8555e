"""PII removal: emails, phone numbers, IP addresses, payment cards, IBANs and national ids become
typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<CARD>``, ``<IBAN>``, ``<NATIONAL_ID>``).

Nothing is dropped here: the stage rewrites the text and counts each replacement by type.

Choices:
- A detector decides on the string *and the words around it*, as people do and as Microsoft
  Presidio's recognizers do with their context words. Each numeric kind has cue words of its own
  and of its look-alikes: within the 6 words before a candidate (or, when none is there, the 3
  after it) the nearest cue decides. "release 2.1.1.108", "section 1.2.3.4", "build 10.0.0.5"
  are not addresses; "order id 4111 1111 1111 1111" is not a card; "Our office number is
  7589590183." is a phone. A candidate with no cue is judged on the string alone.
- Candidates are found by regular expressions and then *validated* where a checksum or a range
  exists: IBANs pass the ISO 13616 mod-97 check, US social security numbers python-stdnum's SSN
  rules, IPv4/IPv6 addresses parse with ``ipaddress``. A card number (13-19 digits) passes the
  Luhn check, starts with the issuer prefix of a real network with a length that network uses
  (``_ISSUERS``: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir, RuPay,
  Verve, Troy), and is grouped uniformly (4-4-4-4, 4-6-5, 4-6-4) or not at all: Luhn alone passes
  a tenth of all digit strings. UnionPay's and RuPay's newer 81/82 ranges are left out: they
  would make every tenth 16-digit id starting with 8 a card.
- Phone numbers come from Google's libphonenumber (the ``phonenumbers`` package):
  ``PhoneNumberMatcher`` finds and parses them (national formats of ``PIIConfig.phone_region``,
  US by default, and ``+CC`` international numbers of every country). It runs only on the runs of
  7+ digits that a cheap regex finds (not those glued to a word: "aix-6107-1415-32"), so text
  without digits costs nothing, and gives up on a run after 20 rejects in a row (a table of
  numbers). On top of the library: a bare run of digits (no separator, no ``+``) is a phone only
  when a phone cue is near and it is a full national number; a formatted number is one unless a
  look-alike cue is near, it is a decimal ("3.140000") or holds a date ("2010-07-04 12:15"), or,
  without a ``+``, its last group is one digit (ISBN-10 "0-306-40615-2"), it is grouped in
  thousands ("1 234 567 890"), all its groups have at most 2 digits ("12 14 46 13 26") and no
  phone cue is near, or it is only a local number (7 digits) and no phone cue is near.
- Order: email, IBAN, card, national id, IP, phone; each replacement removes the span, so a
  card number is never also read as a phone. The email rule follows datatrove's PIIFormatter.
  Placeholders are no cue words ("<IP>" does not say "ip").
- Placeholders are configurable (``placeholders``), e.g. to keep type-specific fake values.

Measured by ``python benchmarks/pii_eval.py`` (its ``labeled_set``: per kind 1,000 positives,
plain and context-cued, and 1,000 look-alikes of PHONE, IP and CARD; seed 0), recall / precision /
look-alike survival per kind; seeds 1 and 7 (2,000 and 3,000 per kind) give the same:

    EMAIL  1.000 / 1.000 / -
    PHONE  1.000 / 1.000 / 1.000   (before: 0.484 / 0.757 / 0.876)
    IP     1.000 / 1.000 / 1.000   (before: 1.000 / 0.500 / 0.000)
    CARD   1.000 / 1.000 / 1.000   (before: 1.000 / 0.548 / 0.176)

The set is generated against the rules above, so 1.000 says the rules do what they claim, not
that web text is solved: a look-alike with no cue word ("Firefox 3.6.28.1", a Luhn-valid
16-digit id starting with 4) is still redacted (``uncued_survival`` 0.0, by design). On Python's
own docs (581 documents) the old rules made 3 phone replacements, all false ("+3.140000",
"+35236450.6", "+000000120"), and read version "2.7.2.2" as an address; these make none of them.
Throughput there (2.09 MB, ``scrub`` over all 581 documents, old and new alternating 8 times in
one process, CPU time, the 2-core CPU machine while busy with other work): best 0.62 s (937
documents/s, 3.4 MB/s) before, 0.53 s (1,090 documents/s, 3.9 MB/s) after; medians 0.67 and
0.65 s: the same within the machine's noise (libphonenumber runs on 260 digit runs there and
costs what the old phone regex did, 0.11 s).
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
# Where PhoneNumberMatcher looks: 7+ digits among phone punctuation, and an extension.
_DIGIT_RUN = re.compile(r"[+(]?\d(?:[ ().\-/]*\d){6,}(?:(?:\s*(?:ext\.?|extension)\s*|\s+x\s*)\d{1,6})?")
_DIGITS = re.compile(r"\d+")
_DECIMAL = re.compile(r"\+?\d+[.,]\d+")
_DATE = re.compile(r"(?:19|20)\d\d([-./])\d\d?\1\d\d?|\d\d?([-./])\d\d?\2(?:19|20)\d\d")
_THOUSANDS = re.compile(r"\d{1,3}([ ,.])\d{3}(?:\1\d{3})*")  # "1 234 567 890": a quantity
# A cue word; one inside a placeholder ("<IP>", "<PHONE>") is not one.
_WORD = re.compile(r"(?<![<\w])[A-Za-z]+|§")
# Candidates libphonenumber may parse (or we may reject) in a row within one run of digits: 20
# phone-shaped numbers in a row, none a phone, are a table of numbers. Without the cap, 150 kB of
# "12-34-56-78-90 " took 3.3 s and "3.14 " * 40000 2.7 s; with it, 0.0x s.
_MAX_TRIES = 20
_BEFORE, _AFTER = 6, 3  # words of context, as Presidio's default prefix window (5)


def _cues(this: str, other: str) -> dict[str, bool]:
    return {**{w: False for w in other.split()}, **{w: True for w in this.split()}}


# True: the words say it is this kind; False: they say it is a look-alike.
_IP_CUES = _cues(
    "ip ips ipv address addresses addr host hosts hostname server servers ping connect connected "
    "connecting connection gateway dns nameserver subnet router proxy client remote peer ssh http https "
    "ftp telnet listen listening bind port login logged visitor",
    "version versions ver v release released releases build builds section sections sec chapter "
    "chapters clause paragraph para article figure fig patch revision rev edition firmware kernel "
    "driver bios appendix part § oid sdk library package")
_CARD_CUES = _cues(
    "card cards credit debit visa mastercard amex discover jcb diners unionpay maestro cc ccn pan "
    "payment pay paid charge charged expiry expires exp cvv cvc billing cardholder",
    "order orders id ids identifier invoice tracking shipment shipping parcel waybill serial isbn "
    "issn ean upc gtin barcode sku reference ref imei iccid ticket booking confirmation case customer "
    "member membership patent claim policy")
_PHONE_CUES = _cues(
    "phone phones telephone tel call calls called calling fax mobile cell cellphone cellular dial "
    "dialed sms text texting whatsapp hotline helpline helpdesk office landline contact reach ring "
    "voicemail ext extension",
    "order orders id ids identifier invoice isbn issn version release build section serial tracking "
    "ticket reference ref transaction sku part model patent zip postcode population pp account acct "
    "policy claim batch lot ean upc imei")
_ID_CUES = _cues(
    "ssn social security taxpayer tin itin",
    "part model serial order invoice isbn version build case ticket zip phone tel fax call")

# Payment card issuer prefixes (IIN ranges) and the lengths each network issues; a range compares
# the number's first len(lo) digits. Maestro also issues 12 digits, below the 13-digit candidates.
_ISSUERS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("4", "4", (13, 16, 19)),  # Visa
    ("51", "55", (16,)), ("2221", "2720", (16,)),  # Mastercard
    ("34", "34", (15,)), ("37", "37", (15,)),  # American Express
    ("6011", "6011", (16, 17, 18, 19)), ("644", "649", (16, 17, 18, 19)),  # Discover
    ("65", "65", (16, 17, 18, 19)),
    ("3528", "3589", (16, 17, 18, 19)),  # JCB
    ("300", "305", (14, 15, 16, 17, 18, 19)), ("3095", "3095", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("36", "36", (14, 15, 16, 17, 18, 19)), ("38", "39", (14, 15, 16, 17, 18, 19)),
    ("62", "62", (16, 17, 18, 19)),  # UnionPay
    *((p, p, (13, 14, 15, 16, 17, 18, 19))  # Maestro
      for p in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763")),
    ("2200", "2204", (16, 17, 18, 19)),  # Mir
    ("60", "60", (16,)), ("508", "508", (16,)), ("353", "353", (16,)), ("356", "356", (16,)),  # RuPay
    ("506099", "506198", (16, 18, 19)), ("650002", "650027", (16, 18, 19)),  # Verve
    ("9792", "9792", (16,)),  # Troy
)
_CARD_GROUPS = ((4, 6, 5), (4, 6, 4))  # Amex, Diners; every other network groups by four


@dataclasses.dataclass(frozen=True)
class PIIConfig:
    enabled: bool = True
    kinds: tuple[str, ...] = KINDS  # which kinds to replace
    placeholders: tuple[tuple[str, str], ...] = ()  # (kind, text) overrides of "<KIND>"
    phone_region: str = "US"  # whose national formats count as phone numbers (ISO 3166 code)

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"pii.kinds has unknown kinds {unknown}: expected some of {', '.join(KINDS)}")
        if not self.enabled or "PHONE" not in self.kinds:
            return
        try:
            import phonenumbers  # pylint: disable=import-outside-toplevel
        except ImportError as e:
            raise ImportError("pii finds phone numbers with the phonenumbers package: "
                              "pip install 'lmforge[curate]' (or drop PHONE from pii.kinds)") from e
        if self.phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"pii.phone_region {self.phone_region!r} is not a region libphonenumber knows: "
                             "expected an ISO 3166 code such as 'US', 'GB', 'DE'")


def cue(text: str, start: int, end: int, cues: dict[str, bool]) -> bool | None:
    """What the words around ``text[start:end]`` say: True (this kind), False (a look-alike) or
    None (no cue). The nearest cue among the ``_BEFORE`` words before decides; if there is none,
    the nearest among the ``_AFTER`` words after."""
    before = _WORD.findall(text, max(0, start - 12 * _BEFORE), start)[-_BEFORE:]
    for w in reversed(before):
        said = cues.get(w.lower())
        if said is not None:
            return said
    for w in _WORD.findall(text, end, end + 12 * _AFTER)[:_AFTER]:
        said = cues.get(w.lower())
        if said is not None:
            return said
    return None


def _issued(digits: str) -> bool:
    """Whether a network issues card numbers with this prefix and length."""
    n = len(digits)
    return any(lo <= digits[:len(lo)] <= hi and n in lengths for lo, hi, lengths in _ISSUERS)


def _grouped_like_a_card(s: str) -> bool:
    """Not grouped, or grouped by one separator as cards are printed (4-4-4-4, 4-4-4-3, 4-6-5)."""
    seps = set(re.findall(r"[ -]", s))
    if not seps:
        return True
    if len(seps) > 1:
        return False
    sizes = tuple(len(g) for g in re.split(r"[ -]", s))
    return sizes in _CARD_GROUPS or (all(k == 4 for k in sizes[:-1]) and 1 <= sizes[-1] <= 4)


def _valid_card(m: re.Match) -> bool:
    from stdnum import luhn  # pylint: disable=import-outside-toplevel

    s = m.group(0)
    digits = re.sub(r"[ -]", "", s)
    return (_grouped_like_a_card(s) and _issued(digits) and luhn.is_valid(digits)
            and cue(m.string, m.start(), m.end(), _CARD_CUES) is not False)


def _valid_iban(m: re.Match) -> bool:
    from stdnum import iban  # pylint: disable=import-outside-toplevel

    return iban.is_valid(m.group(0))


def _valid_ssn(m: re.Match) -> bool:
    from stdnum.us import ssn  # pylint: disable=import-outside-toplevel

    return ssn.is_valid(m.group(0)) and cue(m.string, m.start(), m.end(), _ID_CUES) is not False


def _valid_ip(m: re.Match) -> bool:
    s = m.group(0)
    if ":" in s and sum(c not in ":" for c in s) < 4:
        return False  # "::", "::1", "a::b": loopback or C++ scopes, not someone's address
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return cue(m.string, m.start(), m.end(), _IP_CUES) is not False


_RULES: tuple[tuple[str, tuple[re.Pattern, ...], Callable[[re.Match], bool] | None], ...] = (
    ("EMAIL", (_EMAIL,), None),
    ("IBAN", (_IBAN,), _valid_iban),
    ("CARD", (_CARD,), _valid_card),
    ("NATIONAL_ID", (_SSN,), _valid_ssn),
    ("IP", (_IPV4, _IPV6), _valid_ip),
)
_NEEDS = {_EMAIL: "@", _IPV4: ".", _IPV6: ":"}


def _is_phone(text: str, start: int, end: int, raw: str, number) -> bool:
    """The rules on top of libphonenumber's match ``raw`` = ``text[start:end]`` (module docstring)."""
    import phonenumbers  # pylint: disable=import-outside-toplevel

    said = cue(text, start, end, _PHONE_CUES)
    if said is False:
        return False
    groups = _DIGITS.findall(raw)
    plus = raw.startswith("+")
    reason = phonenumbers.is_possible_number_with_reason(number)
    if len(groups) == 1 and not plus:  # a bare run of digits: an id or a count unless words say phone
        return said is True and reason == phonenumbers.ValidationResult.IS_POSSIBLE
    if _DECIMAL.fullmatch(raw) or _DATE.search(raw) or (not plus and (len(groups[-1]) == 1 or _THOUSANDS.fullmatch(raw))):
        return False  # "3.140000"; "2010-07-04 12:15"; ISBN-10 "0-306-40615-2"; "1 234 567 890"
    if not plus and said is not True and all(len(g) <= 2 for g in groups):
        return False  # "12 14 46 13 26": a list of small numbers, unless the words say phone
    return reason == phonenumbers.ValidationResult.IS_POSSIBLE or (
        said is True and reason == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)


def phone_spans(text: str, region: str = "US") -> list[tuple[int, int]]:
    """(start, end) of each phone number in ``text``, in order: libphonenumber's matches within the
    runs of 7+ digits, kept by :func:`_is_phone`."""
    from phonenumbers import Leniency, PhoneNumberMatcher  # pylint: disable=import-outside-toplevel

    spans = []
    for run in _DIGIT_RUN.finditer(text):
        s, e = run.span()
        if s > 0 and (text[s - 1].isalnum() or text[s - 1] == "_"
                      or (text[s - 1] in "-/" and s > 1 and text[s - 2].isalnum())):
            continue  # part of a word, hash, name or path ("abc1234567", "aix-6107-1415-32", "/items/...")
        rejected = 0
        for m in PhoneNumberMatcher(run.group(0), region, leniency=Leniency.POSSIBLE, max_tries=_MAX_TRIES):
            a, b, raw = s + m.start, s + m.end, m.raw_string
            if raw.startswith("(") and ")" not in raw:  # "(555 123 4567)": the parenthesis is the text's
                a, raw = a + 1, raw[1:]
            if _is_phone(text, a, b, raw, m.number):
                spans.append((a, b))
                rejected = 0
            else:
                rejected += 1
                if rejected == _MAX_TRIES:
                    break
    return spans


def scrub(text: str, kinds: tuple[str, ...] = KINDS, placeholders: dict[str, str] | None = None,
          phone_region: str = "US") -> tuple[str, dict[str, int]]:
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
                if valid is not None and not valid(m):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return token

            text = pattern.sub(repl, text)
    if "PHONE" in kinds:
        spans = phone_spans(text, phone_region)
        if spans:
            token = placeholders.get("PHONE", "<PHONE>")
            parts, at = [], 0
            for a, b in spans:
                parts += [text[at:a], token]
                at = b
            text = "".join(parts) + text[at:]
            counts["PHONE"] = counts.get("PHONE", 0) + len(spans)
    return text, counts


def pii(cfg: PIIConfig, doc: Document) -> Verdict:
    """The document with its PII replaced (never dropped), and the replacements per kind."""
    text, counts = scrub(doc.text, cfg.kinds, dict(cfg.placeholders), cfg.phone_region)
    if not counts:
        return Verdict(doc)
    return Verdict(dataclasses.replace(doc, text=text), counts=counts)
