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


def test_misspelt_key_is_named(tmp_path):
    def typo(raw):
        raw["validation"]["tolerence_factor"] = raw["validation"].pop("tolerance_factor")

    kdir = copy_kernel(tmp_path, typo)
    with pytest.raises(KernelError, match=r"key 'validation'.*'tolerence_factor' was unexpected"):
        load_kernel("dgemm", kdir)


def test_bad_case_value_is_named_with_its_path(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["validation"]["cases"][3].update(m=-1))
    with pytest.raises(KernelError, match=r"key 'validation\.cases\.3\.m'"):
        load_kernel("dgemm", kdir)


def test_expressions_are_restricted_to_small_arithmetic(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.update(bytes="m**n**k"))
    with pytest.raises(KernelError, match=r"key 'bytes'.*exponents must be constants"):
        load_kernel("dgemm", kdir)
    kdir = copy_kernel(tmp_path / "b", lambda raw: raw.update(flops="2*m*n*q"))
    with pytest.raises(KernelError, match=r"key 'flops'.*unknown name 'q'"):
        load_kernel("dgemm", kdir)


def test_a_new_kernel_is_a_new_folder(tmp_path):
    """Nothing in the loader names dgemm: a renamed copy loads as its own kernel."""
    src = REPO_DIR / "kernels" / "dgemm"
    dst = tmp_path / "kernels" / "mydgemm"
    shutil.copytree(src, dst)
    raw = yaml.safe_load((dst / "kernel.yaml").read_text())
    raw.update(name="mydgemm", flops="2*m*n*k + m*n", bytes=8 * 3)
    (dst / "kernel.yaml").write_text(yaml.safe_dump(raw))
    spec = load_kernel("mydgemm", tmp_path / "kernels")
    assert spec.name == "mydgemm" and spec.directory == dst
    assert spec.flops(2, 3, 4) == 54 and spec.bytes(5, 5, 5) == 24
    assert spec.bench.m == raw["bench"]["m"] and len(spec.cases) == len(raw["validation"]["cases"])


def test_name_must_match_the_folder_and_be_a_plain_name(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.update(name="sgemm"))
    with pytest.raises(KernelError, match=r"key 'name' is 'sgemm' but the folder is 'dgemm'"):
        load_kernel("dgemm", kdir)
    with pytest.raises(KernelError, match=r"unknown kernel '\.\./dgemm'"):
        load_kernel("../dgemm", kdir)
