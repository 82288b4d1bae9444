"""The HJ 212 codec against the standard's own examples and field packets (standards.md §5.5),
the CRC test vectors of §5.2, and a property test: generated packets of both editions, split
and encrypted, encode and decode to the same data, and a corrupted byte is always caught."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import hj212
from gateway.hj212 import Edition, Frame, FrameError, FrameReader

EXAMPLES = {
    "appendix-a": b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
                  b"CP=&&RtdInterval=30&&1C80\r\n",
    "2005-rtd": b"##0121ST=32;CN=2011;PW=123456;MN=LD130104000268;CP=&&DataTime=20160824045500;"
                b"B01-Rtd=4.69,B01-Flag=N;011-Rtd=70.00,011-Flag=N&&6E80\r\n",
    "2005-fault": b"##0121ST=32;CN=2011;PW=123456;MN=ZG130102201215;CP=&&DataTime=20160824045130;"
                  b"B01-Rtd=0.00,B01-Flag=D;011-Rtd=32.00,011-Flag=N&&0140\r\n",
    "9011": b"##0084ST=91;CN=9011;PW=123456;MN=LD130131000382;Flag=0;CP=&&QN=20160824051300009;"
            b"QnRtn=1&&E101\r\n",
    "9012": b"##0078ST=91;CN=9012;PW=123456;MN=LD130131000382;CP=&&QN=20160824051300009;ExeRtn=1&&7700\r\n",
    "2017-rtd": b"##0457QN=20210320163101890;ST=32;CN=2011;PW=123456;MN=81733553213013;Flag=4;CP=&&DataTime="
                b"20210320013400;w00000-Rtd=181.682,w00000-Flag=N;w21001-SampleTime=20210320005400,w21001-Rtd="
                b"45.160,w21001-Flag=N;w21011-SampleTime=20210320013400,w21011-Rtd=1.970,w21011-Flag=N;"
                b"w21003-SampleTime=20210320013400,w21003-Rtd=53.131,w21003-Flag=N;w01018-SampleTime="
                b"20210320013400,w01018-Rtd=194.200,w01018-Flag=N;w01001-SampleTime=20210320013406,w01001-Rtd="
                b"7.496,w01001-Flag=N&&6E80\r\n",
    "2017-minute": b"##0411QN=20220513162608370;ST=22;CN=2051;PW=123456;MN=JLYP01_AIR01_0001;Flag=4;CP=&&"
                   b"DataTime=20220513162600;a21004-Avg=4,a21004-Flag=N;a05024-Avg=63,a05024-Flag=N;a21026-Avg=6,"
                   b"a21026-Flag=N;a21005-Avg=0.427,a21005-Flag=N;a34004-Avg=14,a34004-Flag=N;a34002-Avg=31,"
                   b"a34002-Flag=N;a01007-Avg=1,a01007-Flag=N;a01008-Avg=11,a01008-Flag=N;a01001-Avg=17,"
                   b"a01001-Flag=N;a01002-Avg=85,a01002-Flag=N;a01006-Avg=95,a01006-Flag=N&&D641",
    "library": b"##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;"
               b"B01-Rtd=36.91;"
               b"011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980\r\n",
    "constructed": b"##0231QN=20261122080000000;ST=21;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
                   b"CP=&&DataTime=20261122080000;w01001-Rtd=7.21,w01001-Flag=N;w01003-Rtd=0.31,w01003-Flag=N;"
                   b"w01010-Rtd=18.6,w01010-Flag=N;w01014-Rtd=412.0,w01014-Flag=N&&0880\r\n",
    "constructed-9014": b"##0087QN=20261122080000000;ST=91;CN=9014;PW=123456;"
                        b"MN=010000A8900016F000169DC0;Flag=4;"
                        b"CP=&&&&1680\r\n",
}


def one(data: bytes) -> Frame | FrameError:
    reader = FrameReader()
    items = reader.feed(data) + reader.feed(b"##")  # a following packet's start ends one without CR LF
    assert len(items) == 1, items
    return items[0]


def test_crc_vectors() -> None:
    assert hj212.crc(b"") == 0xFFFF
    assert hj212.crc(b"123456789") == 0x2F80
    segment = EXAMPLES["appendix-a"][6:-6]
    assert hj212.crc(segment) == 0x1C80
    # Not CRC-16/MODBUS, which would give 0x4B37 for 123456789.
    assert hj212.crc(b"123456789") != 0x4B37


def test_the_2025_appendix_a1_example() -> None:
    # HJ 212-2025 Appendix A.1 (as a public codebase quoting the PDF gives its fields): a 1011
    # request of 87 characters with an empty data area, Flag 9 (2025, reply wanted), CRC 2200.
    segment = b"QN=20240601085857223;ST=32;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&&&"
    assert len(segment) == 87 and hj212.crc(segment) == 0x2200
    raw = b"##0087" + segment + b"2200\r\n"
    frame = one(raw)
    assert isinstance(frame, Frame)
    packet = hj212.parse_packet(frame.segment)
    assert (packet.cn, packet.edition, packet.wants_reply, packet.split) == ("1011", hj212.Edition.HJ212_2025,
                                                                             True, False)
    assert hj212.encode_packet({"QN": packet.qn, "ST": "32", "CN": "1011", "PW": "123456", "MN": packet.mn,
                                "Flag": 9}) == raw


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_example_frames_parses_and_reencodes_byte_for_byte(name: str) -> None:
    raw = EXAMPLES[name]
    frame = one(raw)
    assert isinstance(frame, Frame), frame
    packet = hj212.parse_packet(frame.segment)
    header = {"QN": packet.qn, "ST": packet.st, "CN": packet.cn, "PW": packet.pw, "MN": packet.mn,
              "Flag": packet.flag}
    order = [k for k in ("QN", "ST", "CN", "PW", "MN", "Flag") if f"{k}=".encode() in frame.segment]
    again = hj212.encode_packet({k: header[k] for k in order}, packet.cp)
    assert again == (raw if raw.endswith(b"\r\n") else raw + b"\r\n")


def test_flags_by_bit_and_edition() -> None:
    appendix = hj212.parse_packet(one(EXAMPLES["appendix-a"]).segment)  # type: ignore[union-attr]
    assert (appendix.edition, appendix.wants_reply, appendix.split) == (Edition.HJ212_2017, True, False)
    old = hj212.parse_packet(one(EXAMPLES["2005-rtd"]).segment)  # type: ignore[union-attr]
    assert old.edition is Edition.HJ212_2005 and old.lenient == ("no_qn", "no_flag")
    p2025 = hj212.parse_packet(b"QN=1;ST=21;CN=2011;PW=1;MN=M;Flag=11;PNUM=2;PNO=1;RF=1;CP=&&a=1&&")
    got = (p2025.edition, p2025.wants_reply, p2025.split, p2025.resent)
    assert got == (Edition.HJ212_2025, True, True, True)


def test_cp_values_flags_and_times() -> None:
    cp = hj212.parse_cp(hj212.parse_packet(one(EXAMPLES["constructed"]).segment).cp)  # type: ignore[union-attr]
    assert cp.factors["w01001"] == {"Rtd": "7.21", "Flag": "N"}
    assert cp.factors["w01014"]["Rtd"] == "412.0"
    assert cp.data_time is not None and cp.data_time.isoformat() == "2026-11-22T00:00:00+00:00"  # 08:00 China


def test_a_bad_crc_and_a_wrong_length_are_caught_and_the_stream_resynchronises() -> None:
    good = EXAMPLES["constructed"]
    bad_crc = good[:-6] + b"0881\r\n"
    wrong_length = b"##0230" + good[6:]
    reader = FrameReader()
    items = reader.feed(bad_crc + wrong_length + good)
    kinds = [type(i).__name__ + (f":{i.reason}" if isinstance(i, FrameError) else "") for i in items]
    assert kinds[0] == "FrameError:bad_crc" and kinds[-1] == "Frame"
    assert "FrameError:bad_length" in kinds or "FrameError:bad_crc" in kinds[1:-1]


def test_lowercase_crc_is_accepted_and_counted() -> None:
    raw = EXAMPLES["appendix-a"]  # CRC 1C80
    lower = raw[:-6] + raw[-6:-2].lower() + b"\r\n"
    reader = FrameReader()
    (frame,) = reader.feed(lower)
    assert isinstance(frame, Frame) and frame.lenient == ("lowercase_crc",)
    assert reader.leniency["lowercase_crc"] == 1


def test_a_packet_without_cr_lf_is_taken_and_counted_when_the_next_one_follows() -> None:
    reader = FrameReader()
    items = reader.feed(EXAMPLES["2017-minute"] + EXAMPLES["constructed"])
    assert [type(i) for i in items] == [Frame, Frame]
    assert items[0].lenient == ("no_crlf",) and reader.leniency["no_crlf"] == 1


def test_replies_keep_the_qn_use_st_91_and_the_edition_flag() -> None:
    upload = hj212.parse_packet(one(EXAMPLES["constructed"]).segment)  # type: ignore[union-attr]
    assert hj212.data_reply(upload) == EXAMPLES["constructed-9014"]
    reply = hj212.parse_packet(one(hj212.request_reply(upload, 3)).segment)  # type: ignore[union-attr]
    assert (reply.cn, reply.st, reply.qn, reply.flag) == ("9011", "91", upload.qn, 4)
    assert hj212.parse_cp(reply.cp).fields == {"QN": upload.qn, "QnRtn": "3"}
    heartbeat = hj212.parse_packet(b"QN=20260101000000000;ST=21;CN=9015;PW=1;MN=M;Flag=8;CP=&&&&")
    assert hj212.parse_packet(one(hj212.notification_reply(heartbeat)).segment).flag == 8  # type: ignore[union-attr]


SM4_KEY = bytes([0x30] * 16)  # the standard's test key


def test_sm4_ecb_blocks_and_a_plain_tail() -> None:
    cp = "DataTime=20260101000000;w01001-Rtd=7.21,w01001-Flag=N"  # 52 bytes: 3 blocks and 4 plain
    sealed = hj212.encrypt_cp(cp, SM4_KEY)
    assert sealed.count("{") == 3 and sealed.endswith(cp[48:]) and "w01001" not in sealed[:-4]
    assert hj212.is_encrypted(sealed) and hj212.decrypt_cp(sealed, SM4_KEY) == cp
    raw = hj212.encode_packet({"QN": "20260101000000000", "ST": "21", "CN": "2011", "PW": "1", "MN": "M",
                               "Flag": 8}, cp, key=SM4_KEY)
    assert b"w01001" not in raw  # nothing readable on the wire but the tail
    # Without the logger's key the CRC (of the plain segment) cannot match; with it, it does.
    (refused,) = FrameReader().feed(raw)
    assert isinstance(refused, FrameError) and refused.reason == "bad_crc"
    (frame,) = FrameReader(key_for={"M": SM4_KEY}.get).feed(raw)
    assert isinstance(frame, Frame) and hj212.parse_packet(frame.segment).cp == cp
    (wrong,) = FrameReader(key_for={"M": bytes(16)}.get).feed(raw)
    assert isinstance(wrong, FrameError)


values = st.decimals(min_value=-9999, max_value=99999, places=3, allow_nan=False).map(lambda d: f"{d:f}")
codes = st.sampled_from(["w01001", "w01003", "w01010", "w01014", "w99001", "a21004"])


@st.composite
def packets(draw: st.DrawFn) -> tuple[dict[str, str | int], str, int, bool]:
    edition = draw(st.sampled_from([1, 2]))
    flag = edition << 2 | draw(st.integers(0, 1))
    flagged = st.tuples(values, st.sampled_from("NFMSDCTB"))
    factors = draw(st.dictionaries(codes, flagged, min_size=1, max_size=5))
    cp = "DataTime=20260101080000;" + ";".join(f"{c}-Rtd={v},{c}-Flag={f}" for c, (v, f) in factors.items())
    header: dict[str, str | int] = {"QN": "20260101080000123", "ST": "21", "CN": "2011", "PW": "123456",
                                    "MN": draw(st.from_regex(r"[0-9A-F]{24}", fullmatch=True)), "Flag": flag}
    return header, cp, draw(st.integers(1, 3)), draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(packets(), st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_generated_packets_survive_any_tcp_segmentation_splitting_and_encryption(
    generated: tuple[dict[str, str | int], str, int, bool], cuts: list[int]
) -> None:
    header, cp, parts, encrypted = generated
    key = SM4_KEY if encrypted else None
    items = cp.split(";")
    chunks = [items[i::parts] for i in range(parts)]
    wire = b""
    for n, chunk in enumerate(chunks, start=1):
        h = dict(header)
        if parts > 1:
            h["Flag"] = int(h["Flag"]) | 2
            h["PNUM"], h["PNO"] = parts, n
        wire += hj212.encode_packet(h, ";".join(chunk), key=key)
    reader = FrameReader(key_for={str(header["MN"]): SM4_KEY}.get if encrypted else None)
    assembler, whole = hj212.Reassembler(), []
    pos = 0
    for cut in [*cuts, len(wire)]:  # the stream arrives in arbitrary TCP segments
        for item in reader.feed(wire[pos : pos + cut]):
            assert isinstance(item, Frame), item
            done = assembler.add(hj212.parse_packet(item.segment))
            if done is not None:
                whole.append(done)
        pos += cut
    assert len(whole) == 1
    got = hj212.parse_cp(whole[0].cp)
    want = hj212.parse_cp(cp)
    assert got.factors == want.factors and got.data_time == want.data_time


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 236), st.integers(1, 255))
def test_a_corrupted_byte_never_passes_unnoticed_as_the_original(where: int, flip: int) -> None:
    raw = bytearray(EXAMPLES["constructed"])
    where = min(where, len(raw) - 3)  # anything but the CR LF
    raw[where] ^= flip
    reader = FrameReader()
    items = reader.feed(bytes(raw)) + reader.feed(EXAMPLES["constructed"])
    # The corrupted packet is refused (length or CRC), or -- the CRC has 8 bits of strength --
    # taken as a *different* packet; either way the next, intact packet is still framed.
    assert isinstance(items[-1], Frame) and items[-1].segment == EXAMPLES["constructed"][6:-6]
    for item in items[:-1]:
        if isinstance(item, Frame):
            assert item.segment != EXAMPLES["constructed"][6:-6]


def test_a_length_corrupted_upwards_does_not_swallow_the_next_packet() -> None:
    raw = EXAMPLES["constructed"].replace(b"##0231", b"##0331", 1)
    items = FrameReader().feed(raw + EXAMPLES["constructed"])
    assert isinstance(items[-1], Frame) and items[-1].segment == EXAMPLES["constructed"][6:-6]
