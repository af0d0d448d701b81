"""The egress-selector front: kube-apiserver's own way to route its kubelet traffic
(``--egress-selector-config-file``, egress ``cluster``, HTTP CONNECT over mTLS or a unix socket).

``settings`` (the flags and their frozen config), ``connect`` (the CONNECT head and where a
target goes, sans I/O), ``front`` (the listeners and one task per connection), ``splice``
(direct targets), ``command`` (``cloudstream egress-config``). Kept import-light: config.py
imports ``settings``.
"""
