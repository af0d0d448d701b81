"""Baselines measured in the same run as the tunnel (see bench/README.md):

- ``raw_relay``: client -TLS-> relay -TLS-> a generator "edge": bytes only, no tunnel framing,
  no multiplexing (one upstream connection per client connection), asyncio Protocols on uvloop.
- ``kubeedge_style``: a cloud and an edge that do what Go KubeEdge's stream does (256-byte
  DATA messages, one WebSocket message and one flush each, one read loop per tunnel).
"""
