"""Reading KubeEdge's own config files: ``cloudcore.yaml`` and ``edgecore.yaml``.

Pure (no I/O beyond the read the caller asks for): returns the settings found, under our
field names, so each side's config merges them as ``defaults < file < command line``.
Durations are seconds (KubeEdge writes ints for its own fields, Go durations like "2m"
inside the kubelet config).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from streamproto.tunnel.errors import ConfigError

__all__ = ["cloudhub_advertised", "cloudstream_settings", "edgestream_settings", "load_yaml", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no configuration object")
    return data


def parse_duration(value: object) -> float | None:
    """``30`` (seconds), ``"2m"``, ``"1m30s"``, ``"500ms"`` -> seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{value!r} is not a duration")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _section(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) or {}
        if not isinstance(data, dict):
            return {}
    return data


def cloudstream_settings(data: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(``modules.cloudStream.enable``, our CloudConfig fields found in the file)."""
    cs = _section(data, "modules", "cloudStream")
    mapping = {
        "streamPort": "stream_port",
        "tunnelPort": "tunnel_port",
        "tlsTunnelCAFile": "tls_tunnel_ca_file",
        "tlsTunnelCertFile": "tls_tunnel_cert_file",
        "tlsTunnelPrivateKeyFile": "tls_tunnel_private_key_file",
        "tlsStreamCAFile": "tls_stream_ca_file",
        "tlsStreamCertFile": "tls_stream_cert_file",
        "tlsStreamPrivateKeyFile": "tls_stream_private_key_file",
    }
    out: dict[str, Any] = {}
    for key, field in mapping.items():
        if cs.get(key) not in (None, ""):
            out[field] = Path(cs[key]) if field.startswith("tls_") else int(cs[key])
    return bool(cs.get("enable", False)), out


def cloudhub_advertised(data: dict[str, Any]) -> list[str]:
    """The addresses edges dial the cloud at: ``modules.cloudHub.advertiseAddress`` and
    ``dnsNames`` (keadm writes both into cloudcore's server certificate as SANs)."""
    hub = _section(data, "modules", "cloudHub")
    out: list[str] = []
    for key in ("advertiseAddress", "dnsNames"):
        values = hub.get(key) or []
        out += [str(v) for v in (values if isinstance(values, list) else [values]) if str(v).strip()]
    return out


def edgestream_settings(data: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(``modules.edgeStream.enable``, our EdgeConfig fields found in the file)."""
    es = _section(data, "modules", "edgeStream")
    edged = _section(data, "modules", "edged")
    out: dict[str, Any] = {}
    if es.get("server"):
        out["server"] = str(es["server"])
    for key, field in (
        ("tlsTunnelCAFile", "tls_tunnel_ca_file"),
        ("tlsTunnelCertFile", "tls_tunnel_cert_file"),
        ("tlsTunnelPrivateKeyFile", "tls_tunnel_private_key_file"),
    ):
        if es.get(key):
            out[field] = Path(es[key])
    if es.get("handshakeTimeout") is not None:
        out["handshake_timeout"] = parse_duration(es["handshakeTimeout"])
    if edged.get("hostnameOverride"):
        out["node_name"] = str(edged["hostnameOverride"])
    if edged.get("nodeIP"):
        out["node_ip"] = str(edged["nodeIP"])
    # The CRI endpoint moved over KubeEdge's versions: newest first.
    kubelet_config = _section(data, "modules", "edged", "tailoredKubeletConfig")
    kubelet_flags = _section(data, "modules", "edged", "tailoredKubeletFlag")
    endpoint = (
        kubelet_config.get("containerRuntimeEndpoint")
        or kubelet_flags.get("remoteRuntimeEndpoint")
        or edged.get("remoteRuntimeEndpoint")
    )
    if endpoint:
        out["cri_endpoint"] = str(endpoint)
    timeout = kubelet_config.get("runtimeRequestTimeout") or edged.get("runtimeRequestTimeout")
    if timeout:
        out["cri_timeout"] = parse_duration(timeout)
    return bool(es.get("enable", False)), out
