/* Fixed, trusted evaluation driver for dgemm. The agents never see or edit it.
 *
 * Linked with the candidate's object file and the reference BLAS. For every validation
 * case it draws FRESH random inputs (seed given at run time), poisons what the candidate
 * must not read (NaN in the padding of A and B, and in C when beta == 0), fences C's
 * padding with a sentinel, and compares elementwise with the reference under the
 * forward-error bound of any summation order:
 *     |C - C_ref| <= f * (k + 2) * eps * (|alpha| * (|A||B|)_ij + |beta| * |C0_ij|)
 * When alpha == 0, A and B are NaN throughout (BLAS: they are not referenced then).
 * Then it times the candidate and the reference side by side at the bench size (C
 * poisoned before every call, every timed output checked) and writes one JSON file.
 *
 * usage: harness --out FILE --seed S --tol F --repeats R --warmup W
 *                --bench m,n,k,alpha,beta [--case m,n,k,alpha,beta,pad ...]
 */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HPCA_USE_MKL
#include <mkl_cblas.h>
#else
#include <cblas.h>
#endif

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc);

#define MAX_CASES 64
#define SENTINEL (-7.77e77)

typedef struct {
    int m, n, k, pad;
    double alpha, beta;
} Case;

static uint64_t rng_state;

static double rnd(void) /* xorshift64*, uniform in [-1, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ULL;
    return (double)(r >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static double *alloc(size_t count)
{
    void *p = NULL;
    size_t bytes = (count ? count : 1) * sizeof(double);
    if (posix_memalign(&p, 64, bytes) != 0) {
        fprintf(stderr, "harness: out of memory (%zu bytes)\n", bytes);
        exit(3);
    }
    return (double *)p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ld_of(int cols, int pad) { return (cols > 0 ? cols : 1) + pad; }

/* A rows x cols matrix with leading dimension ld: random inside, `fill` in the padding. */
static void fill_matrix(double *X, int rows, int cols, int ld, double fill)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < ld; j++)
            X[(size_t)i * ld + j] = j < cols ? rnd() : fill;
}

typedef struct {
    long wrong, checked;
    double max_ratio;
    int bad_i, bad_j;
    double got, want, bound;
    long padding_overwritten;
    long ref_nonfinite; /* the reference itself gave NaN/Inf: an infrastructure fault */
} Check;

/* Compare C with Cref under the bound; AB = |A||B| (alpha scale applied here). */
static Check check(const double *C, const double *Cref, const double *AB, const double *C0,
                   int m, int n, int ldc, int k, double alpha, double beta, double tol,
                   double scale)
{
    Check r = {0, 0, 0.0, -1, -1, 0.0, 0.0, 0.0, 0, 0};
    double gamma = tol * (double)(k + 2) * DBL_EPSILON;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < ldc; j++) {
            size_t idx = (size_t)i * ldc + j;
            if (j >= n) {
                if (C[idx] != SENTINEL)
                    r.padding_overwritten++;
                continue;
            }
            double mag = scale * fabs(alpha) * AB[idx] + (C0 ? fabs(beta) * fabs(C0[idx]) : 0.0);
            double bound = gamma * mag + DBL_MIN;
            double want = scale * Cref[idx];
            if (!isfinite(want)) {
                r.ref_nonfinite++;
                continue;
            }
            double err = fabs(C[idx] - want);
            double ratio = isfinite(C[idx]) ? err / bound : INFINITY;
            r.checked++;
            if (!(ratio <= 1.0)) {
                if (r.wrong == 0) {
                    r.bad_i = i;
                    r.bad_j = j;
                    r.got = C[idx];
                    r.want = want;
                    r.bound = bound;
                }
                r.wrong++;
            }
            if (ratio > r.max_ratio || isnan(ratio))
                r.max_ratio = isnan(ratio) ? INFINITY : ratio;
        }
    }
    return r;
}

