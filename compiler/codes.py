"""Stable diagnostic codes. Each is documented in the README's "Diagnostics" table;
tools and tests match on them, so never rename one."""

from __future__ import annotations

from graphserve.resources import INFEASIBLE as _INFEASIBLE


class Code:
    SIGNATURE = "GS101"  # wrong number of arguments / unknown or missing keyword
    UNKNOWN_METHOD = "GS102"  # the deployment has no such method
    UNKNOWN_FIELD = "GS103"  # the input schema has no such field
    TYPE_MISMATCH = "GS104"  # producer's return type does not fit the consumer's parameter
    BATCH_NOT_ASYNC = "GS105"  # @gs.batch on a method that is not async
    BAD_OPTION = "GS106"  # invalid or unknown deployment/batching option value
    DUPLICATE_NAME = "GS107"  # two deployments with one name but different code
    HANDLE_CYCLE = "GS108"  # deployments hold handles to each other in a cycle
    DEAD_NODE = "GS109"  # a node reaches no output (warning)
    BATCH_CAPPED = "GS110"  # options make a full batch impossible (warning)
    MULTIPLE_INPUTS = "GS111"  # more than one InputNode
    NODE_IN_CONSTRUCTOR = "GS112"  # a dataflow node passed to a constructor
    DEPLOYMENT_AS_ARGUMENT = "GS113"  # a bound deployment passed as a call argument
    BAD_SWITCH = "GS114"  # malformed switch / cond
    BAD_OUTPUT = "GS115"  # graph output is not a node
    BAD_SCHEMA = "GS116"  # InputNode schema is not a pydantic model
    UNSUPPORTED_OPTION = "GS117"  # a Ray Serve option graphserve accepts but ignores (warning)
    NOT_CALLABLE = "GS118"  # the deployment method is not callable
    INFEASIBLE = _INFEASIBLE  # GS201: the cluster cannot place the replicas (graphserve/resources.py)
    NOT_SERIALIZABLE = "GS202"  # the plan cannot be written as JSON
    SLO_INFEASIBLE = "GS203"  # no plan meets the latency SLO at the rate on the cluster (planning)
    SLO_NO_HEADROOM = "GS204"  # the SLO is met only without the planner's headroom (warning)
