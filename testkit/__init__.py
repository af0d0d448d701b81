"""Fixtures shared by tests/ and bench/: real processes, real TLS, real sockets.

Both tests and benchmarks import this package; neither imports the other's modules
(bench/ never imports tests/)."""