static void json_num(FILE *f, double x)
{
    if (isnan(x))
        fputs("\"nan\"", f);
    else if (isinf(x))
        fputs(x > 0 ? "\"inf\"" : "\"-inf\"", f);
    else
        fprintf(f, "%.17g", x);
}

static void json_check(FILE *f, const Check *c)
{
    fprintf(f, "\"wrong\": %ld, \"checked\": %ld, \"max_err_ratio\": ", c->wrong, c->checked);
    json_num(f, c->max_ratio);
    fprintf(f, ", \"padding_overwritten\": %ld, \"reference_nonfinite\": %ld",
            c->padding_overwritten, c->ref_nonfinite);
    if (c->wrong) {
        fprintf(f, ", \"first_bad\": {\"i\": %d, \"j\": %d, \"got\": ", c->bad_i, c->bad_j);
        json_num(f, c->got);
        fputs(", \"want\": ", f);
        json_num(f, c->want);
        fputs(", \"bound\": ", f);
        json_num(f, c->bound);
        fputs("}", f);
    }
}

static int run_case(FILE *f, const Case *cs, double tol)
{
    int m = cs->m, n = cs->n, k = cs->k;
    int lda = ld_of(k, cs->pad), ldb = ld_of(n, cs->pad), ldc = ld_of(n, cs->pad);
    size_t na = (size_t)m * lda, nb = (size_t)k * ldb, nc = (size_t)m * ldc;
    double *A = alloc(na), *B = alloc(nb), *C = alloc(nc), *C0 = alloc(nc);
    double *Cref = alloc(nc), *AB = alloc(nc), *Aabs = alloc(na), *Babs = alloc(nb);
    double *Acopy = alloc(na), *Bcopy = alloc(nb);
    fill_matrix(A, m, k, lda, NAN);
    fill_matrix(B, k, n, ldb, NAN);
    fill_matrix(C0, m, n, ldc, SENTINEL);
    /* reference: C_ref and |A||B| (padding of the abs copies zeroed so NaN stays out) */
    memcpy(Cref, C0, nc * sizeof(double));
    if (m > 0 && n > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, cs->alpha, A, lda, B,
                    ldb, cs->beta, Cref, ldc);
    for (size_t x = 0; x < na; x++)
        Aabs[x] = isnan(A[x]) ? 0.0 : fabs(A[x]);
    for (size_t x = 0; x < nb; x++)
        Babs[x] = isnan(B[x]) ? 0.0 : fabs(B[x]);
    for (size_t x = 0; x < nc; x++)
        AB[x] = 0.0;
    if (m > 0 && n > 0 && k > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, Aabs, lda, Babs,
                    ldb, 0.0, AB, ldc);
    /* BLAS: A and B are not referenced when alpha == 0, so the candidate gets them all NaN
     * (after the reference ran on finite ones: some references do read them). */
    if (cs->alpha == 0.0) {
        for (size_t x = 0; x < na; x++)
            A[x] = NAN;
        for (size_t x = 0; x < nb; x++)
            B[x] = NAN;
    }
    memcpy(Acopy, A, na * sizeof(double));
    memcpy(Bcopy, B, nb * sizeof(double));
    /* candidate: C must not be read when beta == 0, so it holds NaN then */
    memcpy(C, C0, nc * sizeof(double));
    if (cs->beta == 0.0)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                C[(size_t)i * ldc + j] = NAN;
    kernel_dgemm(m, n, k, cs->alpha, A, lda, B, ldb, cs->beta, C, ldc);
    int inputs_modified = memcmp(A, Acopy, na * sizeof(double)) != 0 ||
                          memcmp(B, Bcopy, nb * sizeof(double)) != 0;
    Check c = check(C, Cref, AB, cs->beta == 0.0 ? NULL : C0, m, n, ldc, k, cs->alpha,
                    cs->beta, tol, 1.0);
    int ok = c.wrong == 0 && c.padding_overwritten == 0 && !inputs_modified &&
             c.ref_nonfinite == 0;
    fprintf(f, "{\"m\": %d, \"n\": %d, \"k\": %d, \"alpha\": ", m, n, k);
    json_num(f, cs->alpha);
    fputs(", \"beta\": ", f);
    json_num(f, cs->beta);
    fprintf(f, ", \"pad\": %d, \"lda\": %d, \"ldb\": %d, \"ldc\": %d, \"ok\": %s, ", cs->pad,
            lda, ldb, ldc, ok ? "true" : "false");
    fprintf(f, "\"inputs_modified\": %s, ", inputs_modified ? "true" : "false");
    json_check(f, &c);
    fputs("}", f);
    free(A); free(B); free(C); free(C0); free(Cref); free(AB);
    free(Aabs); free(Babs); free(Acopy); free(Bcopy);
    return ok;
}

