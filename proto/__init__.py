"""kubeedge-stream protocol core, shared by cloudstream and edgestream.

``proto.tunnel`` is KubeEdge's stream-tunnel wire protocol (framing, connect payloads, the
multiplexer state): pure and sans-I/O, it imports no asyncio, socket, ssl or grpc
(``tests/unit/proto/test_purity.py`` proves it). ``proto.aio`` is the thin asyncio layer both
sides share. ``proto.cri`` holds the generated CRI gRPC schema.
"""
