"""Run `kzgate run` as a real child process and learn its bound ports from its log."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

READY = re.compile(r"kzgate ready: (.*)")


class DaemonProcess:
    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.log: list[str] = []

    async def start(self, timeout: float = 20.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kzgate",
            "run",
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        assert self.proc.stderr is not None
        try:
            await self._await_ready(timeout)
        except BaseException:
            # Never leave a half-started daemon behind.
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            raise
        self._drain = asyncio.create_task(self._read_rest())

    async def _await_ready(self, timeout: float) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise RuntimeError("kzgate exited before ready:\n" + "".join(self.log))
                self.log.append(line)
                match = READY.search(line)
                if match:
                    for part in match.group(1).split(", "):
                        name, _, where = part.partition(" on ")
                        self.ports[name] = int(where.rsplit(":", 1)[1])
                    break

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until a log line containing ``text`` appears; return it."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.log:
                    if text in line:
                        return line
                await asyncio.sleep(0.05)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        await asyncio.gather(self._drain, return_exceptions=True)
        return code
