/* Trusted reference adapter for dgemv: the kernel's signature over the configured BLAS.
 * Built by the judge (never by the agents) and run in a process of its own.
 * cblas_dgemv returns early when n == 0 without scaling y; the kernel's contract is
 * y := beta*y then (y := 0 when beta == 0), so that case is done here. */
#ifdef HPCA_USE_MKL
#include <mkl_cblas.h>
#else
#include <cblas.h>
#endif

void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
    if (m == 0)
        return;
    if (n == 0) {
        for (int i = 0; i < m; i++)
            y[i] = beta == 0.0 ? 0.0 : beta * y[i];
        return;
    }
    cblas_dgemv(CblasRowMajor, CblasNoTrans, m, n, alpha, A, lda, x, 1, beta, y, 1);
}
