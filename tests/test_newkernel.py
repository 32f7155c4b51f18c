"""hpcagents new-kernel: a user's C function becomes a kernel folder with marked blanks."""

import copy
import subprocess
import sys

import pytest
import yaml
from hpcagents.core.artifacts import REPO_DIR
from hpcagents.spec import kernelspec
from hpcagents.spec.kernelspec import BlanksError, check_blanks, find_blanks
from hpcagents.spec.newkernel import PrototypeError, new_kernel, parse_prototype

USER_CODE = """\
#include <math.h>
/* A user's force loop, as it came: comments, odd spacing, a static helper. */
static double sq(double x) { return x * x; }

void
accel (  int n , /* bodies */ const double * restrict pos,
         double const *mass,   double eps2,
         double acc[] )   // written
{
    for (int i = 0; i < n; i++) {
        acc[i] = 0.0;
        for (int j = 0; j < n; j++) {
            double d = pos[j] - pos[i];
            acc[i] += mass[j] * d / sqrt(sq(d) + eps2);
        }
    }
}
"""


def test_prototype_with_comments_odd_spacing_and_line_breaks_is_parsed():
    proto = parse_prototype(USER_CODE, "accel")
    assert [p.name for p in proto.params] == ["n", "pos", "mass", "eps2", "acc"]
    assert [p.kind for p in proto.params] == ["size", "array", "array", "scalar", "array"]
    assert [p.const for p in proto.params] == [False, True, True, False, False]
    assert proto.signature == (
        "void accel(int n, const double *restrict pos, const double *mass, double eps2, "
        "double *acc)"
    )


@pytest.mark.parametrize(
    "decl, kind, element",
    [
        ("int n", "size", "int"),
        ("long  n", "size", "int64"),
        ("size_t n", "size", "int64"),
        ("const long int n", "size", "int64"),
        ("float s", "scalar", "float"),
        ("double s", "scalar", "double"),
        ("const float *x", "array", "float"),
        ("int *idx", "array", "int"),
        ("long *idx", "array", "int64"),
        ("double *const y", "array", "double"),
    ],
)
def test_each_supported_type_becomes_its_kind(decl, kind, element):
    proto = parse_prototype(f"void f({decl}, double *out) {{ }}", "f")
    p = proto.params[0]
    assert (p.kind, p.element) == (kind, element)


def test_const_pointer_is_an_input_and_const_pointer_itself_is_not():
    proto = parse_prototype("void f(const double *a, double *const b) { }", "f")
    assert proto.params[0].const and not proto.params[1].const


@pytest.mark.parametrize(
    "code, message",
    [
        ("int f(int n, double *y) { return 0; }", r"returns 'int'.*a kernel returns void"),
        ("static void f(int n, double *y) { }", r"'f' is static.*remove 'static'"),
        ("void f(struct p *s, double *y) { }", r"type 'struct p' is not supported"),
        ("void f(int n, double **y) { }", r"pointers to pointers are not supported"),
        ("void f(int n, double y[4][4]) { }", r"multi-dimensional array"),
        ("void f(int n, ...) { }", r"variadic"),
        ("void f(int, double *y) { }", r"parameter 1 'int' has no name"),
        ("void f(unsigned n, double *y) { }", r"unsigned integers are not supported"),
        ("void f(int n, const double *x) { }", r"no non-const pointer parameter"),
        ("void f(void) { }", r"takes no parameters"),
        ("void f(int n, double (*g)(double), double *y) { }", r"function pointers"),
        ("void f(int n, double *y);", r"no definition of 'f' found"),
        ("void g(int n, double *y) { }", r"no definition of 'f' found.*defined in the file: g"),
    ],
)
def test_what_cannot_be_parsed_gets_a_clear_error(code, message):
    with pytest.raises(PrototypeError, match=message):
        parse_prototype(code, "f")


def test_a_macro_or_a_call_is_not_taken_for_the_definition():
    code = (
        "#define f(n, y) other(n, y)\n"
        "void other(int n, double *y);\n"
        "void run(void) { double y[2]; f(2, y); }\n"
        "void f(int n,\n double *y) { y[0] = n; }\n"
    )
    proto = parse_prototype(code.replace("void run(void)", "static void run(void)"), "f")
    assert [p.name for p in proto.params] == ["n", "y"]


