"""Moved to :mod:`testkit.k8s_ws` (bench/ uses it too); re-exported here so tests keep their imports."""

from testkit.k8s_ws import ExecResult, open_ws, run_exec  # noqa: F401
