"""Generated code only, never hand-edited: CRI ``runtime.v1`` gRPC stubs.

``api_pb2`` (messages), ``api_pb2.pyi`` (type stubs) and ``api_pb2_grpc`` (RuntimeService and
ImageService stubs) are produced from ``api.proto`` by ``python -m scripts.cri_gen``; check that they
are current with ``python -m scripts.cri_gen --check``. Import as::

    from streamproto.cri.v1 import api_pb2, api_pb2_grpc
"""
