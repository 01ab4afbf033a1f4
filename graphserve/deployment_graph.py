"""Ray Serve's deployment graph names (``ray.serve.deployment_graph``, Ray 2.0-2.6).

``from graphserve.deployment_graph import InputNode`` is graphserve's ``InputNode``; the
node classes Ray's annotations name are graphserve's DSL nodes, and
``RayServeDAGHandle`` is the handle ``serve.run`` returns for a graph.
"""

from __future__ import annotations

from graphserve.api import GraphHandle as RayServeDAGHandle
from graphserve.dsl import CallNode as FunctionNode
from graphserve.dsl import CallNode as MethodNode
from graphserve.dsl import DeploymentNode as ClassNode
from graphserve.dsl import InputNode
from graphserve.dsl import SelectNode as InputAttributeNode

__all__ = ["ClassNode", "FunctionNode", "InputAttributeNode", "InputNode", "MethodNode", "RayServeDAGHandle"]
