"""kubeedge-stream protocol core, shared by cloudstream and edgestream.

``streamproto.tunnel`` is KubeEdge's stream-tunnel wire protocol (framing, connect payloads, the
multiplexer state): pure and sans-I/O, it imports no asyncio, socket, ssl or grpc
(``tests/unit/proto/test_purity.py`` proves it). ``streamproto.aio`` is the thin asyncio layer both
sides share. ``streamproto.cri`` holds the generated CRI gRPC schema.
"""
