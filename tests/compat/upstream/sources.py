"""The upstream Ray Serve files the compatibility measurement runs, pinned by commit and hash.

Each file is Ray's own (Apache-2.0, Copyright The Ray Authors), fetched unchanged by
``scripts/fetch_ray_upstream.py`` and rewritten at its import lines only (:func:`rewrite`):

- ``from ray import serve`` -> ``import graphserve as serve``
- ``from ray.serve.X import ...`` / ``import ray.serve.X`` -> ``graphserve.X``
- Ray-internal helpers that moved between Ray versions are imported from where the
  installed Ray has them (:data:`RAY_MOVED`): the same Ray function, not a graphserve one.

Every other line is byte for byte Ray's; :func:`rewrite` refuses to change a line that is
not an import. The files themselves are not in this repository (see README.md here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REPO = "ray-project/ray"


@dataclass(frozen=True)
class Source:
    path: str  # in ray-project/ray
    commit: str
    sha256: str  # of the file as fetched, before the import rewrite
    kind: str  # "tests": a pytest module; "doc": a documentation example run as a script

    @property
    def local_name(self) -> str:
        """The rewritten file's name under ``files/``."""
        stem = self.path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        return f"test_upstream_{stem}.py" if self.kind == "tests" else f"doc_{stem}.py"


SOURCES = (
    Source(
        "python/ray/serve/tests/unit/test_batching.py",
        "4b69653c05c74bc1afc0abb0943bf87ad8281621",
        "421382427582a1d21ed428c7162fb84faecf3c7b66aa1cff1b03a349a65474db",
        "tests",
    ),
    Source(
        "doc/source/serve/doc_code/batching_guide.py",
        "0cf79cd2bce0f91316a8c58f4d4bbcc14e26e0ac",
        "1071c996c577caf08ce7e72386375a203d64a9b569297fba2596e402e7f0af53",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/model_composition/chaining_example.py",
        "09e9eb1d2d915af49c6dd60dfecc3dfec2c33a22",
        "3c191e014e18edbb3d6931f62f1259f6c76082fcbd60241b5df89fa770763871",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/model_composition/language_example.py",
        "6c6f9812ff7f12722d6345db061efe8cd3faa85b",
        "636e78e24130478cb8c6a63e622a341e443253a2bbd0d54c059062bca5820d60",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/model_composition/response_by_reference_example.py",
        "4cf54c3a45ece1c734ff63924df526536066c96f",
        "2e3b1ccb2f624888d7371bdeb75a24dfeebf60fdcc96427fc4d3f2d38ab12ed7",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/model_composition/class_nodes.py",
        "13de838522ce9ea35989443dc9483bd77cfe5832",
        "9d65286004b51c77dc2d974a6a0be39c76f49bea71475f4970ebd07665c9a411",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/model_composition/arithmetic.py",
        "17c085c31e9c315f2f7670ba300f59af42eb3ae6",
        "0db852b13be6adcc0d9374e19348b9dff934a2c6e3601bfdae65910a6522d79d",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/handle_guide.py",
        "3586ac0c9a2a9ab0becf22bb2d981efa2259a8b7",
        "d6deadfbfebdae1743b1a48e17c978eb42b211fb75b8d9ca2927e88f8f9610a6",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/http_guide/streaming_example.py",
        "6c6f9812ff7f12722d6345db061efe8cd3faa85b",
        "d273566a55e3046eb7c60c02005a2462e874c6b9cfc333776db3e1b3dc0d4c7b",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/deployment_graph_patterns/linear_pipeline.py",
        "4ddcdebd1ec2db33873839a9e0baa634c7909454",
        "33e5b7fe12e9befb996fe344f3efbb221fd6adc27b39f0c496fd5ac75e3f4c3a",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/deployment_graph_patterns/conditional.py",
        "31c9cf0e0762444e7978fe961085907c5dc553af",
        "0edbe5d86c688550c74dca1b5acefa97711381d8668e38f074bb28f3afe6dc9c",
        "doc",
    ),
    Source(
        "doc/source/serve/doc_code/deployment_graph_patterns/branching_input.py",
        "20ec6cbcf9655247f8b26bc9f90936e2cdcad51d",
        "3281b5cae75694db857184ecaf7be64598bab600bc9ecb0751da40b04e121ddc",
        "doc",
    ),
)

# Ray-internal helpers imported by the upstream files, by where the installed Ray keeps them.
RAY_MOVED = {"ray._private.utils import get_or_create_event_loop": "ray._common.utils import get_or_create_event_loop"}

_IMPORT = re.compile(r"^\s*(from|import)\s")
_SERVE_FROM = re.compile(r"^(\s*)from ray import serve\s*$")
_SERVE_MODULE = re.compile(r"\bray\.serve\b")


def rewrite_line(line: str) -> str:
    """One line with the import rewrite applied (unchanged when it is not one of those imports)."""
    match = _SERVE_FROM.match(line)
    if match:
        return f"{match.group(1)}import graphserve as serve"
    if _IMPORT.match(line):
        for old, new in RAY_MOVED.items():
            if old in line:
                return line.replace(old, new)
        if _SERVE_MODULE.search(line):
            return _SERVE_MODULE.sub("graphserve", line)
    return line


def rewrite(text: str) -> tuple[str, list[tuple[int, str, str]]]:
    """``text`` with its imports rewritten, and the changed lines as (line number, before, after)."""
    lines = text.split("\n")
    changes = []
    for number, line in enumerate(lines, 1):
        new = rewrite_line(line)
        if new != line:
            if not _IMPORT.match(line):  # never happens: rewrite_line only touches imports
                raise ValueError(f"line {number} is not an import: {line!r}")
            changes.append((number, line, new))
            lines[number - 1] = new
    return "\n".join(lines), changes
