/* Scripted variant "tile_tuning": the cache-blocked i-k-j kernel with retuned tiles (32 x 128 x 1024), so a KB x NB panel of B stays in
 * L2 while MB rows of C are updated; OpenMP over row tiles. */
#define MB 32
#define KB 128
#define NB 1024

static inline int min_i(int a, int b) { return a < b ? a : b; }

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double *c = C + (long)i * ldc;
        if (beta == 0.0)
            for (int j = 0; j < n; j++) c[j] = 0.0;
        else if (beta != 1.0)
            for (int j = 0; j < n; j++) c[j] *= beta;
    }
    if (alpha == 0.0 || k == 0) return;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i0 = 0; i0 < m; i0 += MB) {
        const int i1 = min_i(i0 + MB, m);
        for (int j0 = 0; j0 < n; j0 += NB) {
            const int j1 = min_i(j0 + NB, n);
            for (int p0 = 0; p0 < k; p0 += KB) {
                const int p1 = min_i(p0 + KB, k);
                for (int i = i0; i < i1; i++) {
                    double *restrict c = C + (long)i * ldc;
                    for (int p = p0; p < p1; p++) {
                        const double a = alpha * A[(long)i * lda + p];
                        const double *restrict b = B + (long)p * ldb;
#pragma omp simd
                        for (int j = j0; j < j1; j++) c[j] += a * b[j];
                    }
                }
            }
        }
    }
}
