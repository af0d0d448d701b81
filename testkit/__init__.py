"""Test and benchmark fixtures shared by ``tests/`` and ``bench/``.

The house rule is that ``bench/`` never imports ``tests/``; what both need (the link emulator in
``testkit.link``, process runners) lives here. This package is not part of the product: it is not listed in
pyproject's ``[tool.setuptools.packages.find]`` and is imported from the repository root, which is on
``sys.path`` both for ``python -m bench.x`` run from the root and for pytest (rootdir).
"""
