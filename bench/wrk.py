"""wrk as the closed-loop load generator: installed on demand, fed pre-signed Jodo webhooks.

wrk's Lua cannot compute an HMAC, so the bench signs the requests beforehand: a data file
holds one `signature body` per line, which the script turns into ready-made requests at start
and sends in turn, each with its own event.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench import payloads

_MARK = "BENCH-JSON "

_SCRIPT = """\
local requests = {}
local next_request = 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    local signature, body = line:match("^(%x+) (.*)$")
    headers["X-Jodo-Signature"] = signature
    requests[#requests + 1] = wrk.format("POST", args[2], headers, body)
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
    .. '"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    "MARK", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
""".replace("MARK", _MARK)


def ensure_installed() -> tuple[str | None, str]:
    """wrk's path, installing Debian's package when it is missing and apt-get can; else why not."""
    found = shutil.which("wrk")
    if found:
        return found, "wrk found on PATH"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None, "wrk is missing and apt-get is not usable here (not root or no apt-get)"
    for step in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        result = subprocess.run(step, capture_output=True, timeout=300, check=False)
        if step[1] == "install" and result.returncode == 0 and shutil.which("wrk"):
            return shutil.which("wrk"), "wrk installed with apt-get"
    return None, "wrk is missing and 'apt-get install -y wrk' failed"


def write_inputs(folder: Path, series: int, count: int) -> tuple[Path, Path]:
    """The Lua script and `count` signed requests (each its own event) for it; their paths."""
    script = folder / "jodo.lua"
    script.write_text(_SCRIPT)
    data = folder / f"jodo-{series:x}.txt"
    with data.open("wb") as out:
        for index in range(count):
            raw = payloads.body(series, index)
            out.write(payloads.sign(raw).encode() + b" " + raw + b"\n")
    return script, data


async def run(
    wrk: str, port: int, script: Path, data: Path, *, seconds: float, connections: int
) -> dict[str, Any]:
    """One wrk run (one thread) against the Jodo endpoint; rate of 2xx answers and latencies."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{payloads.PATH}",
        "--",
        str(data),
        payloads.PATH,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(_MARK):
            result: dict[str, Any] = orjson.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no summary:\n{text[-2000:]}")
    failed = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    result["ok"] = result["requests"] - failed
    result["seconds"] = result["duration_us"] / 1e6
    result["rate"] = result["ok"] / result["seconds"]
    return result
