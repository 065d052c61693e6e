"""Run every fuzzer (atheris harnesses in tests/fuzz/py, libFuzzer ones from tests/fuzz/c).

Called by scripts/fuzz (see its --help). Per fuzzer it runs libFuzzer for a bounded time on
the committed corpus (tests/fuzz/corpus/<name>, read only) plus a work corpus that collects
the new interesting inputs (<work>/corpus/<name>); crashing, hanging or out-of-memory inputs
are saved under <work>/findings/. It prints executions, seconds, new inputs and findings per
fuzzer, and exits 1 when any fuzzer found something or failed to run.

C harnesses (the contract with tests/fuzz/c): when tests/fuzz/c/build.sh exists it is run as
``build.sh OUTDIR`` and must succeed and leave an executable OUTDIR/<name> for every
tests/fuzz/c/<name>.c. libFuzzer flags for one (e.g. ``-max_len=65535``) may be given in
tests/fuzz/c/<name>.options, one per line; otherwise -max_len=65535 (a TCP DNS message) and
-timeout=5. A <name>.dict next to a harness is passed as -dict.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PY_DIR = ROOT / "tests/fuzz/py"
C_DIR = ROOT / "tests/fuzz/c"
CORPUS = ROOT / "tests/fuzz/corpus"
C_DEFAULTS = {"max_len": "65535", "timeout": "5"}
FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")


@dataclass
class Fuzzer:
    name: str
    kind: str  # "py" or "c"
    command: list[str]  # the harness, without flags or corpora
    flags: dict[str, str] = field(default_factory=dict)  # libFuzzer -key=value
    dict_file: Path | None = None


@dataclass
class Result:
    fuzzer: Fuzzer
    execs: int | None = None
    seconds: float = 0.0
    new_inputs: int = 0
    findings: list[Path] = field(default_factory=list)
    error: str = ""
    log: Path | None = None

    @property
    def failed(self) -> bool:
        return bool(self.findings or self.error)


def _constant(path: Path, name: str) -> str:
    """A harness's module-level integer constant (MAX_LEN, TIMEOUT), read without importing."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value = ast.literal_eval(_fold(node.value))
            if isinstance(value, int):
                return str(value)
    raise SystemExit(f"{path}: no integer {name} = ... at module level")


def _fold(node: ast.expr) -> ast.expr:
    """Constant-fold the small arithmetic harnesses use (1 << 20, 65535 + 1)."""
    if isinstance(node, ast.BinOp):
        left, right = ast.literal_eval(_fold(node.left)), ast.literal_eval(_fold(node.right))
        ops = {ast.Add: int.__add__, ast.LShift: int.__lshift__, ast.Mult: int.__mul__}
        return ast.Constant(ops[type(node.op)](left, right))
    return node


def python_fuzzers() -> list[Fuzzer]:
    out = []
    for path in sorted(PY_DIR.glob("[!_]*.py")):
        flags = {
            "max_len": _constant(path, "MAX_LEN"),
            "timeout": _constant(path, "TIMEOUT"),
        }
        out.append(Fuzzer(path.stem, "py", [sys.executable, str(path)], flags, _dict(path)))
    return out


def _dict(source: Path) -> Path | None:
    path = source.with_suffix(".dict")
    return path if path.exists() else None


def c_fuzzers(bin_dir: Path) -> tuple[list[Fuzzer], str]:
    """Build and list the C harnesses; an error text when the build or a binary is missing."""
    sources = sorted(C_DIR.glob("*.c"))
    build = C_DIR / "build.sh"
    if not build.exists():
        return [], ""
    bin_dir.mkdir(parents=True, exist_ok=True)
    print(f"== building C fuzzers: {build.relative_to(ROOT)} {bin_dir}", flush=True)
    done = subprocess.run([str(build), str(bin_dir)], cwd=ROOT, check=False)
    if done.returncode != 0:
        return [], f"tests/fuzz/c/build.sh failed (exit {done.returncode})"
    out = []
    for source in sources:
        binary = bin_dir / source.stem
        if not os.access(binary, os.X_OK):
            return [], f"tests/fuzz/c/build.sh did not build {binary}"
        flags = dict(C_DEFAULTS)
        options = source.with_suffix(".options")
        if options.exists():
            for line in options.read_text(encoding="utf-8").splitlines():
                match = re.fullmatch(r"\s*-(\w+)=(\S+)\s*", line)
                if match:
                    flags[match[1]] = match[2]
                elif line.strip() and not line.lstrip().startswith("#"):
                    return [], f"{options}: not a -flag=value line: {line!r}"
        out.append(Fuzzer(source.stem, "c", [str(binary)], flags, _dict(source)))
    return out, ""


def _count(directory: Path) -> int:
    return sum(1 for p in directory.iterdir() if p.is_file()) if directory.is_dir() else 0


def _findings(directory: Path, name: str) -> set[Path]:
    prefix = f"{name}-"
    return {
        p
        for p in directory.glob(f"{prefix}*")
        if p.name[len(prefix) :].startswith(FINDING_PREFIXES)
    }


def _execs(log: str) -> int | None:
    for pattern in (
        r"stat::number_of_executed_units: (\d+)",
        r"Done (\d+) runs in",
    ):
        match = re.search(pattern, log)
        if match:
            return int(match[1])
    status = re.findall(r"^#(\d+)\s", log, re.MULTILINE)
    return int(status[-1]) if status else None


