r"""HJ 212 (2005, 2017 and 2025 editions): the codec. Pure: bytes in, packets out, no I/O.

A packet on the wire (shared/domain/standards.md §5.1)::

    ## LLLL <data segment> CCCC \\r\\n

``LLLL`` is the data segment's length in bytes (4 decimal digits), ``CCCC`` the HJ CRC of the
data segment (§5.2: *not* CRC-16/MODBUS; 4 hex digits, high byte first). The data segment is
``QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;[PNUM=..;PNO=..;][RF=1;]CP=&&...&&``.

- :class:`FrameReader` frames a TCP byte stream by the length field (never by CR LF alone:
  segments split and join packets), checks the CRC, and counts every leniency it allows:
  lowercase CRC hex, a missing CR LF, bytes before ``##``, 2005-era packets without QN or Flag.
- :func:`parse_packet` splits a data segment into a :class:`Packet`; ``Flag`` is decoded by bit
  (bits 7-2 the edition: 0 = 2005, 1 = 2017, 2 = 2025; bit 1 PNUM/PNO present; bit 0 reply
  wanted), since the 2025 text swaps the two low bits' letters but not their meaning.
- :func:`parse_cp` turns the CP text into ``DataTime`` and per-factor values and flags
  (``w01001-Rtd=7.21,w01001-Flag=N``: suffixes Rtd, Min, Avg, Max, Cou, Flag, SampleTime...).
- :class:`Reassembler` joins split packets (PNUM/PNO) into one.
- SM4-ECB (HJ 212-2025 §6.4): :func:`encrypt_cp` / :func:`decrypt_cp`, 16-byte blocks written
  as ``{0x..,...}``, a shorter tail left plain, no padding; the CRC covers the plain segment.
- :func:`encode_packet` and the reply builders (:func:`data_reply` 9014,
  :func:`notification_reply` 9013, :func:`request_reply` 9011, :func:`execution_reply` 9012)
  write what the host sends.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from weijian.crc16 import TABLE_A001

__all__ = [
    "Edition",
    "Frame",
    "FrameError",
    "FrameReader",
    "Packet",
    "Reassembler",
    "crc",
    "data_reply",
    "decrypt_cp",
    "encode_packet",
    "encrypt_cp",
    "execution_reply",
    "notification_reply",
    "parse_cp",
    "parse_packet",
    "request_reply",
]

MAX_SEGMENT = 9999  # four decimal digits; the standard's own bound is 1024 (split beyond it)
_CHINA = timezone(timedelta(hours=8))


_T = TABLE_A001


def crc(data: bytes) -> int:
    """The HJ 212 CRC (Appendix A): R = 0xFFFF; per byte R = T[(R >> 8) ^ b]."""
    r = 0xFFFF
    for b in data:
        r = _T[(r >> 8) ^ b]
    return r


class Edition(IntEnum):
    """The standard's edition, from Flag's version bits (bits 7-2)."""

    HJ212_2005 = 0
    HJ212_2017 = 1
    HJ212_2025 = 2


@dataclass(frozen=True)
class Frame:
    """One framed packet: its data segment (bytes) and what was lenient about it."""

    segment: bytes
    lenient: tuple[str, ...] = ()
    raw: bytes = b""  # the packet as it came (``##`` to CR LF, encrypted if it was)


@dataclass(frozen=True)
class FrameError:
    """Bytes that did not make a packet, and why (``bad_crc``, ``bad_length``, ...)."""

    reason: str
    data: bytes
    segment: bytes | None = None  # the segment whose CRC failed (to answer it), if any


class FrameReader:
    """Frames packets out of a TCP byte stream; feed it bytes as they come.

    Args:
        key_for: the SM4 key of a logger by MN (None: it sends plain). An encrypted CP is
            decrypted before the CRC is checked (the CRC is of the plain segment), and the
            frame carries the plain segment.
    """

    def __init__(self, key_for: Callable[[str], bytes | None] | None = None) -> None:
        self._buf = bytearray()
        self._key_for = key_for
        self.leniency: Counter[str] = Counter()

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Everything that ``data`` completes, in order."""
        self._buf += data
        out: list[Frame | FrameError] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Frame | FrameError | None:
        buf = self._buf
        start = buf.find(b"##")
        if start < 0:
            keep = 1 if buf.endswith(b"#") else 0  # a lone '#' may be half a header
            junk = bytes(buf[: len(buf) - keep])
            del buf[: len(junk)]
            return FrameError("no_header", junk) if junk.strip(b"\r\n") else None
        if start > 0:
            junk = bytes(buf[:start])
            del buf[:start]
            if junk.strip(b"\r\n"):  # a CR LF left by the packet before is no leniency
                self.leniency["bytes_before_header"] += 1
        if len(buf) < 6:
            return None
        digits = bytes(buf[2:6])
        if not digits.isdigit():
            del buf[:2]  # not a header after all: look for the next "##"
            return FrameError("bad_length", b"##" + digits)
        length = int(digits)
        end = 6 + length + 4
        if len(buf) < end:
            # A data segment holds no "##": another header before the declared end means the
            # length is wrong (corrupted); give up on this one and frame from that header.
            inner = buf.find(b"##", 6)
            if inner > 0:
                junk = bytes(buf[:inner])
                del buf[:inner]
                return FrameError("bad_length", junk)
            return None
        segment, check = bytes(buf[6 : 6 + length]), bytes(buf[6 + length : end])
        if not re.fullmatch(rb"[0-9A-Fa-f]{4}", check):
            del buf[:2]  # the length pointed somewhere else: a wrong length, resynchronise
            return FrameError("bad_length", bytes(buf[: end - 2]))
        lenient: list[str] = []
        if check != check.upper():
            lenient.append("lowercase_crc")
        want = int(check, 16)
        plain = self._decrypted(segment)  # an encrypted CP: the CRC is of the plain segment
        if plain is not None:
            segment = plain
        if crc(segment) != want:
            # A corrupted length may have swallowed the start of the next packet: keep from
            # a header inside what was taken, so that packet is still framed.
            inner = buf.find(b"##", 2, end)
            del buf[: inner if inner > 0 else end]
            return FrameError("bad_crc", b"", segment)
        tail = bytes(buf[end : end + 2])
        if tail == b"\r\n":
            raw = bytes(buf[: end + 2])
            del buf[: end + 2]
        else:
            if tail and tail != b"\r":
                lenient.append("no_crlf")  # the next bytes are not CR LF (a CR LF arriving later is skipped)
            raw = bytes(buf[:end])
            del buf[:end]
        self.leniency.update(lenient)
        return Frame(segment, tuple(lenient), raw)

    def _decrypted(self, segment: bytes) -> bytes | None:
        """The segment with its CP decrypted, if its MN has a key and the CP is encrypted."""
        if self._key_for is None:
            return None
        m = re.search(rb"(?:^|;)MN=([^;]*);", segment)
        at = segment.find(b"CP=&&")
        if m is None or at < 0 or not segment.endswith(b"&&"):
            return None
        key = self._key_for(m.group(1).decode("utf-8", "replace"))
        cp = segment[at + 5 : -2].decode("utf-8", "replace")
        if key is None or not is_encrypted(cp):
            return None
        try:
            return segment[: at + 5] + decrypt_cp(cp, key).encode() + b"&&"
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class Packet:
    """A parsed data segment. Header fields are strings as sent; ``cp`` is the CP text (plain)."""

    cn: str
    mn: str
    pw: str = ""
    st: str = ""
    qn: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    resent: bool = False  # HJ 212-2025 ``RF=1``: a backlog packet, not live data
    cp: str = ""
    lenient: tuple[str, ...] = ()

    @property
    def edition(self) -> Edition:
        """2005 when there is no Flag, else Flag's version bits (unknown versions read as 2025)."""
        if self.flag is None:
            return Edition.HJ212_2005
        version = self.flag >> 2
        return Edition(version) if version in (0, 1, 2) else Edition.HJ212_2025

    @property
    def wants_reply(self) -> bool:
        """Flag bit 0: the receiver must answer (9014 for data)."""
        return self.flag is not None and bool(self.flag & 1)

    @property
    def split(self) -> bool:
        """Flag bit 1: PNUM and PNO are present."""
        return self.flag is not None and bool(self.flag & 2)

    @property
    def key(self) -> tuple[str, str | None, str, int | None]:
        """What identifies a retry: the same MN, QN, CN (and PNO for a part).

        A 2005-edition packet has no QN: its CP (which holds its DataTime) stands in, so that
        each new upload is new and only a resend of the same one is a retry.
        """
        return (self.mn, self.qn if self.qn is not None else "CP=" + self.cp, self.cn, self.pno)


