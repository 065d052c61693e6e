"""What every Python fuzz harness shares: instrumentation, the libFuzzer entry, fixed test keys.

A harness is ``tests/fuzz/py/<name>.py`` (no leading underscore) with:

- ``MAX_LEN``: the ``-max_len`` scripts/fuzz passes (the largest input the transport allows,
  or a stated smaller bound where large inputs would starve the fuzzer; see each harness);
- ``TIMEOUT``: seconds one input may take before libFuzzer reports it as a hang (a finding);
- ``target(data)``: feeds ``data`` to the parser and catches only the parser's own documented
  errors; any other exception, and any broken invariant (an ``AssertionError``), is a finding.

Run by scripts/fuzz as ``python tests/fuzz/py/<name>.py [libFuzzer flags] CORPUS...``; imported
without atheris by tests/fuzz/test_replay.py, which replays the committed corpus through
``target``. The modules under test are imported inside ``instrumented(__name__)`` so that only
a fuzzing run pays for coverage instrumentation.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Fixed keys, so that the committed corpus (signed tasks, TSIG queries) verifies in every run.
TASK_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TASK_KID = "fuzz-mci-1"
TASK_ISSUER = "mci"
OPERATOR = "op-kz-1"
# The RPZ harnesses make their dns.tsig.Key from these after importing dnspython instrumented.
TSIG_NAME = "fuzz-xfr."
TSIG_SECRET = b"k" * 32
RPZ_ORIGIN = "rpz.kzgate."

# Packages whose code the fuzzer's coverage feedback should see: ours; dnspython, which parses
# every RPZ query and NOTIFY reply before our code looks at it; idna, which target domains go
# through. (ipaddress and urllib.parse are imported at interpreter start-up, before any hook.)
INSTRUMENTED = ["kzgate", "dns", "idna"]


@contextlib.contextmanager
def instrumented(module_name: str) -> Iterator[None]:
    """Instrument imports made inside when the harness runs as the fuzzer (its ``__main__``)."""
    if module_name != "__main__":
        yield
        return
    import atheris

    # str.startswith/endswith comparisons feed the fuzzer too. (The "RegEx" hook is not
    # enabled: atheris 3.0's pattern proxy breaks pattern.match(s, pos), which json uses.)
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=INSTRUMENTED):
        yield


def fuzz(target: Callable[[bytes], None]) -> None:
    """Hand ``target`` to libFuzzer with this process's arguments; never returns."""
    import atheris

    # libFuzzer re-runs argv[0] through the shell for -merge=1 (and -fork): make that
    # this interpreter on this script, not the bare script name.
    me = shlex.quote(sys.executable) + " " + shlex.quote(os.path.abspath(sys.argv[0]))
    atheris.Setup([me, *sys.argv[1:]], target)
    atheris.Fuzz()