def run_one(fuzzer: Fuzzer, seconds: int, work: Path, merge: bool) -> Result:
    corpus = work / "corpus" / fuzzer.name
    findings = work / "findings"
    logs = work / "logs"
    for d in (corpus, findings, logs):
        d.mkdir(parents=True, exist_ok=True)
    committed = CORPUS / fuzzer.name
    before_inputs, before_findings = _count(corpus), _findings(findings, fuzzer.name)
    fuzzer_flags = [f"-{k}={v}" for k, v in fuzzer.flags.items()]
    flags = [
        *fuzzer_flags,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={findings}/{fuzzer.name}-",
        "-print_final_stats=1",
    ]
    if fuzzer.dict_file is not None:
        flags.append(f"-dict={fuzzer.dict_file}")
    corpora = [str(corpus)] + ([str(committed)] if committed.is_dir() else [])
    result = Result(fuzzer, log=logs / f"{fuzzer.name}.log")
    env = dict(os.environ)
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    start = time.monotonic()
    with result.log.open("w", encoding="utf-8") as log:
        try:
            done = subprocess.run(
                [*fuzzer.command, *flags, *corpora],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Start-up and corpus loading come on top of -max_total_time; a fuzzer
                # still running long after it is hung outside any one input.
                timeout=2 * seconds + 120,
                check=False,
            )
            rc = done.returncode
        except subprocess.TimeoutExpired:
            rc = None
    result.seconds = time.monotonic() - start
    text = result.log.read_text(encoding="utf-8", errors="replace")
    result.execs = _execs(text)
    result.new_inputs = _count(corpus) - before_inputs
    # New files, and any the log names (the same input found again has the same name).
    written = {Path(p) for p in re.findall(r"Test unit written to (\S+)", text)}
    found = (_findings(findings, fuzzer.name) - before_findings) | {
        p for p in written if p.exists()
    }
    result.findings = sorted(found)
    if rc is None:
        result.error = f"did not finish within {2 * seconds + 120} s"
    elif rc != 0 and not result.findings:
        result.error = f"exited {rc} without saving an input"
    if merge and committed.is_dir() and not result.failed:
        done = subprocess.run(
            [*fuzzer.command, "-merge=1", *fuzzer_flags, str(committed), str(corpus)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            result.error = f"merge into {committed} failed (exit {done.returncode})"
    return result


def report(result: Result) -> str:
    f = result.fuzzer
    execs = "?" if result.execs is None else f"{result.execs:,}"
    line = (
        f"{f.name:<22} {f.kind:<2} max_len={f.flags.get('max_len', '?'):<8} "
        f"{execs:>12} execs {result.seconds:6.1f} s  +{result.new_inputs} inputs  "
        f"findings: {len(result.findings)}"
    )
    if result.error:
        line += f"  ERROR: {result.error}"
    return line


def details(result: Result) -> str:
    assert result.log is not None
    lines = result.log.read_text(encoding="utf-8", errors="replace").splitlines()
    tail = [ln for ln in lines if not ln.startswith(("#", '"', "INFO:"))][-40:]
    out = [f"--- {result.fuzzer.name}: log {result.log}", *tail]
    for path in result.findings:
        reproduce = " ".join([*result.fuzzer.command, str(path)])
        out.append(f"saved input: {path}\n  reproduce: {reproduce}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per fuzzer (default 60)")
    parser.add_argument("--jobs", type=int, default=2, help="fuzzers at once (default 2)")
    parser.add_argument("--work", type=Path, default=ROOT / "var/fuzz", help="work directory")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="merge new interesting inputs into the committed corpus (tests/fuzz/corpus)",
    )
    parser.add_argument("--list", action="store_true", help="list the fuzzers and exit")
    parser.add_argument("names", nargs="*", help="fuzzers to run (default: all)")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.jobs < 1:
        parser.error("--seconds and --jobs must be at least 1")
    work = args.work.resolve()

    fuzzers = python_fuzzers()
    c_list, c_error = c_fuzzers(work / "c-bin")
    if c_error:
        print(f"scripts/fuzz: {c_error}", file=sys.stderr)
        return 1
    fuzzers += c_list
    if args.list:
        for f in fuzzers:
            print(f"{f.name} ({f.kind}, max_len={f.flags['max_len']})")
        return 0
    known = {f.name: f for f in fuzzers}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown fuzzer(s): {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.names] if args.names else fuzzers

    print(
        f"== fuzzing {len(chosen)} fuzzers for {args.seconds} s each, {args.jobs} at once "
        f"(work: {work})",
        flush=True,
    )
    start = time.monotonic()
    results = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, f, args.seconds, work, args.merge) for f in chosen]
        for future in futures:
            result = future.result()
            results.append(result)
            print(report(result), flush=True)
    failed = [r for r in results if r.failed]
    for result in failed:
        print(details(result), file=sys.stderr)
    total = sum(r.execs or 0 for r in results)
    print(
        f"== {len(results)} fuzzers, {total:,} executions in {time.monotonic() - start:.0f} s; "
        f"{len(failed)} with findings or errors",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
