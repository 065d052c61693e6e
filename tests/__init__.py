"""kzgate's tests, a package tree that mirrors kzgate/ (README, "Layout").

tests/unit/dns/test_engine.py tests kzgate/dns/engine.py and is imported as
tests.unit.dns.test_engine: pytest puts the repository root on sys.path
(pyproject.toml, pythonpath), so test files may share a basename, and helpers
come from tests.support. Every folder of tests but fuzz/ needs its __init__.py
(conftest.py refuses to run without): where one is missing, pytest puts that
folder on sys.path instead of the root, and a tests/unit/ there would let
tests/unit/dns/ hide dnspython's ``dns`` package.
"""
