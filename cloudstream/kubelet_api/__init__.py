"""The kubelet API on port 10003: what the Kubernetes API server calls for an edge node."""
