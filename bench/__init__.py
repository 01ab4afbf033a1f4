"""graphserve's benchmark: the same workloads on raw Starlette, graphserve (local and Ray
backends) and Ray Serve, in one run on one machine. ``python -m bench`` (or ``make bench``).

Modules: ``costs`` (the work every system does), ``workloads`` (graphserve apps),
``rayserve_apps`` (Ray Serve apps), ``raw_starlette`` (the ceiling), ``servers``
(starting and stopping each system as a subprocess), ``load`` (wrk closed loop and a
fixed-rate open-loop client), ``hop`` (per-hop overhead in process), ``coldstart``
(``graphserve deploy`` to first 200, idle memory), ``report`` (targets, tables, JSON),
``readme`` (the README's generated sections, from the result files).
"""
