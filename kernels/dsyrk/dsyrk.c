/* Baseline dsyrk: the plain loop nest the agents start from.
 * Lower triangle of C := alpha*A*A^T + beta*C, A is n x k row-major (see kernel.yaml). */

void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
    for (int i = 0; i < n; i++) {
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
            if (alpha != 0.0)
                for (int p = 0; p < k; p++)
                    acc += A[i * lda + p] * A[j * lda + p];
            if (beta == 0.0)
                C[i * ldc + j] = alpha * acc;
            else
                C[i * ldc + j] = alpha * acc + beta * C[i * ldc + j];
        }
    }
}
