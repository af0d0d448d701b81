"""``cloudstream doctor`` / ``edgestream doctor`` dispatch and flags: the process's own flags plus
the doctor's, each doctor flag with a help text that states its default."""

from __future__ import annotations

import pytest

from cloudstream.__main__ import main as cloud_main
from cloudstream.doctor.cli import _cloud_flags, build_parser as cloud_parser
from edgestream.__main__ import main as edge_main
from edgestream.doctor.cli import build_parser as edge_parser


@pytest.mark.parametrize("parser", [cloud_parser, edge_parser])
def test_doctor_flags_state_their_defaults(parser) -> None:  # type: ignore[no-untyped-def]
    p = parser()
    group = next(g for g in p._action_groups if g.title == "doctor")
    for action in group._group_actions:
        assert action.help and ("default" in action.help or "(off)" in action.help), action.option_strings


def test_doctor_reads_the_process_flags() -> None:
    ns = cloud_parser().parse_args(["--pki-dir", "/x", "--stream-port", "1", "--node", "n", "--json"])
    assert (ns.pki_dir, ns.stream_port, ns.node, ns.json) == ("/x", 1, "n", True)
    ns = edge_parser().parse_args(["--server", "c:1", "--node-name", "n", "--timeout", "1"])
    assert (ns.server, ns.node_name, ns.timeout) == ("c:1", "n", 1.0)


def test_fix_lines_repeat_only_cloudstream_flags() -> None:
    argv = ["--pki-dir", "/p", "--node", "n", "--json", "--timeout=2", "--stream-port", "7", "--advertise", "a"]
    assert _cloud_flags(argv) == "--pki-dir /p --stream-port 7"


@pytest.mark.parametrize("main,prog", [(cloud_main, "cloudstream doctor"), (edge_main, "edgestream doctor")])
def test_subcommand_dispatch(main, prog, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog}")


def test_a_config_error_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cloud_main(["doctor", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