static void json_runs(FILE *f, const char *name, const double *t, int r)
{
    fprintf(f, "\"%s\": [", name);
    for (int i = 0; i < r; i++) {
        if (i)
            fputs(", ", f);
        json_num(f, t[i]);
    }
    fputs("]", f);
}

static int run_timing(FILE *f, const Case *b, double tol, int repeats, int warmup)
{
    int m = b->m, n = b->n, k = b->k;
    int lda = ld_of(k, 0), ldb = ld_of(n, 0), ldc = ld_of(n, 0);
    size_t na = (size_t)m * lda, nb = (size_t)k * ldb, nc = (size_t)m * ldc;
    double *A = alloc(na), *B = alloc(nb), *C = alloc(nc), *Cref = alloc(nc), *AB = alloc(nc);
    double *Aabs = alloc(na), *Babs = alloc(nb);
    double *t_cand = calloc((size_t)repeats, sizeof(double));
    double *t_ref = calloc((size_t)repeats, sizeof(double));
    fill_matrix(A, m, k, lda, 0.0);
    fill_matrix(B, k, n, ldb, 0.0);
    for (size_t x = 0; x < na; x++)
        Aabs[x] = fabs(A[x]);
    for (size_t x = 0; x < nb; x++)
        Babs[x] = fabs(B[x]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, Aabs, lda, Babs, ldb,
                0.0, AB, ldc);
    /* the reference, timed the same way (it also produces C_ref) */
    for (int r = -warmup; r < repeats; r++) {
        for (size_t x = 0; x < nc; x++)
            Cref[x] = NAN;
        double t0 = now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, b->alpha, A, lda, B,
                    ldb, 0.0, Cref, ldc);
        double t1 = now();
        if (r >= 0)
            t_ref[r] = t1 - t0;
    }
    /* the candidate: C poisoned before every call, every timed output checked, and B
     * rescaled by an exact power of two between calls (0.5, 1, 2, ...) so that a result
     * cached from an earlier call is wrong for this one. */
    Check worst = {0, 0, 0.0, -1, -1, 0.0, 0.0, 0.0, 0, 0};
    int bad_run = -1;
    double cur = 1.0;
    for (int r = -warmup; r < repeats; r++) {
        double want = ldexp(1.0, ((r % 3) + 3) % 3 - 1);
        double f = want / cur;
        for (size_t x = 0; x < nb; x++)
            B[x] *= f;
        cur = want;
        for (size_t x = 0; x < nc; x++)
            C[x] = NAN;
        double t0 = now();
        kernel_dgemm(m, n, k, b->alpha, A, lda, B, ldb, 0.0, C, ldc);
        double t1 = now();
        if (r >= 0) {
            t_cand[r] = t1 - t0;
            Check c = check(C, Cref, AB, NULL, m, n, ldc, k, b->alpha, 0.0, tol, cur);
            if (bad_run < 0) {
                worst = c; /* the last checked run, or the first wrong one */
                if (c.wrong || c.ref_nonfinite)
                    bad_run = r;
            }
        }
    }
    fprintf(f, "{\"m\": %d, \"n\": %d, \"k\": %d, \"warmup\": %d, \"repeats\": %d, ", m, n, k,
            warmup, repeats);
    json_runs(f, "runs_s", t_cand, repeats);
    fputs(", ", f);
    json_runs(f, "reference_runs_s", t_ref, repeats);
    fprintf(f, ", \"outputs_ok\": %s, \"bad_run\": %d, ", bad_run < 0 ? "true" : "false",
            bad_run);
    json_check(f, &worst);
    fputs("}", f);
    free(A); free(B); free(C); free(Cref); free(AB); free(Aabs); free(Babs);
    free(t_cand); free(t_ref);
    return bad_run < 0;
}

