"""What both processes share to run and be operated, beside the wire: flags and environment
(``cli``), KubeEdge's YAML configs (``kubeedge_config``), the event loop (``runner``), the admin
port (``admin``) and doctor's probes and report (``doctor``). Imports neither side."""
