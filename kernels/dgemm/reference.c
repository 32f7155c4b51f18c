/* Trusted reference adapter for dgemm: the kernel's signature over the configured BLAS.
 * Built by the judge (never by the agents) and run in a process of its own. */
#ifdef HPCA_USE_MKL
#include <mkl_cblas.h>
#else
#include <cblas.h>
#endif

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    if (m == 0 || n == 0)
        return;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, A, lda, B, ldb,
                beta, C, ldc);
}
