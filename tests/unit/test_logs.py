import io
import json
import logging

from kzgate.logs import JsonFormatter, setup_logging


def test_json_lines_are_one_object_each() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kzgate.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("task iss=%s id=%s outcome=%s", "mci", "t-1", "applied")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("enforcer nft failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a traceback stays inside its one JSON line
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "task iss=mci id=t-1 outcome=applied"
    assert first["level"] == "warning" and first["logger"] == "kzgate.test.json"
    assert "ValueError: boom" in second["exc"]


def test_setup_logging_sets_level_and_format() -> None:
    setup_logging("warning", "json")
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    setup_logging("info", "text")
    assert root.level == logging.INFO