def _pairs(parts: list[str], where: str) -> Iterator[tuple[str, str]]:
    """``NAME=value`` fields (empty ones skipped)."""
    for part in parts:
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{where} field {part!r} is not NAME=value")
        yield name, value


_MAX_PARTS = 9999  # PNUM and PNO are N4


def parse_packet(segment: bytes) -> Packet:
    """Split a data segment into its header fields and CP.

    Raises:
        ValueError: no ``CP=&&...&&``, no CN or MN, a field that is not ``NAME=value``, a Flag
            outside 0-255, or a PNUM / PNO outside 1-9999 (a PNO above its PNUM).
    """
    text = segment.decode("utf-8")
    cp_at = text.find("CP=&&")
    if cp_at < 0 or not text.endswith("&&") or len(text) < cp_at + 7:
        raise ValueError("no CP=&&...&& data area")
    head, cp = text[:cp_at], text[cp_at + 5 : -2]
    fields = dict(_pairs(head.split(";"), "header"))
    lenient = []
    if "QN" not in fields:
        lenient.append("no_qn")
    if "Flag" not in fields:
        lenient.append("no_flag")
    if "CN" not in fields or "MN" not in fields:
        raise ValueError("CN and MN are required")
    flag = int(fields["Flag"]) if "Flag" in fields else None
    if flag is not None and not 0 <= flag <= 255:
        raise ValueError(f"Flag {flag} is not 0-255")
    pnum = int(fields["PNUM"]) if "PNUM" in fields else None
    pno = int(fields["PNO"]) if "PNO" in fields else None
    # PNUM and PNO are N4 (HJ 212-2017 6.3.2): 1-9999, a part's number within its count. A part
    # numbered past the count could never complete, and an unbounded count is a packet that
    # nobody could send (and a reassembly buffer nobody should keep).
    if pnum is not None and not 1 <= pnum <= _MAX_PARTS:
        raise ValueError(f"PNUM {pnum} is not 1-{_MAX_PARTS}")
    if pno is not None and not 1 <= pno <= (pnum or _MAX_PARTS):
        raise ValueError(f"PNO {pno} is not 1-{pnum or _MAX_PARTS}")
    return Packet(
        cn=fields["CN"], mn=fields["MN"], pw=fields.get("PW", ""), st=fields.get("ST", ""),
        qn=fields.get("QN"), flag=flag, pnum=pnum, pno=pno,
        resent=fields.get("RF") == "1", cp=cp, lenient=tuple(lenient),
    )


