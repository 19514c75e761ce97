"""Fault points: named places where the fault-injection tests kill the process, through an environment hook.

``ZSQ_KILL_AT=<point>[:<n>]`` makes the process ``SIGKILL`` itself the ``n``-th time
(default the first) it reaches :func:`point` with that name, e.g.
``ZSQ_KILL_AT=qat.step:5``. Nothing happens when the variable is unset, which is
always the case outside the tests: one dictionary lookup per call. Torch-free, so
the exporters and the device agent can mark their points too.
"""

from __future__ import annotations

import os
import signal

ENV = "ZSQ_KILL_AT"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here (``kill -9``, no cleanup, no ``finally``) if ``ZSQ_KILL_AT`` names this point and its count is reached."""
    want = os.environ.get(ENV)
    if not want:
        return
    target, _, nth = want.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
