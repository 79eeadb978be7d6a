"""The GPU machine's Python as pip and ``packaging`` see it: CPython 3.12 on Linux x86-64
with glibc manylinux wheels. One list of platform tags serves the bundle's downloads and
the dry run's cross-install, so what is downloaded here is what installs there."""

from __future__ import annotations

from packaging.markers import default_environment

PYTHON = "3.12"
# pip matches manylinux_2_N exactly: every N a wheel of the closure is built for
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def pip_flags(python: str = PYTHON) -> list[str]:
    """pip's options that pick (download) or accept (install) the target's wheels."""
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in PLATFORMS:
        flags += ["--platform", tag]
    return flags


def marker_env(python: str = PYTHON) -> dict:
    """Environment markers (PEP 508) of the target, for requirements evaluated here."""
    env = default_environment()
    env.update({"python_version": python, "python_full_version": f"{python}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                "platform_machine": "x86_64"})
    return env
