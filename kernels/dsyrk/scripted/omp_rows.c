/* Scripted variant "omp_rows": the rows of C's lower triangle are shared among the OpenMP
 * threads; row i holds i+1 dot products, so rows are dealt round-robin in chunks of 4
 * (schedule(static, 4)) to balance the triangle. */
void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static, 4)
    for (int i = 0; i < n; i++) {
        const double *ai = A + (long)i * lda;
        double *ci = C + (long)i * ldc;
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
            if (alpha != 0.0) {
                const double *aj = A + (long)j * lda;
                for (int p = 0; p < k; p++)
                    acc += ai[p] * aj[p];
            }
            ci[j] = beta == 0.0 ? alpha * acc : alpha * acc + beta * ci[j];
        }
    }
}
