"""CRI (Container Runtime Interface) schema used by the edge agent to talk to containerd.

``streamproto/cri/v1/api.proto`` is the project's hand-written subset of the CRI ``runtime.v1`` API;
``streamproto.cri.v1`` holds the Python modules generated from it by ``python -m scripts.cri_gen``.
"""