static int parse_case(const char *s, Case *c, int with_pad)
{
    c->pad = 0;
    if (with_pad)
        return sscanf(s, "%d,%d,%d,%lf,%lf,%d", &c->m, &c->n, &c->k, &c->alpha, &c->beta,
                      &c->pad) == 6;
    return sscanf(s, "%d,%d,%d,%lf,%lf", &c->m, &c->n, &c->k, &c->alpha, &c->beta) == 5;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    unsigned long long seed = 1;
    double tol = 4.0;
    int repeats = 5, warmup = 1, ncases = 0, have_bench = 0;
    Case cases[MAX_CASES], bench;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *key = argv[i], *val = argv[i + 1];
        if (!strcmp(key, "--out"))
            out = val;
        else if (!strcmp(key, "--seed"))
            seed = strtoull(val, NULL, 10);
        else if (!strcmp(key, "--tol"))
            tol = atof(val);
        else if (!strcmp(key, "--repeats"))
            repeats = atoi(val);
        else if (!strcmp(key, "--warmup"))
            warmup = atoi(val);
        else if (!strcmp(key, "--bench"))
            have_bench = parse_case(val, &bench, 0);
        else if (!strcmp(key, "--case") && ncases < MAX_CASES) {
            if (!parse_case(val, &cases[ncases++], 1)) {
                fprintf(stderr, "harness: bad --case %s\n", val);
                return 2;
            }
        } else {
            fprintf(stderr, "harness: unknown argument %s\n", key);
            return 2;
        }
    }
    if (!out || repeats < 1 || warmup < 0) {
        fprintf(stderr, "harness: usage: --out FILE [--seed S --tol F --repeats R --warmup W "
                        "--bench m,n,k,a,b --case m,n,k,a,b,pad ...]\n");
        return 2;
    }
    /* The nonce comes on stdin from the trusted parent and goes back only in the result
     * file: a candidate cannot forge a result without it. */
    char nonce[80] = "";
    if (!fgets(nonce, sizeof nonce, stdin))
        nonce[0] = 0;
    nonce[strcspn(nonce, "\r\n\"\\")] = 0;
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (!rng_state)
        rng_state = 1;
    /* Results are built in memory and written only at the end: a crash leaves no file. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int all_ok = 1;
    fprintf(f, "{\"nonce\": \"%s\", \"seed\": %llu, \"tolerance_factor\": ", nonce, seed);
    json_num(f, tol);
    fputs(", \"cases\": [", f);
    for (int c = 0; c < ncases; c++) {
        if (c)
            fputs(", ", f);
        all_ok &= run_case(f, &cases[c], tol);
    }
    fputs("], \"timing\": ", f);
    if (all_ok && have_bench)
        run_timing(f, &bench, tol, repeats, warmup);
    else
        fputs("null", f);
    fputs("}\n", f);
    fclose(f);
    FILE *o = fopen(out, "w");
    if (!o) {
        perror("harness: cannot write result");
        return 3;
    }
    fwrite(buf, 1, len, o);
    fclose(o);
    free(buf);
    return 0;
}
