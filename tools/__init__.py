"""Operational tools of the project, outside the library (``tools.gpu``: the offline GPU kit)."""
