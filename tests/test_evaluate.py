"""The generic judge on dgemm: real gcc, real MKL, every failure a status with a reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hpcagents.core.artifacts import REPO_DIR, validate
from hpcagents.judge.blas import BlasNotFound, find_blas
from hpcagents.judge.evaluate import evaluate_source, failed_generation_record
from hpcagents.judge.timing import BuildConfig, EvalConfig
from hpcagents.spec.kernelspec import load_kernel

KERNEL = load_kernel("dgemm")
FAST = EvalConfig(repeats=2, warmup=1, timeout_s=60, bench_size=128)
SCRIPTED = REPO_DIR / "kernels" / "dgemm" / "scripted"
HEAD = (
    "void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,\n"
    "                  const double *B, int ldb, double beta, double *C, int ldc)\n"
)
# An honest i-k-j kernel; variants below break exactly one rule each.
IKJ = (
    HEAD
    + """{
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        for (int j = 0; j < n; j++) c[j] = beta == 0.0 ? 0.0 : beta * c[j];
        if (alpha == 0.0) continue;
        for (int p = 0; p < k; p++) {
            double a = alpha * A[(long)i * lda + p];
            for (int j = 0; j < n; j++) c[j] += a * B[(long)p * ldb + j];
        }
    }
}
"""
)


def evaluate(tmp_path: Path, code: str, cfg: EvalConfig = FAST) -> dict:
    src = tmp_path / "cand.c"
    src.write_text(code)
    rec = evaluate_source(KERNEL, src, tmp_path / "work", BuildConfig(), cfg)
    validate(rec, "evaluation")
    return rec


def test_baseline_is_ok_with_figures_measured_side_by_side(tmp_path):
    rec = evaluate(tmp_path, (KERNEL.directory / "dgemm.c").read_text())
    assert rec["status"] == "ok", rec["reason"]
    t, r = rec["timing"], rec["reference"]
    assert t["gflops"] > 0 and r["gflops"] > 0 and len(t["runs_s"]) == 2
    assert rec["pct_of_reference"] == pytest.approx(100 * t["gflops"] / r["gflops"], rel=1e-3)
    assert r["name"] == "mkl" and "MKL" in r["version"]
    assert t["case"] == {"m": 128, "n": 128, "k": 128, "alpha": 1.0, "beta": 0.0}
    prov = rec["provenance"]
    assert prov["cflags"] == ["-O3", "-march=native", "-fopenmp"] and prov["compiler"]
    # kernel.yaml's cases and one drawn by the judge (sizes no published case has)
    assert len(rec["validation"]["cases"]) == len(KERNEL.cases) + 1
    published = [dict(c.values) for c in KERNEL.cases]
    assert sum(c["case"] not in published for c in rec["validation"]["cases"]) == 1


def test_honest_ikj_variant_is_ok(tmp_path):
    assert evaluate(tmp_path, IKJ)["status"] == "ok"


def test_each_validation_uses_a_fresh_seed(tmp_path):
    a = evaluate(tmp_path, IKJ)["validation"]["seed"]
    b = evaluate(tmp_path, IKJ)["validation"]["seed"]
    assert a != b


def test_ignoring_beta_is_wrong_answer_naming_the_case(tmp_path):
    code = IKJ.replace("beta == 0.0 ? 0.0 : beta * c[j]", "0.0")
    rec = evaluate(tmp_path, code)
    assert rec["status"] == "wrong_answer"
    # the first failing case (in kernel.yaml order), where, and by how much
    assert re.match(
        r"case m=7 n=13 k=5 alpha=-0.75 beta=0.5 pad=1: \d+ of 91 elements wrong; "
        r"first C\[\d+\]\[\d+\] = \S+ vs reference \S+ \(\|err\| \S+ > bound \S+\)",
        rec["reason"],
    ), rec["reason"]
    assert "more failing case" in rec["reason"]
    assert rec["timing"] is None and rec["reference"] is None
    case = rec["validation"]["cases"][2]
    assert case["status"] == "wrong_answer" and case["wrong"] > 0
    assert set(case["first_bad"]) == {"array", "index", "got", "want", "bound"}
    assert case["first_bad"]["array"] == "C" and len(case["first_bad"]["index"]) == 2
    assert rec["validation"]["cases"][0]["status"] == "ok"  # beta == 0 there


def test_skipping_the_last_column_is_wrong_answer(tmp_path):
    rec = evaluate(
        tmp_path,
        IKJ.replace(
            "for (int j = 0; j < n; j++) c[j] +=", "for (int j = 0; j < n - 1; j++) c[j] +="
        ),
    )
    assert rec["status"] == "wrong_answer"
    assert rec["reason"].startswith("case m=1 n=1 k=1") and "first C[0][0]" in rec["reason"]


def test_wrong_only_at_the_bench_size_is_wrong_answer(tmp_path):
    # passes every validation case, but drops the last column at the timed size
    code = IKJ.replace(
        "{\n    for (int i", "{\n    if (m == 128 && n == 128 && k == 128) n--;\n    for (int i", 1
    )
    rec = evaluate(tmp_path, code)
    assert rec["validation"]["passed"] is True
    assert rec["status"] == "wrong_answer" and "bench m=128 n=128 k=128" in rec["reason"]
    assert rec["timing"] is None


def test_reading_a_when_alpha_is_zero_is_wrong_answer(tmp_path):
    # computes alpha * (A B) even when alpha == 0: A and B hold NaN then
    rec = evaluate(tmp_path, IKJ.replace("if (alpha == 0.0) continue;", ""))
    assert rec["status"] == "wrong_answer"
    assert "alpha=0" in rec["reason"] and "alpha == 0" in rec["reason"]


def test_reading_c_when_beta_is_zero_is_wrong_answer(tmp_path):
    code = IKJ.replace("beta == 0.0 ? 0.0 : beta * c[j]", "beta * c[j]")
    rec = evaluate(tmp_path, code)
    assert rec["status"] == "wrong_answer"
    assert rec["reason"].startswith("case m=1 n=1 k=1 alpha=1 beta=0 pad=0")
    assert (
        "= nan vs reference" in rec["reason"] and "C was read although beta == 0" in rec["reason"]
    )


def test_writing_the_padding_of_c_is_wrong_answer(tmp_path):
    code = IKJ.replace(
        "for (int j = 0; j < n; j++) c[j] = beta", "for (int j = 0; j < ldc; j++) c[j] = beta"
    )
    rec = evaluate(tmp_path, code)
    assert rec["status"] == "wrong_answer" and "padding" in rec["reason"]
    assert "pad=1" in rec["reason"] and "ldc=14" in rec["reason"]
    assert rec["validation"]["cases"][2]["padding_overwritten"] == 7  # one per row, m=7


def test_modifying_an_input_is_rejected(tmp_path):
    # correct result, but A is scribbled on after use
    code = IKJ[: IKJ.rindex("}")] + "    if (m > 0 && k > 0) ((double *)A)[0] *= 0.5;\n}\n"
    rec = evaluate(tmp_path, code)
    # inputs are mapped read-only in the candidate's process: the write faults at once
    assert rec["status"] == "crash", rec["reason"]
    assert "its input A" in rec["reason"] and "read-only" in rec["reason"]


def test_single_precision_accumulation_exceeds_the_tolerance(tmp_path):
    code = (
        IKJ.replace("double a = alpha", "float a = (float)alpha")
        .replace("c[j] += a * B", "c[j] += (float)(a * (float)B")
        .replace("B[(long)p * ldb + j];", "B[(long)p * ldb + j]);")
    )
    rec = evaluate(tmp_path, code)
    assert rec["status"] == "wrong_answer", rec["reason"]
    assert "elements wrong" in rec["reason"]


def test_compile_error_keeps_the_compiler_output(tmp_path):
    rec = evaluate(tmp_path, IKJ.replace("double *c =", "double *c ="[:-1] + "= undeclared_x +"))
    assert rec["status"] == "compile_error"
    assert "undeclared_x" in rec["compile"]["output"] and "error" in rec["reason"]


def test_missing_kernel_function_is_link_error(tmp_path):
    rec = evaluate(tmp_path, IKJ.replace("kernel_dgemm", "my_dgemm"))
    assert rec["status"] == "link_error" and "kernel_dgemm" in rec["compile"]["output"]


def test_segfault_is_crash_with_the_signal(tmp_path):
    rec = evaluate(tmp_path, HEAD + "{ volatile double *p = 0; *p = alpha; }\n")
    assert rec["status"] == "crash" and "SIGSEGV" in rec["reason"]


def test_endless_loop_is_timeout(tmp_path):
    cfg = EvalConfig(repeats=1, warmup=0, timeout_s=2, bench_size=64)
    rec = evaluate(tmp_path, HEAD + "{ for (volatile int x = 0;; x++) ; }\n", cfg)
    assert rec["status"] == "timeout" and "2 s" in rec["reason"]


def test_openblas_is_an_alternative_reference(tmp_path):
    try:
        find_blas("openblas")
    except BlasNotFound as exc:
        pytest.skip(str(exc))
    rec = evaluate(
        tmp_path,
        IKJ,
        EvalConfig(repeats=2, warmup=1, timeout_s=60, bench_size=128, blas="openblas"),
    )
    assert rec["status"] == "ok", rec["reason"]
    assert rec["reference"]["name"] == "openblas" and "OpenBLAS" in rec["reference"]["version"]
    assert rec["provenance"]["blas"] == "openblas" and rec["reference"]["gflops"] > 0


def test_missing_reference_library_is_harness_error(tmp_path):
    rec = evaluate(tmp_path, IKJ, EvalConfig(blas="essl"))
    assert rec["status"] == "harness_error" and "essl" in rec["reason"]
    assert rec["compile"] is None


def test_failed_generation_record_is_schema_valid(tmp_path):
    for status in ("no_code", "truncated", "generation_error"):
        rec = failed_generation_record(
            KERNEL, tmp_path / "dgemm.c", status, "the answer had no code"
        )
        validate(rec, "evaluation")
        assert rec["status"] == status and rec["compile"] is None and rec["timing"] is None


def test_cli_bad_usage_exits_non_zero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcagents", "evaluate", "--kernel", "zgemm", "--source", "x.c"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "unknown kernel 'zgemm'" in proc.stderr


def test_cli_evaluates_a_kernel_kept_outside_the_checkout(tmp_path):
    from conftest import copy_kernel

    mine = copy_kernel("mm", tmp_path / "own")
    cmd = [sys.executable, "-m", "hpcagents", "evaluate", "--kernel", "mm"]
    cmd += ["--source", str(mine / "mm.c"), "--bench-size", "64", "--repeats", "1"]
    cmd += ["--out", str(tmp_path / "mm.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "unknown kernel 'mm'" in proc.stderr
    own = subprocess.run(
        [*cmd, "--kernels-dir", str(tmp_path / "own")], capture_output=True, text=True, timeout=300
    )
    assert own.returncode == 0, own.stderr
    assert json.loads((tmp_path / "mm.json").read_text())["status"] == "ok"


def test_cli_evaluate_baseline_variant_and_wrong_file(tmp_path):
    wrong = tmp_path / "wrong.c"
    wrong.write_text(IKJ.replace("c[j] += a *", "c[j] -= a *"))
    statuses = []
    for src in (KERNEL.directory / "dgemm.c", SCRIPTED / "packed_b.c", wrong):
        out = tmp_path / f"{src.stem}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "hpcagents",
                "evaluate",
                "--kernel",
                "dgemm",
                "--source",
                str(src),
                "--bench-size",
                "128",
                "--repeats",
                "2",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        rec = json.loads(out.read_text())
        validate(rec, "evaluation")
        assert f"status: {rec['status']}" in proc.stdout
        statuses.append(rec["status"])
        if rec["status"] == "ok":
            assert "GFLOP/s" in proc.stdout and "% of MKL" in proc.stdout
    assert statuses == ["ok", "ok", "wrong_answer"]


STENCIL_YAML = {
    "name": "jacobi",
    "title": "3-D 7-point Jacobi sweep",
    "description": "v[interior] = w0*u + w1*(sum of the 6 neighbours); the halo is input only",
    "function": "jacobi",
    "signature": "void jacobi(int nz, int ny, int nx, double w0, double w1, const double *u,"
    " double *v)",
    "source": "jacobi.c",
    "parameters": [
        {"name": "nz", "kind": "size"},
        {"name": "ny", "kind": "size"},
        {"name": "nx", "kind": "size"},
        {"name": "w0", "kind": "scalar", "type": "double"},
        {"name": "w1", "kind": "scalar", "type": "double"},
        {"name": "u", "kind": "array", "type": "double", "intent": "in",
         "shape": ["nz + 2", "ny + 2", "nx + 2"], "halo": 1},
        {"name": "v", "kind": "array", "type": "double", "intent": "out",
         "shape": ["nz + 2", "ny + 2", "nx + 2"], "halo": 1},
    ],
    "reference": {"file": "original.c", "describe": "the original loop nest"},
    "tolerance": {"model": "error_bound", "factor": 4, "terms": 7},
    "flops": "8*nz*ny*nx",
    "bytes": "16*nz*ny*nx",
    "cases": [{"nz": 1, "ny": 1, "nx": 1, "w0": 0.5, "w1": 0.25},
              {"nz": 5, "ny": 7, "nx": 3, "w0": -0.5, "w1": 0.125}],
    "bench": {"nz": 24, "ny": 24, "nx": 24, "w0": 0.4, "w1": 0.1},
    "fallback_strategies": [{"name": "simd", "description": "vectorise the x loop"}],
}  # fmt: skip
JACOBI = """
void jacobi(int nz, int ny, int nx, double w0, double w1, const double *u, double *v)
{
    long sy = nx + 2, sz = (long)(ny + 2) * (nx + 2);
    for (int z = 1; z <= nz; z++)
        for (int y = 1; y <= ny; y++)
            for (int x = LO; x <= nx; x++) {
                long i = z * sz + y * sy + x;
                v[i] = w0 * u[i] + w1 * (u[i - 1] + u[i + 1] + u[i - sy] + u[i + sy]
                                         + u[i - sz] + u[i + sz]);
            }
}
"""
SPMV_YAML = {
    "name": "spmv",
    "title": "CSR sparse matrix-vector product",
    "description": "y = A x, A in CSR form",
    "function": "spmv",
    "signature": "void spmv(int n, const int *row_ptr, const int *col_idx, const double *val,"
    " const double *x, double *y)",
    "source": "spmv.c",
    "sparse": {"A": {"rows": "n", "cols": "n", "density": 0.05}},
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
    "reference": {"file": "original.c"},
    "tolerance": {"model": "error_bound", "factor": 4, "terms": "A_nnz / max(n, 1) + 2"},
    "flops": "2*A_nnz",
    "bytes": "12*A_nnz + 16*n",
    "cases": [{"n": 1}, {"n": 37}, {"n": 0}],
    "bench": {"n": 2000},
    "fallback_strategies": [{"name": "simd", "description": "vectorise"}],
}  # fmt: skip
SPMV = """
void spmv(int n, const int *row_ptr, const int *col_idx, const double *val, const double *x,
          double *y)
{
    for (int i = 0; i < n - SKIP; i++) {
        double s = 0.0;
        for (int p = row_ptr[i]; p < row_ptr[i + 1]; p++) s += val[p] * x[col_idx[p]];
        y[i] = s;
    }
}
"""


def make_kernel(tmp_path: Path, raw: dict, reference: str, baseline: str):
    import yaml
    from hpcagents.spec.kernelspec import load_kernel as load

    d = tmp_path / "kernels" / raw["name"]
    d.mkdir(parents=True)
    (d / "kernel.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (d / "original.c").write_text(reference)
    (d / raw["source"]).write_text(baseline)
    return load(raw["name"], tmp_path / "kernels")


def test_a_stencil_with_a_halo_and_a_reference_file_needs_no_python(tmp_path):
    kernel = make_kernel(
        tmp_path, STENCIL_YAML, JACOBI.replace("LO", "1"), JACOBI.replace("LO", "1")
    )
    cfg = EvalConfig(repeats=2, warmup=1, timeout_s=60)
    src = kernel.directory / "jacobi.c"
    rec = evaluate_source(kernel, src, tmp_path / "ok", BuildConfig(), cfg)
    validate(rec, "evaluation")
    assert rec["status"] == "ok", rec["reason"]
    assert rec["reference"]["name"] == "original.c" and rec["timing"]["case"]["nz"] == 24
    assert rec["timing"]["flops"] == 8 * 24**3
    # writing the halo (x from 0) is caught, named, and the element is 3-D
    bad = tmp_path / "bad.c"
    bad.write_text(JACOBI.replace("x = LO; x <= nx", "x = 1; x <= nx + 1").replace("LO", "1"))
    rec = evaluate_source(kernel, bad, tmp_path / "bad", BuildConfig(), cfg)
    assert rec["status"] == "wrong_answer"
    assert "v's padding" in rec["reason"] and "halo of 1 cell" in rec["reason"]


def test_a_csr_kernel_gets_generated_sparse_inputs(tmp_path):
    kernel = make_kernel(tmp_path, SPMV_YAML, SPMV.replace("SKIP", "0"), SPMV.replace("SKIP", "0"))
    cfg = EvalConfig(repeats=2, warmup=1, timeout_s=60)
    rec = evaluate_source(kernel, kernel.directory / "spmv.c", tmp_path / "a", BuildConfig(), cfg)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["timing"]["flops"] == 2 * 2000 * 100
    bad = tmp_path / "bad.c"
    bad.write_text(SPMV.replace("SKIP", "1"))
    rec = evaluate_source(kernel, bad, tmp_path / "b", BuildConfig(), cfg)
    assert rec["status"] == "wrong_answer"
    assert re.match(r"case n=\d+: \d+ of \d+ elements wrong; first y\[\d+\] = nan", rec["reason"])
    assert "y holds NaN on entry: this element was not written" in rec["reason"]


def test_generators_make_what_they_promise(tmp_path):
    import numpy as np
    from hpcagents.judge.arena import generate_inputs, plan

    raw = {
        **SPMV_YAML,
        "name": "gens",
        "function": "gens",
        "source": "gens.c",
        "signature": "void gens(int n, const int *row_ptr, const int *col_idx, const double *val,"
        " const double *x, double *y, const double *S, const float *P, const double *K)",
        "parameters": [
            *SPMV_YAML["parameters"],
            {"name": "S", "kind": "array", "type": "double", "intent": "in",
             "shape": ["n", "n"], "generator": "spd"},
            {"name": "P", "kind": "array", "type": "float", "intent": "in",
             "shape": ["n"], "generator": "uniform_positive"},
            {"name": "K", "kind": "array", "type": "double", "intent": "in",
             "shape": ["n"], "generator": {"kind": "constant", "value": 2.5}},
        ],
    }  # fmt: skip
    kernel = make_kernel(tmp_path, raw, "void gens(void) {}\n", "void gens(void) {}\n")
    lay = plan(kernel, kernel.cases[1])
    data = generate_inputs(kernel, lay, np.random.default_rng(3))
    s = data["S"]
    assert np.array_equal(s, s.T) and np.all(np.linalg.eigvalsh(s) > 0)
    assert data["P"].dtype == np.float32 and np.all(data["P"] > 0)
    assert np.all(data["K"] == 2.5)
    rp, ci = data["row_ptr"], data["col_idx"]
    assert rp.dtype == np.int32 and rp[0] == 0 and rp[-1] == len(ci) == lay.names["A_nnz"]
    for i in range(37):
        row = ci[rp[i] : rp[i + 1]]
        assert np.all(np.diff(row) > 0) and np.all(row >= 0) and np.all(row < 37)
    # fresh inputs on every call: never the same twice, nor a power-of-two rescale
    again = generate_inputs(kernel, lay, np.random.default_rng(4))
    ratio = again["x"] / data["x"]
    assert not np.all(ratio == ratio[0])


def test_single_precision_with_a_relative_tolerance(tmp_path):
    raw = {
        "name": "saxpy",
        "title": "y = a x + y in single precision",
        "description": "y[i] = a * x[i] + y[i]",
        "function": "saxpy",
        "signature": "void saxpy(long n, float a, const float *x, float *y)",
        "source": "saxpy.c",
        "parameters": [
            {"name": "n", "kind": "size"},
            {"name": "a", "kind": "scalar", "type": "float"},
            {"name": "x", "kind": "array", "type": "float", "intent": "in", "shape": ["n"]},
            {"name": "y", "kind": "array", "type": "float", "intent": "inout", "shape": ["n"]},
        ],
        "reference": {"file": "original.c"},
        "tolerance": {"model": "relative", "rtol": 1e-6, "atol": 1e-6},
        "flops": "2*n",
        "bytes": "12*n",
        "cases": [{"n": 1, "a": 0.5}, {"n": 1001, "a": -2.0}],
        "bench": {"n": 100000, "a": 1.5},
        "fallback_strategies": [{"name": "simd", "description": "vectorise"}],
    }
    code = (
        "void saxpy(long n, float a, const float *x, float *y)\n"
        "{ for (long i = 0; i < n; i++) y[i] = a * x[i] + y[i]; }\n"
    )
    kernel = make_kernel(tmp_path, raw, code, code)
    cfg = EvalConfig(repeats=2, warmup=1, timeout_s=60)
    rec = evaluate_source(kernel, kernel.directory / "saxpy.c", tmp_path / "a", BuildConfig(), cfg)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["validation"]["tolerance"] == {"model": "relative", "rtol": 1e-6, "atol": 1e-6}
    bad = tmp_path / "bad.c"
    bad.write_text(code.replace("a * x[i] + y[i]", "a * x[i] + y[i] * 1.001f"))
    rec = evaluate_source(kernel, bad, tmp_path / "b", BuildConfig(), cfg)
    assert rec["status"] == "wrong_answer" and "first y[0]" in rec["reason"]


def test_a_definition_whose_types_differ_from_the_signature_is_a_compile_error(tmp_path):
    """The prototype is force-included: float alpha is not an ABI mismatch found at run
    time but a compile error the PG can repair, naming both types."""
    rec = evaluate(tmp_path, IKJ.replace("double alpha", "float alpha"))
    assert rec["status"] == "compile_error" and "conflicting types" in rec["reason"]
    assert "previous declaration" in rec["compile"]["output"]
    assert "Multiple include guards" not in rec["compile"]["output"]
