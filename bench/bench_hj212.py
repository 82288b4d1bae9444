"""Benchmark: HJ 212 packets/s one `weijian gateway run` takes from 1,000 connected loggers.

Writes a registry of N drinking-water stations read through HJ 212 loggers (profile
``wq-hj212-logger``) served by one gateway, starts a local Mosquitto and the gateway as a child
process (listener on a free port, spool ``fsync = "full"``), opens one TCP connection per logger
from this process, and has every logger send real-time uploads (CN 2011, 6 factors, Flag 5:
reply wanted) back to back, each waiting for its 9014 before the next (as a logger does).
After a warm-up it counts, over a fixed window, the packets answered and the rows committed to
the spool (its ``seq``), and reads the gateway's CPU (user + system) and peak RSS from /proc.
The load generator's own CPU is not counted (it shares the machine's 2 cores).

Run: ``.venv/bin/python bench/bench_hj212.py [--loggers 1000] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from procstat import cpu_seconds, peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import hj212  # noqa: E402
from gateway.spool import last_seq  # noqa: E402
from weijian.demo.local_services import free_port, running_mosquitto  # noqa: E402

CONTACT = '{ name = "测试", phone = "13800000000" }'


def registry(n: int) -> str:
    out = [
        f'[[districts]]\nid = "bench"\nname = "基准区"\nteam = "基准队"\nsupervisors = [{CONTACT}]',
        f'[[units]]\nid = "u"\nname = "基准单位"\nlicence = "X-1"\ndistrict = "bench"\n'
        f"handler = {CONTACT}\nhead = {CONTACT}",
    ]
    metrics = '["ph", "turbidity", "temperature", "conductivity", "free_chlorine", "total_chlorine"]'
    devices = ", ".join(f'{{ id = "s{i:04d}", profile = "wq-hj212-logger", metrics = {metrics} }}'
                        for i in range(n))
    out.append(f'[[sites]]\nid = "hj-water"\nname = "基准水站"\nkind = "drinking_water"\ndistrict = "bench"\n'
               f'unit = "u"\naddress = "基准路1号"\nwater_point = "tap"\ndevices = [{devices}]')
    refs = ", ".join(f'"hj-water/s{i:04d}"' for i in range(n))
    out.append(f'[[gateways]]\nid = "gw-hj"\nname = "基准网关"\ndevices = [{refs}]')
    return "\n\n".join(out) + "\n"


def mn(i: int) -> str:
    return f"{i:024X}"


def config(tmp: Path, broker_port: int, listen: int, n: int) -> str:
    out = [
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\ntopic_root = "bench/v1"',
        f'[registry]\npath = "{tmp / "registry.toml"}"',
        '[gateway]\nid = "gw-hj"\nstatus_interval_s = 30.0\nmetrics_port = 0',
        f'[gateway.spool]\npath = "{tmp / "spool.sqlite"}"\nfsync = "full"\nmax_rows = 5000000',
        f'[gateway.hj212]\nlisten_host = "127.0.0.1"\nlisten_port = {listen}',
    ]
    out += [f'[[gateway.hj212.loggers]]\nmn = "{mn(i)}"\npassword = "123456"\nsite_id = "hj-water"\n'
            f'device_id = "s{i:04d}"\nset_clock = false' for i in range(n)]
    return "\n\n".join(out) + "\n"


def packet(i: int, k: int) -> bytes:
    t = time.gmtime(1_790_000_000 + k * 30)
    stamp = time.strftime("%Y%m%d%H%M%S", t)
    cp = (f"DataTime={stamp};w01001-Rtd=7.21,w01001-Flag=N;w01003-Rtd=0.31,w01003-Flag=N;"
          f"w01010-Rtd=18.6,w01010-Flag=N;w01014-Rtd=412.0,w01014-Flag=N;w99001-Rtd=0.42,w99001-Flag=N;"
          f"w99002-Rtd=0.55,w99002-Flag=N")
    return hj212.encode_packet({"QN": f"{stamp}{k % 1000:03d}", "ST": "21", "CN": "2011", "PW": "123456",
                                "MN": mn(i), "Flag": 5}, cp)


async def logger(i: int, port: int, counts: list[int], stop: asyncio.Event) -> None:
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        return
    frames = hj212.FrameReader()
    k = 0
    try:
        while not stop.is_set():
            writer.write(packet(i, k))
            k += 1
            got = False
            while not got:
                data = await reader.read(4096)
                if not data:
                    return
                got = any(isinstance(f, hj212.Frame) and b"CN=9014;" in f.segment for f in frames.feed(data))
            counts[0] += 1
    finally:
        writer.close()


async def main_async(n: int, seconds: float, warmup: float, profile: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-hj212-") as tmp_s, \
            running_mosquitto(Path(tmp_s) / "mq") as broker:
        tmp = Path(tmp_s)
        (tmp / "registry.toml").write_text(registry(n), encoding="utf-8")
        listen = free_port()
        (tmp / "gateway.toml").write_text(config(tmp, broker.port, listen, n), encoding="utf-8")
        prof = ["-m", "cProfile", "-o", profile] if profile else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *prof, "-m", "weijian", "gateway", "run", "--config", str(tmp / "gateway.toml"),
            stdout=asyncio.subprocess.DEVNULL, stderr=(tmp / "gateway.log").open("wb"))
        stop = asyncio.Event()
        counts = [0]
        tasks = [asyncio.create_task(logger(i, listen, counts, stop)) for i in range(n)]
        await asyncio.sleep(warmup)
        c0, p0, s0, t0 = cpu_seconds(proc.pid), counts[0], last_seq(tmp / "spool.sqlite"), time.monotonic()
        await asyncio.sleep(seconds)
        c1, p1, s1, t1 = cpu_seconds(proc.pid), counts[0], last_seq(tmp / "spool.sqlite"), time.monotonic()
        rss = peak_rss_mb(proc.pid)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        elapsed = t1 - t0
        print("| loggers | window | packets answered/s | rows spooled/s | gateway CPU | peak RSS |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| {n:,} | {elapsed:.1f} s | {(p1 - p0) / elapsed:,.0f} | {(s1 - s0) / elapsed:,.0f} "
              f"| {100 * (c1 - c0) / elapsed:.0f}% of one core | {rss:.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loggers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--profile", metavar="PATH", help="run the gateway under cProfile, stats to PATH")
    args = parser.parse_args()
    asyncio.run(main_async(args.loggers, args.seconds, args.warmup, args.profile))


if __name__ == "__main__":
    main()
