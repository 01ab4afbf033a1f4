"""Every validation code, reported all at once with node, file:line and hint."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import Code, compile_app
from graphserve.errors import GraphValidationError
from tests.graphs import models as m


def _line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def errors_of(app: Any) -> GraphValidationError:
    with pytest.raises(GraphValidationError) as info:
        compile_app(app)
    return info.value


def test_valid_graph_compiles() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        out = m.Takes.bind().number.bind(inp.value)
    plan = compile_app(gs.graph(out))
    assert [n.id for n in plan.nodes] == ["input", "input.value", "Takes.number", "output"]


def test_wrong_argument_count_names_node_and_line() -> None:
    with gs.InputNode() as inp:
        line = _line() + 1
        out = m.Takes.bind().number.bind(inp, inp)
    err = errors_of(gs.graph(out))
    (d,) = err.diagnostics
    assert d.code == Code.SIGNATURE and d.node == "Takes.number"
    assert d.location is not None and d.location.file == __file__ and d.location.line == line
    assert "too many positional arguments" in d.message and "signature" in (d.hint or "")
    assert f"{__file__}:{line}" in str(err)


def test_unknown_keyword_and_constructor_arguments() -> None:
    with gs.InputNode() as inp:
        out = m.Slow.bind("a", speed=3).__call__.bind(x=inp, y=1)
    codes = [(d.code, d.node) for d in errors_of(gs.graph(out)).diagnostics]
    assert (Code.SIGNATURE, "Slow") in codes  # constructor
    assert (Code.SIGNATURE, "Slow.__call__") in codes  # call


def test_unknown_method_lists_the_real_ones() -> None:
    with gs.InputNode() as inp:
        out = m.Scorer.bind().predict.bind(inp)
    (d,) = errors_of(gs.graph(out)).diagnostics
    assert d.code == Code.UNKNOWN_METHOD and "predict" in d.message
    assert "length" in (d.hint or "") and "score" in (d.hint or "")


def test_unknown_schema_field() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        out = m.Takes.bind().text.bind(inp.txt)
    (d,) = errors_of(gs.graph(out)).diagnostics
    assert d.code == Code.UNKNOWN_FIELD and "'txt'" in d.message and "text" in (d.hint or "")


def test_unknown_field_of_a_pydantic_result() -> None:
    with gs.InputNode() as inp:
        scores = m.Scorer.bind().score.bind(inp)
        out = m.Takes.bind().number.bind(scores.confidence)
    (d,) = errors_of(gs.graph(out)).diagnostics
    assert d.code == Code.UNKNOWN_FIELD and "Scores" in d.message


@pytest.mark.parametrize(
    ("producer", "method", "ok"),
    [
        ("length", "number", True),  # int -> float
        ("length", "text", False),  # int -> str
        ("length", "maybe", False),  # int -> Optional[str]
        ("score", "scores", True),  # pydantic model -> same model
        ("score", "text", False),  # pydantic model -> str
        ("length", "ints", False),  # int -> list[int]
        ("score", "mapping", False),  # Scores -> dict[str, float]
    ],
)
def test_edge_types(producer: str, method: str, ok: bool) -> None:
    with gs.InputNode() as inp:
        value = getattr(m.Scorer.bind(), producer).bind(inp)
        out = getattr(m.Takes.bind(), method).bind(value)
    app = gs.graph(out)
    if ok:
        compile_app(app)
    else:
        (d,) = errors_of(app).diagnostics
        assert d.code == Code.TYPE_MISMATCH and d.node == f"Takes.{method}"
        assert f"Scorer.{producer}" in d.message


def test_schema_field_types_are_checked() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        out = m.Takes.bind().number.bind(inp.text)  # str -> float
    (d,) = errors_of(gs.graph(out)).diagnostics
    assert d.code == Code.TYPE_MISMATCH and "expects float" in d.message and "produces str" in d.message


def test_missing_hints_and_any_pass() -> None:
    with gs.InputNode() as inp:  # no schema: the request is Any
        out = m.Takes.bind().text.bind(m.Fails.bind().__call__.bind(inp))  # Any -> str
    plan = compile_app(gs.graph(out))
    types = {node.id: node.type for node in plan.nodes}
    assert (types["input"], types["Fails.__call__"], types["Takes.text"]) == ("Any", "Any", "str")
    assert plan.warnings == []


def test_batch_on_sync_method_fails_at_decoration() -> None:
    with pytest.raises(TypeError, match="must be 'async def'") as info:

        @gs.batch(max_batch_size=4)
        def __call__(self: Any, xs: list[int]) -> list[int]:  # not async
            return xs

    assert isinstance(info.value, gs.GraphError)


def test_batch_list_types_are_per_item() -> None:
    @gs.deployment
    class Batched:
        @gs.batch(max_batch_size=4)
        async def __call__(self, xs: list[str]) -> list[int]:
            return [len(x) for x in xs]

    with gs.InputNode(schema=m.Request) as inp:
        n = Batched.bind().__call__.bind(inp.text)  # str fits list[str]'s item
        out = m.Takes.bind().number.bind(n)  # int (per item) fits float
        bad = Batched.bind().__call__.bind(inp.value)  # float does not fit str
    diagnostics = errors_of(gs.graph([out, bad])).diagnostics
    assert [(d.code, d.node) for d in diagnostics] == [(Code.TYPE_MISMATCH, "Batched_1.__call__")]


def test_invalid_options_and_batch_options() -> None:
    @gs.deployment(num_replicas=0, max_ongoing_requests=-1, num_gpus="one", colour="red")
    class Opts:
        async def __call__(self, xs: list[int]) -> list[int]:
            return xs

    with gs.InputNode() as inp:
        out = Opts.bind().__call__.bind(inp)
    messages = [d.message for d in errors_of(gs.graph(out)).diagnostics]
    assert all(code == Code.BAD_OPTION for code in errors_of(gs.graph(out)).codes)
    assert any("num_replicas=0" in msg for msg in messages)
    assert any("max_ongoing_requests=-1" in msg for msg in messages)
    assert any("num_gpus='one'" in msg for msg in messages)
    assert any("unknown option 'colour'" in msg for msg in messages)


def test_duplicate_name_different_code() -> None:
    @gs.deployment(name="Model")
    class A:
        async def __call__(self, x: Any) -> Any:
            return x

    @gs.deployment(name="Model")
    class B:
        async def __call__(self, x: Any) -> Any:
            return x

    with gs.InputNode() as inp:
        out = [A.bind().__call__.bind(inp), B.bind().__call__.bind(inp)]
    (d,) = errors_of(gs.graph(out)).diagnostics
    assert d.code == Code.DUPLICATE_NAME and "A" in d.message and "B" in d.message


def test_same_class_bound_twice_gets_distinct_names() -> None:
    with gs.InputNode() as inp:
        out = [m.Slow.bind("a").__call__.bind(inp), m.Slow.bind("b").__call__.bind(inp)]
    plan = compile_app(gs.graph(out))
    assert sorted(d.name for d in plan.deployments) == ["Slow", "Slow_1"]


def test_handle_cycle_reported_as_path() -> None:
    @gs.deployment
    class Node:
        def __init__(self, other: Any = None) -> None:
            self.other = other

        async def __call__(self, x: Any) -> Any:
            return x

    a = Node.options(name="A").bind()
    b = Node.options(name="B").bind(a)
    a._args = (b,)  # close the loop: A holds B holds A
    with gs.InputNode() as inp:
        out = a.__call__.bind(inp)
    diagnostics = errors_of(gs.graph(out)).diagnostics
    assert [d.code for d in diagnostics] == [Code.HANDLE_CYCLE]
    assert "A -> B -> A" in diagnostics[0].message or "B -> A -> B" in diagnostics[0].message


def test_dead_node_is_a_warning() -> None:
    with gs.InputNode() as inp:
        line = _line() + 1
        m.Takes.bind().number.bind(inp)  # built, never used
        out = m.Takes.bind().text.bind(inp)
    plan = compile_app(gs.graph(out))
    (w,) = plan.warnings
    assert w.code == Code.DEAD_NODE and w.severity == "warning" and w.location == f"{__file__}:{line}"


def test_structural_problems() -> None:
    first, second = gs.InputNode(), gs.InputNode()
    dep = m.Slow.bind("a")
    out = [
        m.Takes.bind().number.bind(first),
        m.Takes.bind().number.bind(second),  # second input
        m.Takes.bind().text.bind(dep),  # bound deployment as an argument
        m.Slow.bind(first).__call__.bind(1.0),  # node in a constructor
        gs.switch(1, {True: first}),  # selector is not a node
    ]
    codes = set(errors_of(gs.graph(out)).codes)
    assert {Code.MULTIPLE_INPUTS, Code.DEPLOYMENT_AS_ARGUMENT, Code.NODE_IN_CONSTRUCTOR, Code.BAD_SWITCH} <= codes


def test_bad_output_and_bad_schema() -> None:
    with gs.InputNode(schema=dict) as inp:
        out = [m.Takes.bind().number.bind(inp), 42]
    codes = set(errors_of(gs.graph(out)).codes)
    assert codes == {Code.BAD_OUTPUT, Code.BAD_SCHEMA}


def test_every_problem_is_reported_at_once() -> None:
    with gs.InputNode(schema=m.Request) as inp:
        a = m.Takes.bind().number.bind(inp.text)  # GS104
        b = m.Scorer.bind().predict.bind(inp.text)  # GS102
        c = m.Takes.bind().text.bind(inp.nope)  # GS103
        d = m.Takes.bind().number.bind(inp.value, 2)  # GS101
    err = errors_of(gs.graph([a, b, c, d]))
    assert sorted(err.codes) == sorted([Code.TYPE_MISMATCH, Code.UNKNOWN_METHOD, Code.UNKNOWN_FIELD, Code.SIGNATURE])
    assert str(err).count(__file__) == 4
    assert "4 problems" in str(err)


def test_unsupported_ray_options_warn_once_each() -> None:
    @gs.deployment(autoscaling_config={"min_replicas": 1}, ray_actor_options={"num_cpus": 1, "runtime_env": {}})
    class Ported:
        async def __call__(self, x: Any) -> Any:
            return x

    with gs.InputNode() as inp:
        plan = compile_app(gs.graph(Ported.bind().__call__.bind(inp)))
    assert [w.code for w in plan.warnings] == [Code.UNSUPPORTED_OPTION, Code.UNSUPPORTED_OPTION]
    assert plan.deployment("Ported").resources.num_cpus == 1


def test_validation_runs_before_any_constructor() -> None:
    with gs.InputNode() as inp:
        out = m.BrokenInit.bind().nope.bind(inp)
    with pytest.raises(GraphValidationError):
        gs.run(gs.graph(out))  # not DeploymentStartError: nothing was constructed
