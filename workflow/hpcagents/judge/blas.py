"""Locate the BLAS a library reference (e.g. dgemm's adapter) links: Intel MKL (PyPI
wheels) or OpenBLAS (Debian)."""

from __future__ import annotations

import subprocess
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
    compile_args: tuple[str, ...]  # -D macro selecting the header + -I include dir
    link_args: tuple[str, ...]  # the library by real path + rpath: no LD_LIBRARY_PATH needed
    env: dict[str, str] = field(default_factory=dict)  # runtime environment of the reference runner
    lib_dirs: list[Path] = field(default_factory=list)  # read-only inside the sandbox
    header: str = "cblas.h"


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
    lib = libs[-1]  # the wheels ship only the versioned libmkl_rt.so.N: link it by path
    return BlasInfo(
        name="mkl",
        version=f"Intel MKL {version} ({lib.name})",
        compile_args=("-DHPCA_USE_MKL", f"-I{header.parent}"),
        link_args=(str(lib), f"-Wl,-rpath,{lib.parent}"),
        # MKL on GNU OpenMP, the runtime the -fopenmp candidate uses: one runtime per process.
        env={"MKL_THREADING_LAYER": "GNU"},
        lib_dirs=[lib.parent.resolve()],
        header="mkl_cblas.h",
    )


def _gcc_file(name: str, cc: str = "gcc") -> Path | None:
    """Where the compiler would find ``name`` (None when it would not)."""
    try:
        out = subprocess.run(
            [cc, f"-print-file-name={name}"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = Path(out)
    return path if path.is_absolute() and path.exists() else None


def _openblas() -> BlasInfo:
    # Debian selects the OpenBLAS flavour (pthread/openmp/serial) through symlinks in
    # /etc/alternatives, which the sandbox does not see: resolve them to the real files
    # and link that directory with an rpath.
    headers = [
        Path("/usr/include/x86_64-linux-gnu/cblas.h"),
        Path("/usr/include/openblas/cblas.h"),
        Path("/usr/include/cblas.h"),
        *sorted(Path("/usr/include").glob("*/cblas.h")),
    ]
    header = next((p.resolve() for p in headers if p.is_file()), None)
    lib = _gcc_file("libopenblas.so")
    if header is None or lib is None:
        raise BlasNotFound(
            "OpenBLAS not found (need cblas.h and libopenblas.so): apt-get install libopenblas-dev"
        )
    lib_dir = lib.resolve().parent
    version = "unknown"
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libopenblas-dev"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout:
            version = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return BlasInfo(
        name="openblas",
        version=f"OpenBLAS {version} ({lib_dir.name})",
        compile_args=(f"-I{header.parent}",),
        link_args=(f"-L{lib_dir}", "-lopenblas", f"-Wl,-rpath,{lib_dir}"),
        env={},
        lib_dirs=[lib_dir],
        header="cblas.h",
    )


def find_blas(name: str) -> BlasInfo:
    """The reference library ``name`` (mkl | openblas); :class:`BlasNotFound` if missing."""
    if name == "mkl":
        return _mkl()
    if name == "openblas":
        return _openblas()
    raise BlasNotFound(f"unknown reference BLAS '{name}' (use mkl or openblas)")
