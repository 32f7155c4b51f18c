/* Row blocks as OpenMP tasks from a single producer, with taskwait. */
void kernel_dgemm(int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc)
{
#pragma omp parallel
#pragma omp single
    {
        for (int i0 = 0; i0 < m; i0 += 8) {
#pragma omp task firstprivate(i0)
            {
                int i1 = i0 + 8 < m ? i0 + 8 : m;
                for (int i = i0; i < i1; i++) {
                    double *c = C + (long)i * ldc;
                    for (int j = 0; j < n; j++)
                        c[j] = beta == 0.0 ? 0.0 : beta * c[j];
                    if (alpha == 0.0)
                        continue;
                    for (int p = 0; p < k; p++)
                        for (int j = 0; j < n; j++)
                            c[j] += alpha * A[(long)i * lda + p] * B[(long)p * ldb + j];
                }
            }
        }
#pragma omp taskwait
    }
}
