"""Command lines of the installed programs: ``--version``, environment overrides, help with defaults.

Every program builds its parser with :class:`Parser`. Then, for every flag, whoever adds it:

* ``PROG_FLAG_NAME`` in the environment is taken when the flag is not on the command line
  (``CLOUDSTREAM_TUNNEL_PORT=10005`` for ``cloudstream --tunnel-port``; ``edgestream emulate
  --nodes`` reads ``EDGESTREAM_EMULATE_NODES``). The value goes through the flag's own ``type``
  and ``choices``; switches take ``1/true/yes/on`` or ``0/false/no/off``; repeatable flags take
  several values separated by whitespace. So the precedence is flag > environment > config file
  (``--config``/``--profile``, read after parsing) > built-in default.
* ``--help`` shows the variable beside each flag, and the default when the flag has a fixed one
  and its help does not state it already (flags that default to ``None`` so that a config file
  can fill them must say their default in their help: ``tests/unit/test_cli_flags.py`` checks).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

__all__ = ["DISTRIBUTION", "ENV_EPILOG", "Parser", "env_name", "version"]

DISTRIBUTION = "kubeedge-stream"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
ENV_EPILOG = (
    "Every flag can also be set by the environment variable shown beside it; "
    "a flag on the command line wins over the environment, which wins over the config file."
)
_UNSET: Any = object()  # a dest's value before parsing: still there after it = "not on the command line"


def version() -> str:
    """The installed distribution's version (a source tree that is not installed says so)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed)"


def env_name(prog: str, action: argparse.Action) -> str | None:
    """``cloudstream`` + ``--tunnel-port`` -> ``CLOUDSTREAM_TUNNEL_PORT``; None for positionals,
    ``--help``, ``--version`` and sub-command choosers."""
    if not action.option_strings or isinstance(action, _NO_ENV):
        return None
    longest = max(action.option_strings, key=len).lstrip("-")
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{prog}_{longest}").upper()


_NO_ENV = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
_ACCUMULATE = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction)


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` where the help does not state a default, and the flag's variable."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and not isinstance(action, _NO_ENV) and "default" not in text.lower():
            if action.nargs == 0:  # a switch
                text += " (default: off)" if action.default in (False, None) else " (default: on)"
            elif action.default not in (None, argparse.SUPPRESS, []):
                text += " (default: %(default)s)"
        name = env_name(self._prog, action)
        return f"{text} [env {name}]" if name else text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with ``--version`` and an environment variable for every flag.

    Sub-command parsers (``add_subparsers``) are of this class too and read their own prefix
    (``prog`` of the sub-command, e.g. ``STREAMCERTS_LAB_DIR``).
    """

    def __init__(self, *args: Any, environ: Mapping[str, str] | None = None, with_version: bool = True,
                 **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.environ = environ
        if with_version:
            self.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                              help="print the version and exit")

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _SubParser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(  # type: ignore[override]  # typeshed overloads the namespace argument
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        environ = os.environ if self.environ is None else self.environ
        ns = argparse.Namespace() if namespace is None else namespace
        overrides: dict[str, tuple[argparse.Action, str, str]] = {}
        absent: dict[str, tuple[argparse.Action, Any]] = {}
        required: list[argparse.Action] = []
        for action in self._actions:
            name = env_name(self.prog, action)
            if name is None or action.default is argparse.SUPPRESS or hasattr(ns, action.dest):
                continue
            # argparse leaves a dest that is already in the namespace alone unless the flag is given
            # (appending and counting actions start from None, which they treat as empty)
            marker = None if isinstance(action, _ACCUMULATE) else _UNSET
            setattr(ns, action.dest, marker)
            absent[action.dest] = (action, marker)
            if name in environ:
                overrides[action.dest] = (action, name, environ[name])
                if action.required:
                    required.append(action)
                    action.required = False  # the environment supplies it
        try:
            ns, rest = super().parse_known_args(args, ns)
        finally:
            for action in required:
                action.required = True
        for dest, (action, marker) in absent.items():
            if getattr(ns, dest) is not marker:
                continue  # on the command line: the flag wins
            if dest in overrides:
                setattr(ns, dest, self._from_env(*overrides[dest]))
            elif isinstance(action.default, str) and action.type is not None:  # as argparse treats string defaults
                setattr(ns, dest, self._convert(action, action.default, f"default of {max(action.option_strings)}"))
            else:
                setattr(ns, dest, action.default)
        return ns, rest

    def _from_env(self, action: argparse.Action, name: str, text: str) -> Any:
        where = f"environment {name}={text!r}"
        if action.nargs == 0:  # store_true / store_false / store_const / count
            word = text.strip().lower()
            if isinstance(action, argparse._CountAction):
                return self._convert_with(int, text, where)
            if word in _TRUE:
                return [action.const] if isinstance(action, argparse._AppendConstAction) else action.const
            if word in _FALSE:
                return action.default
            self.error(f"{where}: expected one of 1/true/yes/on or 0/false/no/off")
        many = isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+") or isinstance(action.nargs, int)
        if not many:
            return self._convert(action, text, where)
        values = [self._convert(action, word, where) for word in text.split()]
        if isinstance(action, argparse._AppendAction) and action.nargs not in (None, "?"):
            return [values]
        return values

    def _convert(self, action: argparse.Action, text: str, where: str) -> Any:
        value = self._convert_with(action.type, text, where) if callable(action.type) else text
        if action.choices is not None and value not in action.choices:
            self.error(f"{where}: invalid choice {value!r} (choose from {', '.join(map(str, action.choices))})")
        return value

    def _convert_with(self, kind: Any, text: str, where: str) -> Any:
        try:
            return kind(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            self.error(f"{where}: {exc}")


class _SubParser(Parser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, with_version=False, **kwargs)