@dataclass
class CpData:
    """The CP area: ``DataTime`` and, per factor code, its values by suffix (strings)."""

    data_time: datetime | None = None
    fields: dict[str, str] = field(default_factory=dict)  # non-factor fields (QnRtn, RtdInterval...)
    factors: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> suffix -> value


def parse_time(text: str) -> datetime:
    """``YYYYMMDDhhmmss`` (and the millisecond form some loggers send) in China time, as UTC.

    Raises:
        ValueError: not 14 ASCII digits, or not a real date and time.
    """
    head = text[:14]
    if len(head) != 14 or not (head.isascii() and head.isdigit()):
        raise ValueError(f"time {text!r} is not YYYYMMDDhhmmss")
    base = datetime(int(head[0:4]), int(head[4:6]), int(head[6:8]), int(head[8:10]), int(head[10:12]),
                    int(head[12:14]), tzinfo=_CHINA)
    tail = text[14:17]
    ms = int(tail) if len(tail) == 3 and tail.isascii() and tail.isdigit() else 0
    try:
        return (base + timedelta(milliseconds=ms)).astimezone(UTC)
    except OverflowError:  # year 1 in China time is before what UTC can hold
        raise ValueError(f"time {text!r} is out of range") from None


def parse_cp(cp: str) -> CpData:
    """Parse ``DataTime=..;code-Rtd=v,code-Flag=N;...`` (items by ``;``, values by ``,``).

    A field named ``<code>-<suffix>`` (ASCII letters and digits, then letters) is a factor's.
    """
    out = CpData()
    factors = out.factors
    for item in cp.split(";"):
        for part in item.split(","):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"CP field {part!r} is not NAME=value")
            dash = name.find("-")
            if dash > 0 and name.isascii() and name[:dash].isalnum() and name[dash + 1 :].isalpha():
                factors.setdefault(name[:dash], {})[name[dash + 1 :]] = value
            elif name == "DataTime":
                out.data_time = parse_time(value)
            else:
                out.fields[name] = value
    return out


# --- SM4 (HJ 212-2025 §6.4) -------------------------------------------------------------------

_BLOCK = re.compile(r"\{((?:0x[0-9A-Fa-f]{2},){15}0x[0-9A-Fa-f]{2})\}")


