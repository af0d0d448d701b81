"""Kubernetes manifests pinned to the bundle's image digests.

cloudstream runs like KubeEdge's cloudcore: one replica with hostNetwork on a control-plane node, as
an unprivileged user, its PKI from a Secret. The iptables manager is a DaemonSet on the same nodes
(hostNetwork, root with only NET_ADMIN) that runs ``cloudstream iptables sync`` every 30 s with the
edge nodes from a ConfigMap (``kubectl get nodes`` output, README), DNATing to its own node's IP.
"""

from __future__ import annotations

import re

from streambundle.layout import ImageEntry

IMAGE_LINE = re.compile(r"^(\s*(?:-\s+)?image:\s*)(\S+)(\s*)$", re.MULTILINE)
ROLE_OF_REPO = {"kubeedge-stream": "cloudstream", "cloudstream": "cloudstream", "iptables-manager": "iptables-manager"}

NAMESPACE = "kubeedge-stream"
ADMIN_PORT = 10550
LABELS = "app.kubernetes.io/part-of: kubeedge-stream"

NAMESPACE_YAML = f"""apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    {LABELS}
"""


def _ref(image: ImageEntry) -> str:
    return f"{image.name.rsplit(':', 1)[0]}@{image.digest}"


def cloudstream_yaml(image: ImageEntry) -> str:
    return f"""# cloudstream: the kubelet API for edge nodes (10003) and the edges' tunnel (10004).
# Its certificates: `streamcerts init` / `streamcerts issue` on site, then
#   kubectl -n {NAMESPACE} create secret generic cloudstream-pki --from-file=<pki dir files>
apiVersion: v1
kind: ServiceAccount
metadata:
  name: cloudstream
  namespace: {NAMESPACE}
  labels:
    {LABELS}
automountServiceAccountToken: false  # cloudstream calls no Kubernetes API: no Role to bind
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cloudstream
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: cloudstream
    {LABELS}
spec:
  replicas: 1
  strategy:
    type: Recreate  # hostNetwork ports: the old pod must free them first
  selector:
    matchLabels:
      app.kubernetes.io/name: cloudstream
  template:
    metadata:
      labels:
        app.kubernetes.io/name: cloudstream
        {LABELS}
    spec:
      serviceAccountName: cloudstream
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      nodeSelector:
        node-role.kubernetes.io/control-plane: "true"
      tolerations:
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: cloudstream
        image: {_ref(image)}
        imagePullPolicy: IfNotPresent
        args: ["--pki-dir", "/etc/kubeedge-stream/pki", "--stream-port", "10003", "--tunnel-port", "10004",
               "--admin-port", "{ADMIN_PORT}", "--admin-address", "127.0.0.1"]
        ports:
        - {{name: kubelet-api, containerPort: 10003, protocol: TCP}}
        - {{name: tunnel, containerPort: 10004, protocol: TCP}}
        # the admin port stays on the node's loopback (its /debug is unauthenticated); the kubelet
        # probes a hostNetwork pod there
        readinessProbe:
          httpGet: {{host: 127.0.0.1, port: {ADMIN_PORT}, path: /readyz}}
          periodSeconds: 10
        livenessProbe:
          httpGet: {{host: 127.0.0.1, port: {ADMIN_PORT}, path: /healthz}}
          periodSeconds: 20
          failureThreshold: 3
        resources:
          requests: {{cpu: 100m, memory: 128Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
        volumeMounts:
        - {{name: pki, mountPath: /etc/kubeedge-stream/pki, readOnly: true}}
      volumes:
      - name: pki
        secret:
          secretName: cloudstream-pki
---
apiVersion: v1
kind: Service
metadata:
  name: cloudstream
  namespace: {NAMESPACE}
  labels:
    {LABELS}
spec:
  selector:
    app.kubernetes.io/name: cloudstream
  ports:
  - {{name: kubelet-api, port: 10003, targetPort: 10003, protocol: TCP}}
  - {{name: tunnel, port: 10004, targetPort: 10004, protocol: TCP}}
"""


def iptables_yaml(image: ImageEntry) -> str:
    return f"""# iptables manager: DNAT nodeIP:10250 -> this node's cloudstream kubelet API (10003), for the
# edge nodes listed in the ConfigMap (one NAME=IP per line), e.g.
#   kubectl get nodes -l node-role.kubernetes.io/edge -o jsonpath='{{range .items[*]}}{{.metadata.name}}={{.status.addresses[?(@.type=="InternalIP")].address}}{{"\\n"}}{{end}}' > nodes
#   kubectl -n {NAMESPACE} create configmap edge-nodes --from-file=nodes --dry-run=client -o yaml | kubectl apply -f -
# (or run cloudstream with --manage-iptables instead, which follows the connected edges itself)
apiVersion: v1
kind: ServiceAccount
metadata:
  name: iptables-manager
  namespace: {NAMESPACE}
  labels:
    {LABELS}
automountServiceAccountToken: false  # reads a mounted ConfigMap, calls no API
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: edge-nodes
  namespace: {NAMESPACE}
  labels:
    {LABELS}
data:
  nodes: |
    # NAME=IP, one per line
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: iptables-manager
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: iptables-manager
    {LABELS}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: iptables-manager
  template:
    metadata:
      labels:
        app.kubernetes.io/name: iptables-manager
        {LABELS}
    spec:
      serviceAccountName: iptables-manager
      hostNetwork: true
      nodeSelector:
        node-role.kubernetes.io/control-plane: "true"
      tolerations:
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      containers:
      - name: iptables-manager
        image: {_ref(image)}
        imagePullPolicy: IfNotPresent
        command: ["/bin/sh", "-c"]
        args:
        - |
          trap 'exit 0' TERM
          while true; do
            cloudstream iptables sync --node-file /etc/kubeedge-stream/nodes/nodes --to-address "$HOST_IP" --stream-port 10003
            sleep 30 & wait $!
          done
        env:
        - name: HOST_IP
          valueFrom:
            fieldRef: {{fieldPath: status.hostIP}}
        resources:
          requests: {{cpu: 10m, memory: 32Mi}}
        securityContext:
          runAsUser: 0
          allowPrivilegeEscalation: false
          capabilities:
            drop: ["ALL"]
            add: ["NET_ADMIN"]  # enough for iptables-nft; a host whose rules are in iptables-legacy needs
                                # NET_RAW too (legacy talks to the kernel over a raw socket)
        volumeMounts:
        - {{name: nodes, mountPath: /etc/kubeedge-stream/nodes, readOnly: true}}
        - {{name: xtables-lock, mountPath: /run/xtables.lock}}
      volumes:
      - name: nodes
        configMap:
          name: edge-nodes
      - name: xtables-lock
        hostPath:
          path: /run/xtables.lock
          type: FileOrCreate
"""


def pin_images(text: str, images: dict[str, ImageEntry]) -> str:
    """The project's own manifests (deploy/kubernetes) with each of our image references replaced by the
    bundle's digest reference (role -> image); other images stay as they are (verify names them)."""
    def pin(m: re.Match[str]) -> str:
        repo = m.group(2).split("@", 1)[0]
        last = repo.rsplit("/", 1)[-1].split(":", 1)[0]
        role = ROLE_OF_REPO.get(last)
        if role is None or role not in images:
            return m.group(0)
        return f"{m.group(1)}{_ref(images[role])}{m.group(3)}"
    return IMAGE_LINE.sub(pin, text)
