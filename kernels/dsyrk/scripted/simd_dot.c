/* Scripted variant "simd_dot": every entry of the lower triangle is a dot product of two
 * unit-stride rows of A; '#pragma omp simd reduction' lets the compiler keep vector partial
 * sums instead of one serial chain of adds; rows dealt round-robin to the threads. */
void kernel_dsyrk(int n, int k, double alpha, const double *A, int lda,
                  double beta, double *C, int ldc)
{
#pragma omp parallel for schedule(static, 4)
    for (int i = 0; i < n; i++) {
        const double *restrict ai = A + (long)i * lda;
        double *ci = C + (long)i * ldc;
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
            if (alpha != 0.0) {
                const double *restrict aj = A + (long)j * lda;
#pragma omp simd reduction(+ : acc)
                for (int p = 0; p < k; p++)
                    acc += ai[p] * aj[p];
            }
            ci[j] = beta == 0.0 ? alpha * acc : alpha * acc + beta * ci[j];
        }
    }
}
