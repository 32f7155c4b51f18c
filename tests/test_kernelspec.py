"""Kernel specs: adding a kernel is adding a folder; a bad one is named precisely."""

import shutil

import pytest
import yaml
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.spec.kernelspec import KernelError, load_kernel


def test_dgemm_spec_has_odd_sizes_and_blas_edge_cases():
    k = load_kernel("dgemm")
    sizes = {c["m"] for c in k.cases} | {c["n"] for c in k.cases}
    assert {1, 7, 63, 257} <= sizes
    assert any(c["beta"] == 0.0 for c in k.cases) and any(c["alpha"] == 0.0 for c in k.cases)
    assert any(0 in (c["m"], c["n"], c["k"]) for c in k.cases) and any(c.pad for c in k.cases)
    assert k.flops({"m": 2, "n": 3, "k": 4, "alpha": 1.0, "beta": 0.0}) == 48


def test_parameters_follow_the_signature_with_their_c_types():
    k = load_kernel("dgemm")
    assert [p.name for p in k.parameters] == [
        "m", "n", "k", "alpha", "A", "lda", "B", "ldb", "beta", "C", "ldc"
    ]  # fmt: skip
    a = k.param("A")
    assert (a.kind, a.ctype, a.intent, a.shape, a.ld) == (
        "array", "const double *", "in", ("m", "k"), "lda"
    )  # fmt: skip
    assert k.param("C").ctype == "double *" and k.param("C").poison_when == "beta == 0"
    # ld = max(1, last extent) + pad
    names = k.names({"m": 7, "n": 13, "k": 0, "alpha": 1.0, "beta": 0.5, "pad": 2})
    assert (names["lda"], names["ldb"], names["ldc"]) == (3, 15, 15)
    assert k.bench_case(64).values == {"m": 64, "n": 64, "k": 64, "alpha": 1.0, "beta": 0.0}


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
    with pytest.raises(KernelError, match="key 'flops'.*only min, max and abs may be called"):
        load_kernel("dgemm", kdir)


def test_missing_reference_file_is_named(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["reference"].update(adapter="nope.c"))
    with pytest.raises(KernelError, match=r"key 'reference'.*nope.c"):
        load_kernel("dgemm", kdir)


def test_a_parameter_that_differs_from_the_signature_is_named(tmp_path):
    def swap(raw):
        raw["parameters"][5], raw["parameters"][6] = raw["parameters"][6], raw["parameters"][5]

    kdir = copy_kernel(tmp_path, swap)
    with pytest.raises(
        KernelError, match=r"parameter 6 is 'B' but the signature's parameter 6 is 'lda'"
    ):
        load_kernel("dgemm", kdir)
    kdir = copy_kernel(tmp_path / "b", lambda raw: raw["parameters"][3].update(type="float"))
    with pytest.raises(KernelError, match=r"parameter 4 'alpha'.*float.*'double alpha'"):
        load_kernel("dgemm", kdir)

    def drop_ldc(raw):
        raw["parameters"].pop()
        raw["parameters"][-1].pop("ld")

    kdir = copy_kernel(tmp_path / "c", drop_ldc)
    with pytest.raises(KernelError, match=r"lists 10 parameters but the signature has 11"):
        load_kernel("dgemm", kdir)


def test_an_array_needs_its_type_intent_and_shape(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["parameters"][4].pop("intent"))
    with pytest.raises(KernelError, match=r"key 'parameters.4' \(A\): an array needs 'intent'"):
        load_kernel("dgemm", kdir)


def test_poison_when_is_a_safe_expression_over_the_parameters(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["parameters"][4].update(poison_when="gamma == 0"))
    with pytest.raises(KernelError, match=r"poison_when of A.*unknown name 'gamma'"):
        load_kernel("dgemm", kdir)
    kdir = copy_kernel(
        tmp_path / "b", lambda raw: raw["parameters"][4].update(poison_when="open('x')")
    )
    with pytest.raises(KernelError, match=r"only min, max and abs"):
        load_kernel("dgemm", kdir)


def test_a_case_with_an_unknown_or_missing_parameter_is_named(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["cases"][1].update(q=3))
    with pytest.raises(KernelError, match=r"key 'cases.1': 'q' is not a size or scalar"):
        load_kernel("dgemm", kdir)
    kdir = copy_kernel(tmp_path / "b", lambda raw: raw["bench"].pop("beta"))
    with pytest.raises(KernelError, match=r"key 'bench': missing beta"):
        load_kernel("dgemm", kdir)


