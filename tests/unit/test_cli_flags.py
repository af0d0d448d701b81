"""Every installed program's flags: help that states the default, an environment variable that
works, ``--version`` from the package metadata (streamops/cli.py)."""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from streamcerts.__main__ import main as streamcerts_main
from cloudstream.__main__ import build_parser as cloudstream_parser
from cloudstream.config import CloudConfig
from streamops.runner import run
from streamops.cli import HelpFormatter, Parser, env_name
from streamproto.tunnel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cloudstream", "edgestream", "streamcerts", "streamproto", "streamops", "streambundle")
NOT_INSTALLED_PROGRAMS: set[str] = set()  # developer tools live in scripts/ (python -m scripts.cri_gen)
NO_ENV = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if "/cri/v1/" not in name:
                yield name, ast.parse(path.read_text(), name)


def _builders() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    """Every module-level ``build_parser()`` in the installed packages, by the parser's prog."""
    found = {}
    for name, tree in _sources():
        if any(isinstance(n, ast.FunctionDef) and n.name == "build_parser" for n in tree.body):
            module = importlib.import_module(name.removesuffix(".py").replace("/", "."))
            build = module.build_parser
            found[build().prog] = build
    return found


BUILDERS = _builders()


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def _every_parser() -> Iterator[argparse.ArgumentParser]:
    for build in BUILDERS.values():
        yield from _walk(build())


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, NO_ENV)]


def test_every_program_builds_its_parser_with_proto_cli() -> None:
    """Other parsers would miss --version and the environment: build them with streamops.cli.Parser,
    in a module-level ``build_parser()`` (which the tests below walk)."""
    direct = [
        f"{name}:{node.lineno}"
        for name, tree in _sources() if name not in NOT_INSTALLED_PROGRAMS
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "ArgumentParser"
    ]
    assert not direct, f"argparse.ArgumentParser built directly (use streamops.cli.Parser): {direct}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) <= set(BUILDERS), f"installed programs without a build_parser(): {set(scripts) - set(BUILDERS)}"
    assert {"cloudstream", "edgestream", "edgestream emulate", "streamcerts"} <= set(BUILDERS)


def test_every_flag_has_help_that_states_its_default() -> None:
    """The lead's merge check: a flag without help, or whose help names no default, fails here."""
    missing = []
    for parser in _every_parser():
        assert isinstance(parser, Parser), f"{parser.prog}: build it with streamops.cli.Parser (env overrides, --version)"
        formatter = HelpFormatter(parser.prog)
        for action in _flags(parser):
            flag = f"{parser.prog} {max(action.option_strings, key=len)}"
            if not action.help:
                missing.append(f"{flag}: no help text")
                continue
            shown = formatter._expand_help(action)
            if "default" not in shown.lower() and not (action.required and "required" in shown.lower()):
                missing.append(f"{flag}: the help does not state the default: {shown!r}")
            if f"[env {env_name(parser.prog, action)}]" not in shown:
                missing.append(f"{flag}: the help does not name its environment variable")
    assert not missing, "\n".join(missing)


def test_env_names_are_unique_per_program() -> None:
    seen: dict[str, tuple[str, argparse.Action]] = {}
    for parser in _every_parser():
        names = [env_name(parser.prog, a) for a in _flags(parser)]
        assert len(names) == len(set(names)), f"{parser.prog}: two flags share a variable: {sorted(names)}"
        for action in _flags(parser):
            name = env_name(parser.prog, action)
            assert name is not None
            if name in seen:  # e.g. `edgestream --emulate-log-rate` and `edgestream emulate --log-rate`
                prog, other = seen[name]
                assert (other.type, other.nargs) == (action.type, action.nargs), (
                    f"{name} means different things to {prog} and {parser.prog}")
            seen[name] = (parser.prog, action)


def _sample(action: argparse.Action) -> tuple[str, object]:
    """A value for the flag as text, and what the parser should make of it."""
    if action.nargs == 0:
        return "true", [action.const] if isinstance(action, argparse._AppendConstAction) else action.const
    if action.choices:
        text = str(list(action.choices)[-1])
    elif action.type in (int, float):
        text = "7"
    else:
        text = "sample-value"
    value = action.type(text) if callable(action.type) else text
    return text, [value] if isinstance(action, argparse._AppendAction) else value