def test_a_file_with_main_or_other_global_functions_is_refused(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(USER_CODE + "\nint main(void) { return 0; }\n")
    with pytest.raises(PrototypeError, match=r"also defines main.*make helpers static"):
        new_kernel("prog", src, "accel", tmp_path / "kernels")
    assert not (tmp_path / "kernels" / "prog").exists()


def make(tmp_path, name="userforce"):
    src = tmp_path / "force.c"
    src.write_text(USER_CODE)
    return src, new_kernel(name, src, "accel", tmp_path / "kernels")


def test_user_file_is_both_the_baseline_and_the_reference(tmp_path):
    src, folder = make(tmp_path)
    assert (folder / "userforce.c").read_bytes() == src.read_bytes()
    assert (folder / "original.c").read_bytes() == src.read_bytes()
    raw = yaml.safe_load((folder / "kernel.yaml").read_text())
    assert raw["source"] == "userforce.c"
    assert raw["reference"]["file"] == "original.c"
    assert raw["function"] == "accel"


def test_existing_folder_is_kept_unless_forced(tmp_path):
    src, folder = make(tmp_path)
    (folder / "userforce.c").write_text("/* edited */\n")
    with pytest.raises(PrototypeError, match=r"exists.*--force"):
        new_kernel("userforce", src, "accel", tmp_path / "kernels")
    assert (folder / "userforce.c").read_text() == "/* edited */\n"
    new_kernel("userforce", src, "accel", tmp_path / "kernels", force=True)
    assert (folder / "userforce.c").read_text() == USER_CODE


def test_blanks_error_names_every_blank_and_what_to_write(tmp_path):
    _, folder = make(tmp_path)
    raw = yaml.safe_load((folder / "kernel.yaml").read_text())
    with pytest.raises(BlanksError) as info:
        check_blanks(raw, folder / "kernel.yaml")
    keys = [key for key, _ in info.value.blanks]
    # the shapes of all three arrays, the intent of the written one, and the case values
    for key in (
        "title",
        "description",
        "parameters.1 (pos).shape.0",
        "parameters.2 (mass).shape.0",
        "parameters.4 (acc).shape.0",
        "parameters.4 (acc).intent",
        "tolerance",
        "flops",
        "bytes",
        "cases.0.n",
        "cases.2.eps2",
        "bench.n",
        "bench.eps2",
    ):
        assert key in keys
        assert f"  - {key}: " in str(info.value)
    assert "parameters.1 (pos).intent" not in keys  # const pointer: intent in, no blank
    assert f"{len(keys)} blank(s) left" in str(info.value)
    assert len(keys) == len(set(keys)) == len(find_blanks(raw))


FILLED = {
    "title": "1-D softened pairwise accelerations",
    "description": "acc[i] = sum_j mass[j]*(pos[j]-pos[i])/sqrt((pos[j]-pos[i])^2 + eps2).",
    "tolerance": {"model": "relative", "rtol": 1e-10, "atol": 1e-10},
    "flops": "8*n*n",
    "bytes": "8*3*n",
    "cases": [{"n": 1, "eps2": 0.01}, {"n": 7, "eps2": 0.5}, {"n": 129, "eps2": 0.01}],
    "bench": {"n": 2000, "eps2": 0.01},
}


def fill(raw):
    raw.update(copy.deepcopy(FILLED))
    for p in raw["parameters"]:
        if p["kind"] == "array":
            p["shape"] = ["n"]
            if str(p["intent"]).startswith("FILL_ME"):
                p["intent"] = "out"
    return raw


def test_filled_in_kernel_has_no_blanks_left(tmp_path):
    _, folder = make(tmp_path)
    raw = fill(yaml.safe_load((folder / "kernel.yaml").read_text()))
    check_blanks(raw, folder / "kernel.yaml")
    assert find_blanks(raw) == []


def test_one_blank_left_is_the_only_one_named(tmp_path):
    _, folder = make(tmp_path)
    raw = fill(yaml.safe_load((folder / "kernel.yaml").read_text()))
    raw["bench"]["n"] = "FILL_ME: the timing size"
    with pytest.raises(BlanksError, match=r"1 blank\(s\) left.*\n  - bench.n: the timing size$"):
        check_blanks(raw, "kernel.yaml")


GENERIC_LOADER = hasattr(kernelspec, "parse_signature")


@pytest.mark.skipif(
    not GENERIC_LOADER,
    reason="this tree's kernel loader is the GEMM-only one; the generic loader (kernel.yaml "
    "with parameters) is needed to load a drafted kernel",
)
def test_filled_in_kernel_loads_with_the_generic_loader(tmp_path):
    _, folder = make(tmp_path)
    raw = fill(yaml.safe_load((folder / "kernel.yaml").read_text()))
    (folder / "kernel.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = kernelspec.load_kernel("userforce", kernels_dir=tmp_path / "kernels")
    assert spec.function == "accel"
    assert [p.name for p in spec.parameters] == ["n", "pos", "mass", "eps2", "acc"]
    assert spec.flops(spec.bench) == 8 * 2000 * 2000


@pytest.mark.skipif(not GENERIC_LOADER, reason="needs the generic kernel loader")
def test_loader_refuses_a_drafted_kernel_naming_its_blanks(tmp_path):
    make(tmp_path)
    with pytest.raises(kernelspec.KernelError, match=r"(?s)blank\(s\) left.*parameters.4 \(acc\)"):
        kernelspec.load_kernel("userforce", kernels_dir=tmp_path / "kernels")


SHIPPED = sorted(p.parent.name for p in (REPO_DIR / "kernels").glob("*/kernel.yaml"))


def test_every_shipped_kernel_is_checked_for_blanks():
    assert {"dgemm", "dgemv", "dsyrk", "nbody", "spmv_csr", "stencil3d"} <= set(SHIPPED)


@pytest.mark.parametrize("kernel", SHIPPED)
def test_shipped_kernels_have_no_blanks(kernel):
    path = REPO_DIR / "kernels" / kernel / "kernel.yaml"
    raw = yaml.safe_load(path.read_text())
    assert find_blanks(raw) == []
    check_blanks(raw, path)  # and the loader's check lets it through


def test_cli_writes_the_folder_and_lists_the_blanks(tmp_path):
    src = tmp_path / "force.c"
    src.write_text(USER_CODE)
    cmd = [sys.executable, "-m", "hpcagents", "new-kernel", "mine", "--from", str(src)]
    cmd += ["--function", "accel", "--kernels-dir", str(tmp_path / "k")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "parameters.4 (acc).intent" in out.stdout
    assert (tmp_path / "k" / "mine" / "original.c").is_file()
    # a folder outside the checkout: the next steps name it
    assert f"--kernels-dir {tmp_path / 'k'}" in out.stdout
    assert f"kernels_dir: {tmp_path / 'k'}" in out.stdout
    bad = subprocess.run(
        cmd[:-4] + ["--function", "nope"] + cmd[-2:], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "hpcagents: error: no definition of 'nope' found" in bad.stderr


@pytest.mark.skipif(not GENERIC_LOADER, reason="needs the generic kernel loader and judge")
def test_filled_in_kernel_is_judged_against_the_users_original(tmp_path):
    from hpcagents.judge.evaluate import evaluate_source
    from hpcagents.judge.timing import BuildConfig, EvalConfig

    _, folder = make(tmp_path)
    raw = fill(yaml.safe_load((folder / "kernel.yaml").read_text()))
    raw["bench"] = {"n": 64, "eps2": 0.01}
    (folder / "kernel.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = kernelspec.load_kernel("userforce", kernels_dir=tmp_path / "kernels")
    cfg = EvalConfig(repeats=1, warmup=0, timeout_s=120, threads=1)
    rec = evaluate_source(spec, folder / "userforce.c", tmp_path / "w1", BuildConfig(), cfg)
    assert rec["status"] == "ok", rec["reason"]
    wrong = tmp_path / "userforce.c"  # the mass left out: a wrong answer, named as such
    wrong.write_text(USER_CODE.replace("mass[j] * d", "d"))
    rec = evaluate_source(spec, wrong, tmp_path / "w2", BuildConfig(), cfg)
    assert rec["status"] == "wrong_answer"
