"""Moved to :mod:`testkit.cri` (bench.cri_logs uses it too); re-exported here so tests keep their imports."""

from testkit.cri import *  # noqa: F401,F403
from testkit.cri import BUSYBOX_IMAGE, DEFAULT_TIMEOUT, PAUSE_IMAGE, RealStack  # noqa: F401
