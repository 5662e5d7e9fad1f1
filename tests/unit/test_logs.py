"""Log records kept off the terminal while the console writes a reply, then written after it."""

from __future__ import annotations

import io
import logging
import threading

from bot.app.logs import HoldingHandler


def test_records_held_during_a_reply_follow_it_in_order() -> None:
    stream = io.StringIO()
    handler = HoldingHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.held")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        handler.hold()
        stream.write("ボット> こんに")
        worker = threading.Thread(target=logger.info, args=("from the worker thread",))
        worker.start()
        worker.join()
        logger.warning("from the loop")
        stream.write("ちは\n")
        handler.let_through()
        logger.info("after the reply")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == (
        "ボット> こんにちは\n"
        "INFO from the worker thread\n"
        "WARNING from the loop\n"
        "INFO after the reply\n"
    )
