"""Moved to :mod:`testkit.processes` (bench/ uses it too and never imports tests/); re-exported
here so every test keeps its imports."""

from testkit.processes import (  # noqa: F401
    MS,
    READY,
    ROOT,
    TUNNEL_UP,
    Process,
    Response,
    apiserver_tls,
    kubelet_request,
    start_cloud,
    start_edge,
)