def _sm4(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.SM4(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def encrypt_cp(cp: str, key: bytes) -> str:
    """Encrypt the CP text block by block (16 bytes each); a tail shorter than a block stays plain."""
    raw = cp.encode("utf-8")
    whole = len(raw) - len(raw) % 16
    blocks = _sm4(key, raw[:whole], decrypt=False)
    out = "".join("{" + ",".join(f"0x{b:02X}" for b in blocks[i : i + 16]) + "}" for i in range(0, whole, 16))
    return out + raw[whole:].decode("utf-8")


def decrypt_cp(cp: str, key: bytes) -> str:
    """The plain CP text of :func:`encrypt_cp`'s output (a CP with no blocks is returned as is)."""
    blocks, pos = bytearray(), 0
    for m in _BLOCK.finditer(cp):
        if m.start() != pos:
            break
        blocks += bytes(int(h, 16) for h in m.group(1).split(","))
        pos = m.end()
    return (_sm4(key, bytes(blocks), decrypt=True) + cp[pos:].encode("utf-8")).decode("utf-8")


def is_encrypted(cp: str) -> bool:
    """Whether the CP begins with an SM4 block."""
    return _BLOCK.match(cp) is not None


# --- writing ------------------------------------------------------------------------------------


def encode_packet(fields: Mapping[str, str | int | None], cp: str = "", *, key: bytes | None = None) -> bytes:
    """A whole packet: ``##``, length, data segment, CRC (uppercase), CR LF.

    ``fields`` are the header fields in order (None values left out). With ``key`` the CP is
    SM4-encrypted; the CRC is of the plain segment, as HJ 212-2025 says.
    """
    head = "".join(f"{k}={v};" for k, v in fields.items() if v is not None)
    plain = f"{head}CP=&&{cp}&&".encode()
    sent = plain if key is None else f"{head}CP=&&{encrypt_cp(cp, key)}&&".encode()
    if len(sent) > MAX_SEGMENT:
        raise ValueError(f"data segment of {len(sent)} bytes does not fit the 4-digit length")
    return b"##" + f"{len(sent):04d}".encode() + sent + f"{crc(plain):04X}".encode() + b"\r\n"


def _reply(packet: Packet, cn: str, cp: str) -> bytes:
    flag = 4 if packet.edition is not Edition.HJ212_2025 else 8
    return encode_packet({"QN": packet.qn, "ST": "91", "CN": cn, "PW": packet.pw, "MN": packet.mn,
                          "Flag": flag}, cp)


def data_reply(packet: Packet) -> bytes:
    """9014, the host's answer to an upload that asked for one (Flag bit 0)."""
    return _reply(packet, "9014", "")


def notification_reply(packet: Packet) -> bytes:
    """9013, the answer to a notification (and to the 2025 heartbeat 9015)."""
    return _reply(packet, "9013", "")


def request_reply(packet: Packet, qn_rtn: int) -> bytes:
    """9011 with ``QnRtn`` (1 ready, 3 PW error, 4 MN error, 9 CRC error, ...)."""
    return _reply(packet, "9011", f"QN={packet.qn};QnRtn={qn_rtn}" if packet.qn else f"QnRtn={qn_rtn}")


def execution_reply(packet: Packet, exe_rtn: int) -> bytes:
    """9012 with ``ExeRtn`` (1 success, 2 failed, ...)."""
    return _reply(packet, "9012", f"QN={packet.qn};ExeRtn={exe_rtn}" if packet.qn else f"ExeRtn={exe_rtn}")


class Reassembler:
    """Joins the parts of split packets (PNUM/PNO, Flag bit 1) by (MN, QN, CN)."""

    def __init__(self, max_open: int = 1000) -> None:
        self._parts: dict[tuple[str, str | None, str], dict[int, Packet]] = {}
        self.max_open = max_open

    def add(self, packet: Packet) -> Packet | None:
        """The whole packet once its last part is in, else None (a whole packet passes through)."""
        if not packet.split or packet.pnum is None or packet.pno is None or packet.pnum <= 1:
            return packet
        key = (packet.mn, packet.qn, packet.cn)
        parts = self._parts.setdefault(key, {})
        parts[packet.pno] = packet
        if len(self._parts) > self.max_open:  # a logger that never finishes: forget the oldest
            self._parts.pop(next(iter(self._parts)))
        if len(parts) != packet.pnum or any(not 1 <= n <= packet.pnum for n in parts):
            return None  # (compared without building range(PNUM): a Packet may come from anywhere)
        del self._parts[key]
        ordered = [parts[i] for i in range(1, packet.pnum + 1)]
        cp = ";".join(p.cp for p in ordered if p.cp)
        first = ordered[0]
        return Packet(cn=first.cn, mn=first.mn, pw=first.pw, st=first.st, qn=first.qn,
                      flag=(first.flag or 0) & ~2, resent=first.resent, cp=cp, lenient=first.lenient)
