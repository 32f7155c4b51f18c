"""Locate the reference BLAS the harness links: Intel MKL (PyPI wheels) or OpenBLAS (Debian)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path


class BlasNotFound(RuntimeError):
    """The configured reference library is not installed (message says how to get it)."""


@dataclass(frozen=True)
class BlasInfo:
    name: str
    version: str
    compile_args: tuple[str, ...]
    link_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    lib_dirs: list[Path] = field(default_factory=list)  # read-only inside the sandbox


def _mkl() -> BlasInfo:
    prefix = Path(sys.prefix)
    libs = sorted((prefix / "lib").glob("libmkl_rt.so*"))
    header = prefix / "include" / "mkl_cblas.h"
    if not libs or not header.is_file():
        raise BlasNotFound(
            f"Intel MKL not found under {prefix} (need lib/libmkl_rt.so* and include/mkl_cblas.h): "
            "pip install mkl mkl-devel mkl-include"
        )
    try:
        version = metadata.version("mkl")
    except metadata.PackageNotFoundError:
        version = "unknown"
    lib = libs[-1]
    return BlasInfo(
        name="mkl",
        version=f"Intel MKL {version} ({lib.name})",
        compile_args=("-DHPCA_USE_MKL", f"-I{prefix / 'include'}"),
        link_args=(str(lib), f"-Wl,-rpath,{lib.parent}"),
        # MKL on GNU OpenMP, the runtime the -fopenmp candidate uses: one runtime per process.
        env={"MKL_THREADING_LAYER": "GNU"},
        lib_dirs=[lib.parent.resolve()],
    )


def _openblas() -> BlasInfo:
    header = Path("/usr/include/x86_64-linux-gnu/cblas.h")
    candidates = [Path("/usr/include/cblas.h"), header, *Path("/usr/include").glob("*/cblas.h")]
    if not any(p.is_file() for p in candidates):
        raise BlasNotFound("OpenBLAS not found (no cblas.h): apt-get install libopenblas-dev")
    version = "unknown"
    for path in Path("/usr/share/doc").glob("libopenblas*-dev"):
        version = path.name
    try:
        import subprocess

        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libopenblas-dev"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout:
            version = out.stdout.strip()
    except OSError:
        pass
    return BlasInfo(
        name="openblas",
        version=f"OpenBLAS {version}",
        compile_args=(),
        link_args=("-lopenblas",),
        env={},
    )


def find_blas(name: str) -> BlasInfo:
    if name == "mkl":
        return _mkl()
    if name == "openblas":
        return _openblas()
    raise BlasNotFound(f"unknown reference BLAS '{name}' (use mkl or openblas)")
