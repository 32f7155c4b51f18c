/* Trusted reference adapter for dsyrk: the kernel's signature over the configured BLAS.
 * Built by the judge (never by the agents) and run in a process of its own. */
#ifdef HPCA_USE_MKL
#include <mkl_cblas.h>
#else
#include <cblas.h>
#endif

void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
    if (n == 0)
        return;
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, n, k, alpha, A, lda, beta, C, ldc);
}
