"""The offline bundle (`kubeedge-stream bundle build|verify`): wheelhouse, OCI images, manifests, edge
install script, checksums. Build-time tooling only: cloudstream and edgestream never import it."""
