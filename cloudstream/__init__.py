"""cloudstream: the cloud half of the tunnel.

The kubelet-API HTTPS server (10003) that the Kubernetes API server reaches, the tunnel
server (10004) that edges dial, and the per-node sessions in between.
"""
