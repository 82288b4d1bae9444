"""Acceptance run (issue 14): forwarding to two upstream platforms, one down for 10 minutes.

Starts a local Mosquitto, two upstream platforms (TCP listeners in this process that record
every packet and answer 9014), and `weijian gateway run` as a child process with both as
``[[gateway.hj212.upstreams]]``. Ten loggers send real-time uploads (CN 2011, Flag 5) through
the gateway for ``--minutes`` (default 14), each waiting for its 9014, one upload every
``--every`` seconds. Upstream "province" is stopped (listener and connection) from
``--up-first`` seconds (default 120) for ``--down`` minutes (default 10). At the end it waits
for both upstreams to hold every packet and prints, per upstream, the packets received,
whether they are exactly the loggers' packets in order (per logger), and the duplicates a
reconnection caused. Exit 0 when both hold every packet in order.

Run: ``.venv/bin/python bench/acceptance_hj212_forward.py [--minutes 14] [--down 10] [--every 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_hj212 import mn, packet, registry  # noqa: E402

from gateway import hj212  # noqa: E402
from tests.gateway.hj212_upstream import Upstream  # noqa: E402
from weijian.demo.local_services import free_port, running_mosquitto  # noqa: E402

LOGGERS = 10


class Platform(Upstream):
    """An upstream (tests/gateway/hj212_upstream.py) with a name for the verdict."""

    def __init__(self, name: str) -> None:
        super().__init__(free_port())
        self.name = name


async def send(i: int, port: int, every: float, until: float, sent: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = hj212.FrameReader()
    k = 0
    while time.monotonic() < until:
        data = packet(i, k)
        writer.write(data)
        async with asyncio.timeout(30):
            while not any(isinstance(f, hj212.Frame) and b"CN=9014;" in f.segment
                          for f in frames.feed(await reader.read(4096))):
                pass
        sent.append(data)
        k += 1
        await asyncio.sleep(every)
    writer.close()


def verdict(platform: Platform, sent: dict[int, list[bytes]]) -> bool:
    ok = True
    for i, packets in sent.items():
        tag = f"MN={mn(i)};".encode()
        got = [p for p in platform.packets if tag in p]
        unique = list(dict.fromkeys(got))
        in_order = unique == packets
        ok &= in_order
        if not in_order:
            print(f"  {platform.name}: logger {i}: {len(unique)} distinct of {len(packets)}, not in order")
    dups = len(platform.packets) - len(set(platform.packets))
    print(f"{platform.name}: {len(platform.packets)} packets received, {dups} duplicates "
          f"(re-sent after a reconnection), every packet in order: {ok}")
    return ok


async def main_async(minutes: float, down: float, every: float, up_first: float) -> int:
    with tempfile.TemporaryDirectory(prefix="acc-hj212-") as tmp_s, \
            running_mosquitto(Path(tmp_s) / "mq") as broker:
        tmp = Path(tmp_s)
        county, province = Platform("county"), Platform("province")
        await county.start()
        await province.start()
        (tmp / "registry.toml").write_text(registry(LOGGERS), encoding="utf-8")
        listen = free_port()
        loggers = "\n\n".join(f'[[gateway.hj212.loggers]]\nmn = "{mn(i)}"\npassword = "123456"\n'
                              f'site_id = "hj-water"\ndevice_id = "s{i:04d}"\nset_clock = false'
                              for i in range(LOGGERS))
        upstreams = "\n\n".join(f'[[gateway.hj212.upstreams]]\nname = "{p.name}"\nhost = "127.0.0.1"\n'
                                f"port = {p.port}\ntimeout_s = 5" for p in (county, province))
        (tmp / "gateway.toml").write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntopic_root = "acc/v1"\n\n'
            f'[registry]\npath = "{tmp / "registry.toml"}"\n\n'
            f'[gateway]\nid = "gw-hj"\nmetrics_port = false\n\n'
            f'[gateway.spool]\npath = "{tmp / "spool.sqlite"}"\n\n'
            f'[gateway.hj212]\nlisten_host = "127.0.0.1"\nlisten_port = {listen}\n\n'
            f"{loggers}\n\n{upstreams}\n",
            encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "weijian", "gateway", "run", "--config", str(tmp / "gateway.toml"),
            stdout=asyncio.subprocess.DEVNULL, stderr=(tmp / "gateway.log").open("wb"))
        await asyncio.sleep(2.0)
        start = time.monotonic()
        sent: dict[int, list[bytes]] = {i: [] for i in range(LOGGERS)}
        senders = [asyncio.create_task(send(i, listen, every, start + minutes * 60, sent[i]))
                   for i in range(LOGGERS)]
        await asyncio.sleep(up_first)
        await province.stop()
        print(f"province down at {time.monotonic() - start:.0f} s", flush=True)
        await asyncio.sleep(down * 60)
        await province.start()
        print(f"province up again at {time.monotonic() - start:.0f} s", flush=True)
        await asyncio.gather(*senders)
        total = sum(len(v) for v in sent.values())
        deadline = time.monotonic() + 120
        behind = lambda: min(len(set(county.packets)), len(set(province.packets))) < total  # noqa: E731
        while time.monotonic() < deadline and behind():  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        print(f"loggers sent {total} packets in {minutes:g} min; caught up "
              f"{time.monotonic() - start - minutes * 60:.1f} s after the last")
        ok = verdict(county, sent) & verdict(province, sent)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await county.stop()
        await province.stop()
        return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--down", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--up-first", type=float, default=120.0, help="seconds before the outage")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args.minutes, args.down, args.every, args.up_first)))


if __name__ == "__main__":
    main()