@pytest.mark.parametrize("prog", ["cloudstream", "edgestream", "edgestream emulate"])
def test_every_flag_reads_its_environment_variable_and_the_flag_wins(prog: str) -> None:
    parser = BUILDERS[prog]()
    for action in _flags(parser):
        name = env_name(prog, action)
        assert name and name.startswith(prog.upper().replace(" ", "_") + "_")
        text, expected = _sample(action)
        parser.environ = {name: text}
        assert getattr(parser.parse_args([]), action.dest) == expected, name
        parser.environ = {}
        unset = getattr(parser.parse_args([]), action.dest)
        assert unset != expected or action.nargs == 0 and action.default == expected, name
        if action.nargs != 0:  # a value on the command line beats the environment
            parser.environ = {name: text}
            flag = max(action.option_strings, key=len)
            other = [c for c in (action.choices or []) if c != list(action.choices)[-1]][:1] or ["8"]
            got = getattr(parser.parse_args([flag, str(other[0])]), action.dest)
            want = action.type(str(other[0])) if callable(action.type) else str(other[0])
            assert got == ([want] if isinstance(action, argparse._AppendAction) else want), name


def test_precedence_flag_over_env_over_config_file_over_default(tmp_path: Path) -> None:
    cloudcore = tmp_path / "cloudcore.yaml"
    cloudcore.write_text("modules:\n  cloudStream:\n    enable: true\n    tunnelPort: 10010\n    streamPort: 10013\n")
    parser = cloudstream_parser()

    def port(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
        parser.environ = env
        config = CloudConfig.from_args(parser.parse_args(argv))
        return config.tunnel_port, config.stream_port

    assert port([], {}) == (10004, 10003)
    assert port(["--config", str(cloudcore)], {}) == (10010, 10013)
    assert port([], {"CLOUDSTREAM_CONFIG": str(cloudcore)}) == (10010, 10013)
    assert port(["--config", str(cloudcore)], {"CLOUDSTREAM_TUNNEL_PORT": "10020"}) == (10020, 10013)
    assert port(["--config", str(cloudcore), "--tunnel-port", "10030"], {"CLOUDSTREAM_TUNNEL_PORT": "10020"}) == (
        10030, 10013)


def test_switches_and_repeatable_flags_from_env() -> None:
    parser = cloudstream_parser()
    parser.environ = {"CLOUDSTREAM_NO_DEFAULT_ACCESS": "0", "CLOUDSTREAM_ALLOW": "cn:a=logs,exec  group:ops\n"}
    ns = parser.parse_args([])
    assert ns.no_default_access is False and ns.allow == ["cn:a=logs,exec", "group:ops"]
    parser.environ = {"CLOUDSTREAM_NO_DEFAULT_ACCESS": "On"}
    assert parser.parse_args([]).no_default_access is True
    assert parser.parse_args(["--allow", "cn:b"]).allow == ["cn:b"]


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"CLOUDSTREAM_TUNNEL_PORT": "ten"}, "environment CLOUDSTREAM_TUNNEL_PORT='ten': invalid literal"),
        ({"CLOUDSTREAM_LOOP": "trio"}, "environment CLOUDSTREAM_LOOP='trio': invalid choice 'trio'"),
        ({"CLOUDSTREAM_NO_DEFAULT_ACCESS": "maybe"}, "expected one of 1/true/yes/on or 0/false/no/off"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    env: dict[str, str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cloudstream_parser()
    parser.environ = env
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err


def test_env_supplies_a_required_flag_of_a_sub_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCERTS_LAB_DIR", str(tmp_path / "lab"))
    assert streamcerts_main(["lab", "--node", "edge-1"]) == 0
    assert (tmp_path / "lab/ca/rootCA.crt").is_file()
    monkeypatch.delenv("STREAMCERTS_LAB_DIR")
    assert streamcerts_main(["lab", "--node", "edge-1"]) == 2  # still required without it


@pytest.mark.parametrize("prog", ["cloudstream", "edgestream", "edgestream emulate", "streamcerts"])
def test_version_comes_from_the_package_metadata(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        BUILDERS[prog]().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{prog} {metadata.version('kubeedge-stream')}\n"


def test_help_output_names_the_kubeedge_paths(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cloudstream_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for path in ("/etc/kubeedge/ca/rootCA.crt", "/etc/kubeedge/certs/server.key", "/etc/kubeedge/ca/streamCA.crt"):
        assert path in out.replace("\n", "").replace(" ", "")


def test_uvloop_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: import raises ImportError
    monkeypatch.setattr("streamops.runner.tune_gc", lambda: None)  # the test process keeps its collector
    seen = []

    async def which() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run(which(), "auto")
    assert seen == ["asyncio.unix_events"]
    with pytest.raises(ConfigError, match=r"uvloop is not installed \(pip install 'kubeedge-stream\[uvloop\]'"):
        run(which(), "uvloop")
    assert seen == ["asyncio.unix_events"]
