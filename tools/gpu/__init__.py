"""The offline GPU kit: ``python -m tools.gpu bundle | check | experiment`` (see README.md here).

Modules, one job each: ``steps`` (subprocesses under one deadline), ``target`` (the GPU
machine's Python and platform tags), ``wheels`` (what to ship, what is unmet), ``bundle``
(build it here), ``install`` (install it there), ``machine`` (paths and environment of a
run), ``provenance`` (the environment block of a summary), ``workcopy`` and ``dryrun`` (the
experiment's project copy and its CPU-sized params), ``check``, ``experiment``, ``summary``
(the check's markdown) and ``results`` (the experiment's README).
"""
