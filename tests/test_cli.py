"""The ``graphserve`` command line: ``build`` and ``render`` in process through
``main(argv)`` and as the installed console script; ``deploy``/``call`` wiring."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from graphserve import cli
from graphserve.compiler import Plan, compile_app
from tests.graphs import branching

ROOT = Path(__file__).resolve().parent.parent
GRAPHSERVE = Path(sys.executable).parent / "graphserve"
INVALID = ROOT / "tests" / "graphs" / "invalid.py"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make setup)")


def _line_of(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker} not in {path}")


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


# -- build -------------------------------------------------------------------------------
def test_build_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "cpus=8"]) == 0
    out = capsys.readouterr().out
    assert "graph branching: 12 nodes, 5 deployment calls, 4 stages, 5 deployments, 6 replicas" in out
    assert "cluster (given): 8 cpus, 0 gpus" in out
    for node in compile_app(branching.app).nodes:
        assert node.id in out
    # stages, replicas, resources, batching and the guard of a conditional node
    assert "Scorer.__call__, Slow.__call__" in out  # a wave of concurrent calls
    assert "run: max 8, wait 0.005s, 1 concurrent" in out
    heavy_row = next(line for line in out.splitlines() if "tests.graphs.branching:Heavy" in line)
    assert [cell.strip() for cell in heavy_row.strip("│ ").split("│")][2:6] == ["1", "2", "0", "8"]
    scorer_row = next(line for line in out.splitlines() if "tests.graphs.branching:Scorer" in line)
    assert [cell.strip() for cell in scorer_row.strip("│ ").split("│")][2:4] == ["2", "1"]
    assert "switch=True" in out and "glue function: cheap and pure" in out
    # the GS110 warning with its file:line
    assert f"{ROOT}/tests/graphs/branching.py:22: warning GS110: [Heavy] max_ongoing_requests=4" in out


def test_build_prints_the_fused_groups_and_why_neighbours_were_kept_apart(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests.graphs.fusion_graphs:app", "--cluster", "none"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long cells
    assert "actor fusion (Ray backend)" in out and "a+b+c" in out
    assert "in process instead of a Ray hop" in out and "never shares its process with another" in out
    assert cli.main(["build", "tests.graphs.fusion_graphs:app", "--cluster", "none", "--no-fuse"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "a+b+c+gpu1" not in out and "fusion is off for this plan (--no-fuse)" in out


def test_build_invalid_graph_exits_1_with_every_diagnostic(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests.graphs.invalid:app"]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "graph 'invalid' is invalid: 2 problems" in err
    assert f"{INVALID}:{_line_of(INVALID, 'GS104')}: error GS104: [Counter.__call__]" in err
    assert f"{INVALID}:{_line_of(INVALID, 'GS102')}: error GS102: [Counter_1.nothing_here]" in err
    assert "Traceback" not in err and captured.out == ""


def test_infeasible_cluster_is_gs201_naming_deployment_and_shortfall(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "cpus=3,gpus=0"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "GS201" in line]
    assert len(lines) == 2
    assert any("[Scorer] Scorer needs 2 cpus" in line and "short by 1" in line for line in lines)
    assert any("[Heavy] Heavy needs 2 cpus" in line and "has 3" in line for line in lines)
    assert all(line.startswith(f"{ROOT}/tests/graphs/branching.py:") for line in lines)
    assert "--cluster cpus=N" in err


def test_cluster_none_checks_nothing_and_a_bad_cluster_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "none"]) == 0
    assert "cluster: not checked" in capsys.readouterr().out
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "cpu=8"]) == 2
    assert "unknown cluster keys ['cpu']" in capsys.readouterr().err


def test_build_detects_the_cluster_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    from graphserve.compiler import detect_cluster

    detected = detect_cluster()
    status = cli.main(["build", "tests.graphs.plan_graphs:nested_app"])
    # nested_app is a function, not an app: a clear error, not a traceback
    assert status == 1
    assert "GS115: graph output <function nested_app" in capsys.readouterr().err
    status = cli.main(["build", "tests.graphs.branching:app"])
    out, err = capsys.readouterr()
    if detected.cpus >= 4:
        assert status == 0 and f"cluster (detected): {detected.cpus:g} cpus" in out
    else:
        assert status == 1 and "GS201" in err and "(detected)" in err


def test_build_file_path_form(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "tests/graphs/branching.py:app", "--cluster", "cpus=8"]) == 0
    assert "graph branching:" in capsys.readouterr().out
    assert cli.main(["build", "tests/graphs/no_such_file.py:app"]) == 1
    assert "no file" in capsys.readouterr().err
    assert cli.main(["build", "tests.graphs.no_such_module:app"]) == 1
    assert "cannot import module 'tests.graphs.no_such_module'" in capsys.readouterr().err


def test_build_output_round_trips_and_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "plan.json"
    dot_file = tmp_path / "graph.dot"
    argv = ["build", "tests.graphs.branching:app", "--cluster", "cpus=8", "-o", str(plan_file)]
    assert cli.main([*argv, "--render", str(dot_file)]) == 0
    out = capsys.readouterr().out
    assert f"plan written to {plan_file}" in out and f"graph drawn to {dot_file}" in out
    plan = Plan.from_json(plan_file.read_text())
    assert plan.to_json() + "\n" == plan_file.read_text()
    assert plan.to_json() == compile_app(branching.app, cluster="cpus=8").to_json()
    assert plan.cluster is not None and plan.cluster.cpus == 8
    assert dot_file.read_text().startswith('digraph "branching" {')
    # the same plan again: byte-identical
    again = tmp_path / "again.json"
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "cpus=8", "-o", str(again)]) == 0
    assert again.read_bytes() == plan_file.read_bytes()
    # and the plan file renders
    from_plan = tmp_path / "from_plan.dot"
    assert cli.main(["render", str(plan_file), "-o", str(from_plan)]) == 0
    assert from_plan.read_text() == dot_file.read_text()


def test_build_output_of_an_unserializable_plan_is_gs202(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "opaque_graph.py"
    module.write_text(
        textwrap.dedent(
            """
            import graphserve as gs
            from tests.graphs.plan_graphs import Opaque, configured_app

            app = configured_app(Opaque())
            """
        )
    )
    plan_file = tmp_path / "plan.json"
    assert cli.main(["build", f"{module}:app", "--cluster", "none", "-o", str(plan_file)]) == 1
    err = capsys.readouterr().err
    assert "error GS202:" in err and "deployment 'Configured' constructor argument 0 (Opaque) is not JSON" in err
    assert not plan_file.exists()


@needs_dot
def test_build_render_svg_and_render_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "graph.svg"
    assert cli.main(["build", "tests.graphs.branching:app", "--cluster", "cpus=8", "--render", str(svg)]) == 0
    text = svg.read_text()
    assert "<title>Heavy.run</title>" in text and "<title>cluster_stage_3</title>" in text
    assert "case True: str" in text and 'class="edge guarded"' in text
    png = tmp_path / "graph.png"
    assert cli.main(["render", "tests.graphs.branching:app", "-o", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    forced = tmp_path / "graph.img"
    argv = ["render", "tests/graphs/branching.py:app", "-o", str(forced), "--format", "svg", "--cluster", "cpus=8"]
    assert cli.main(argv) == 0
    assert forced.read_bytes() == svg.read_bytes()


def test_render_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "tests.graphs.branching:app", "-o", str(tmp_path / "graph.pdf")]) == 1
    assert "use a .svg, .png or .dot file" in capsys.readouterr().err
    assert cli.main(["render", "tests.graphs.invalid:app", "-o", str(tmp_path / "graph.dot")]) == 1
    assert "error GS104" in capsys.readouterr().err
    assert cli.main(["render", str(tmp_path / "missing.json"), "-o", str(tmp_path / "graph.dot")]) == 1
    assert "cannot read plan" in capsys.readouterr().err
    not_a_plan = tmp_path / "other.json"
    not_a_plan.write_text(json.dumps({"version": 1, "hello": "world"}))
    assert cli.main(["render", str(not_a_plan), "-o", str(tmp_path / "graph.dot")]) == 1
    assert "is not a graphserve plan" in capsys.readouterr().err
    assert not (tmp_path / "graph.dot").exists()


def test_render_svg_without_dot_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["render", "tests.graphs.branching:app", "-o", str(tmp_path / "graph.svg")]) == 1
    assert "apt-get install graphviz" in capsys.readouterr().err
    assert cli.main(["render", "tests.graphs.branching:app", "-o", str(tmp_path / "graph.dot")]) == 0


# -- the installed command -----------------------------------------------------------------
def test_console_script_builds_a_module_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mygraph.py").write_text(
        textwrap.dedent(
            """
            import graphserve as gs

            @gs.deployment(num_replicas=3)
            class Echo:
                async def __call__(self, text: str) -> str:
                    return text

            with gs.InputNode() as inp:
                app = gs.graph(Echo.bind().__call__.bind(inp["text"]), name="echo")
            """
        )
    )
    done = _run(str(GRAPHSERVE), "build", "mygraph:app", "--cluster", "none", "-o", "plan.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "graph echo: 4 nodes, 1 deployment calls" in done.stdout
    plan = Plan.from_json((tmp_path / "plan.json").read_text())
    assert plan.deployment("Echo").import_path == "mygraph:Echo" and len(plan.replicas) == 3
    done = _run(str(GRAPHSERVE), "render", "plan.json", "-o", "graph.dot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"Echo.__call__" [' in (tmp_path / "graph.dot").read_text()


def test_a_plan_file_is_served_with_its_modules_found_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mygraph.py").write_text(
        "import graphserve as gs\n\n"
        "@gs.deployment\nclass Echo:\n    async def __call__(self, text: str) -> str:\n        return text\n\n"
        "app = gs.graph(Echo.bind().__call__.bind(gs.InputNode()))\n"
    )
    built = _run(str(GRAPHSERVE), "build", "mygraph:app", "--cluster", "none", "-o", "plan.json", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    # the module now fails when imported: serving the plan must reach it (from this directory) and say so
    (tmp_path / "mygraph.py").write_text("raise RuntimeError('no weights here')\n")
    done = _run(str(GRAPHSERVE), "deploy", "plan.json", "--port", "0", cwd=tmp_path)
    assert done.returncode == 1
    assert "error: cannot import 'mygraph:Echo': mygraph raised RuntimeError: no weights here" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_dash_m_reports_an_invalid_graph_without_a_traceback() -> None:
    done = _run(sys.executable, "-m", "graphserve", "build", "tests/graphs/invalid.py:app")
    assert done.returncode == 1
    assert f"{INVALID}:{_line_of(INVALID, 'GS104')}: error GS104" in done.stderr
    assert f"{INVALID}:{_line_of(INVALID, 'GS102')}: error GS102" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_app_module_that_raises_at_import_is_one_line_naming_it_and_the_exception(
    capsys: pytest.CaptureFixture[str],
) -> None:
    raising = ROOT / "tests" / "graphs" / "raises_at_import.py"
    said = "tests.graphs.raises_at_import raised RuntimeError: the model file models/never.pt is missing"
    where = f"(at {raising}:{_line_of(raising, 'raise RuntimeError')})"
    module = "tests.graphs.raises_at_import"
    for argv in (["deploy", f"{module}:app", "--port", "0"], ["build", module]):
        done = _run(str(GRAPHSERVE), *argv)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [f"error: cannot import module {module!r}: {said} {where}"]
    assert cli.main(["build", "tests/graphs/raises_at_import.py:app"]) == 1  # the file path form
    assert capsys.readouterr().err == f"error: cannot import {raising}: {said} {where}\n"


# -- deploy / call -----------------------------------------------------------------------
def test_deploy_and_call_arguments() -> None:
    args = cli.build_parser().parse_args(["deploy", "a:app", "plan.json"])
    assert args.targets == ["a:app", "plan.json"]
    assert (args.backend, args.address, args.host, args.port) == ("local", None, "127.0.0.1", 8000)
    # None: the server's own defaults apply ($GRAPHSERVE_TOKEN, the ingress's body limit)
    assert (args.token, args.timeout_s, args.max_body_bytes, args.cluster) == (None, None, None, None)
    args = cli.build_parser().parse_args(["call", "http://127.0.0.1:1/x", "--header", "A: 1", "--header", "B: 2"])
    assert (args.body, args.timeout_s, args.header) == ("{}", None, ["A: 1", "B: 2"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["deploy", "a:app", "--backend", "k8s"])


def test_deploy_hands_its_options_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphserve import serving

    seen: dict[str, Any] = {}

    def serve(targets: Any, **kwargs: Any) -> None:
        seen.update(kwargs, targets=targets)

    monkeypatch.setattr(serving, "serve", serve)
    assert cli.main(["deploy", "a:app", "b.json", "--port", "0", "--timeout-s", "2", "--address", "auto"]) == 0
    assert seen["targets"] == ["a:app", "b.json"]
    assert (seen["port"], seen["timeout_s"], seen["token"], seen["cluster"]) == (0, 2.0, None, "detect")
    assert seen["backend_options"] == {"address": "auto"}
    assert "max_body_bytes" not in seen  # the ingress's default: one constant


def test_deploy_hands_the_connection_limits_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphserve import serving

    seen: dict[str, Any] = {}
    monkeypatch.setattr(serving, "serve", lambda targets, **kwargs: seen.update(kwargs))
    flags = ["--max-in-flight", "12", "--header-timeout-s", "2", "--body-timeout-s", "3", "--keep-alive-s", "4"]
    assert cli.main(["deploy", "a:app", *flags, "--max-connections", "100", "--shutdown-timeout-s", "5"]) == 0
    assert (seen["max_in_flight"], seen["header_timeout_s"], seen["body_timeout_s"]) == (12, 2.0, 3.0)
    assert (seen["keep_alive_s"], seen["max_connections"], seen["shutdown_timeout_s"]) == (4.0, 100, 5.0)


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from graphserve import serving

    seen: dict[str, Any] = {}
    monkeypatch.setattr(serving, "serve", lambda targets, **kwargs: seen.update(kwargs))
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert cli.main(["deploy", "a:app", "--token-file", str(secret)]) == 0
    assert seen["token"] == "s3cret"  # never on the command line, where ps shows it
    monkeypatch.setenv("GRAPHSERVE_TOKEN_FILE", str(secret))
    assert cli.main(["deploy", "a:app"]) == 0 and seen["token"] == "s3cret"
    monkeypatch.delenv("GRAPHSERVE_TOKEN_FILE")
    monkeypatch.setenv("GRAPHSERVE_TOKEN", "from-env")
    assert cli.main(["deploy", "a:app"]) == 0 and seen["token"] == "from-env"
    assert cli.main(["deploy", "a:app", "--token-file", str(tmp_path / "missing")]) == 1
    assert "cannot read the token file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert cli.main(["call", "http://127.0.0.1:9/x", "--token-file", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_call_sends_the_token_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.graphs import ingress_graphs
    from tests.serving_utils import running_server

    secret = tmp_path / "token"
    secret.write_text("t0k")
    with running_server(ingress_graphs.echo_app, token="t0k") as url:
        assert cli.main(["call", url + "/echo", '{"x": 1}']) == 1
        assert "HTTP 401" in capsys.readouterr().err
        assert cli.main(["call", url + "/echo", '{"x": 1}', "--token-file", str(secret)]) == 0
        assert json.loads(capsys.readouterr().out) == {"y": 2.0, "label": "a"}


def test_call_reports_a_413_as_a_413(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.graphs import ingress_graphs
    from tests.serving_utils import running_server

    body = json.dumps({"x": 1, "pad": "a" * (4 << 20)})  # larger than the sockets' buffers: the send fails
    with running_server(ingress_graphs.echo_app, max_body_bytes=1024) as url:
        assert cli.main(["call", url + "/echo", body]) == 1
    err = capsys.readouterr().err
    assert "HTTP 413" in err and "larger than 1024 bytes" in err and "reset" not in err


def test_call_runs_a_graph_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"text": "hello there", "route": "slow"})
    assert cli.main(["call", "tests.graphs.branching:app", body, "--cluster", "cpus=8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"score": 1.1, "chosen": "HELLO THEREHELLO THERE", "routed": "slow:hello there"}


def test_no_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main([])
    assert caught.value.code == 2
