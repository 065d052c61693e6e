"""kzgate's tests, a package tree that mirrors kzgate/ (README, "Layout").

tests/unit/dns/test_engine.py tests kzgate/dns/engine.py and is imported as
tests.unit.dns.test_engine: pytest puts the repository root on sys.path
(pyproject.toml, pythonpath), so test files may share a basename, and helpers
come from tests.support. Every folder of tests but fuzz/ needs its __init__.py:
without one, pytest would put that folder itself on sys.path, and
tests/unit/dns/ would hide dnspython's ``dns`` package.
"""
