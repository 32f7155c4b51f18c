/* Scripted variant "unroll4": four independent accumulators per row break the chain of
 * dependent adds; rows are taken to be a multiple of 4 long. */
void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double acc = 0.0;
        if (alpha != 0.0) {
            const double *a = A + (long)i * lda;
            double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
            int j = 0;
            for (; j + 3 < n; j += 4) {
                s0 += a[j] * x[j];
                s1 += a[j + 1] * x[j + 1];
                s2 += a[j + 2] * x[j + 2];
                s3 += a[j + 3] * x[j + 3];
            }
            acc = (s0 + s1) + (s2 + s3);
        }
        y[i] = beta == 0.0 ? alpha * acc : alpha * acc + beta * y[i];
    }
}