def test_misspelt_key_is_named(tmp_path):
    def typo(raw):
        raw["tolerance"]["facter"] = raw["tolerance"].pop("factor")

    kdir = copy_kernel(tmp_path, typo)
    with pytest.raises(KernelError, match=r"key 'tolerance'.*'facter' was unexpected"):
        load_kernel("dgemm", kdir)


def test_bad_case_value_is_named_with_its_path(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw["cases"][3].update(m=-1))
    with pytest.raises(KernelError, match=r"key 'cases\.3': size 'm' must be an integer >= 0"):
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
    case = {"m": 2, "n": 3, "k": 4, "alpha": 1.0, "beta": 0.0}
    assert spec.flops(case) == 54 and spec.bytes(case) == 24
    assert spec.bench["m"] == raw["bench"]["m"] and len(spec.cases) == len(raw["cases"])


def test_name_must_match_the_folder_and_be_a_plain_name(tmp_path):
    kdir = copy_kernel(tmp_path, lambda raw: raw.update(name="sgemm"))
    with pytest.raises(KernelError, match=r"key 'name' is 'sgemm' but the folder is 'dgemm'"):
        load_kernel("dgemm", kdir)
    with pytest.raises(KernelError, match=r"unknown kernel '\.\./dgemm'"):
        load_kernel("../dgemm", kdir)


SPMV = {
    "name": "spmv",
    "title": "CSR sparse matrix-vector product",
    "description": "y = A x with A in CSR form",
    "function": "spmv",
    "signature": "void spmv(int n, const int *row_ptr, const int *col_idx, const double *val,"
    " const double *x, double *y)",
    "source": "spmv.c",
    "parameters": [
        {"name": "n", "kind": "size"},
        {"name": "row_ptr", "kind": "array", "type": "int", "intent": "in", "shape": ["n + 1"],
         "generator": {"kind": "csr", "matrix": "A", "part": "row_ptr"}},
        {"name": "col_idx", "kind": "array", "type": "int", "intent": "in", "shape": ["A_nnz"],
         "generator": {"kind": "csr", "matrix": "A", "part": "col_idx"}},
        {"name": "val", "kind": "array", "type": "double", "intent": "in", "shape": ["A_nnz"],
         "generator": {"kind": "csr", "matrix": "A", "part": "values"}},
        {"name": "x", "kind": "array", "type": "double", "intent": "in", "shape": ["n"]},
        {"name": "y", "kind": "array", "type": "double", "intent": "out", "shape": ["n"]},
    ],
    "sparse": {"A": {"rows": "n", "cols": "n", "density": 0.1}},
    "reference": {"file": "spmv.c"},
    "tolerance": {"model": "error_bound", "factor": 4, "terms": "A_nnz / max(n, 1) + 2"},
    "flops": "2*A_nnz",
    "bytes": "12*A_nnz + 16*n",
    "cases": [{"n": 1}, {"n": 37}],
    "bench": {"n": 1000},
    "fallback_strategies": [{"name": "simd", "description": "vectorise"}],
}  # fmt: skip


def write_kernel(tmp_path, raw, sources):
    d = tmp_path / "kernels" / raw["name"]
    d.mkdir(parents=True)
    (d / "kernel.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for name, text in sources.items():
        (d / name).write_text(text)
    return tmp_path / "kernels"


def test_a_sparse_matrix_needs_its_three_csr_arrays(tmp_path):
    raw = {**SPMV, "parameters": [p for p in SPMV["parameters"] if p["name"] != "col_idx"]}
    raw["signature"] = raw["signature"].replace(" const int *col_idx,", "")
    kdir = write_kernel(tmp_path, raw, {"spmv.c": "void spmv(void) {}\n"})
    with pytest.raises(KernelError, match=r"key 'sparse.A'.*col_idx.*missing"):
        load_kernel("spmv", kdir)


def test_nnz_of_a_generated_matrix_is_a_name_for_expressions(tmp_path):
    kdir = write_kernel(tmp_path, SPMV, {"spmv.c": "void spmv(void) {}\n"})
    k = load_kernel("spmv", kdir)
    assert k.names({"n": 1000})["A_nnz"] == 100_000 and k.flops({"n": 1000}) == 200_000
    assert k.names({"n": 1})["A_nnz"] == 1  # at least one per row
