/* Scripted variant "simd_reduction": each row's dot product is an OpenMP SIMD reduction,
 * so the compiler keeps several vector partial sums instead of one serial chain of adds;
 * rows in parallel. */
void kernel_dgemv(int m, int n, double alpha, const double *A, int lda,
                  const double *x, double beta, double *y)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        double acc = 0.0;
        if (alpha != 0.0) {
            const double *restrict a = A + (long)i * lda;
#pragma omp simd reduction(+ : acc)
            for (int j = 0; j < n; j++)
                acc += a[j] * x[j];
        }
        y[i] = beta == 0.0 ? alpha * acc : alpha * acc + beta * y[i];
    }
}
