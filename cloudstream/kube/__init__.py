"""cloudstream and the Kubernetes API: KubeEdge's tunnel-port scheme (``kubeedge/tunnelport``),
the kubelet endpoint port of connected nodes. Optional: needs the ``[kube]`` extra, imported lazily."""
