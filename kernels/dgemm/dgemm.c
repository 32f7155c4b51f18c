/* Baseline dgemm: the naive triple loop the agents start from.
 * C := alpha*A*B + beta*C, row-major, no transposes, BLAS semantics (see kernel.yaml). */

void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            if (alpha != 0.0)
                for (int p = 0; p < k; p++)
                    acc += A[i * lda + p] * B[p * ldb + j];
            if (beta == 0.0)
                C[i * ldc + j] = alpha * acc;
            else
                C[i * ldc + j] = alpha * acc + beta * C[i * ldc + j];
        }
    }
}
