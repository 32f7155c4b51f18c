"""Kernel specs: adding a kernel is adding a folder; a bad one is named precisely."""

import shutil

import pytest
import yaml
from hpcagents.artifacts import REPO_DIR
from hpcagents.kernelspec import KernelError, load_kernel


def test_dgemm_spec_has_odd_sizes_and_blas_edge_cases():
    k = load_kernel("dgemm")
    sizes = {c.m for c in k.cases} | {c.n for c in k.cases}
    assert {1, 7, 63, 257} <= sizes
    assert any(c.beta == 0.0 for c in k.cases) and any(c.alpha == 0.0 for c in k.cases)
    assert any(0 in (c.m, c.n, c.k) for c in k.cases) and any(c.pad for c in k.cases)
    assert k.flops(2, 3, 4) == 48


def copy_kernel(tmp_path, mutate):
    dst = tmp_path / "kernels" / "dgemm"
    shutil.copytree(REPO_DIR / "kernels" / "dgemm", dst)
    raw = yaml.safe_load((dst / "kernel.yaml").read_text())
    mutate(raw)
    (dst / "kernel.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "kernels"


def test_unknown_kernel_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(KernelError, match=r"unknown kernel 'zgemm'.*known: dgemm"):
        load_kernel("zgemm")


def test_missing_key_is_named(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.pop("function"))
    with pytest.raises(KernelError, match=r"'function' is a required property"):
        load_kernel("dgemm", kdir)


def test_flops_expression_cannot_run_code(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.update(flops="__import__('os').getpid()"))
    with pytest.raises(KernelError, match="not allowed"):
        load_kernel("dgemm", kdir)


def test_missing_harness_file_is_named(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.update(harness="nope.c"))
    with pytest.raises(KernelError, match=r"key 'harness'.*nope.c"):
        load_kernel("dgemm", kdir)
