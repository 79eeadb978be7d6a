"""Task names and sources (defined in :mod:`pst_distill.task_specs`)."""

from pst_distill.task_specs import HUB, OFFLINE, TASK_NAMES  # noqa: F401
