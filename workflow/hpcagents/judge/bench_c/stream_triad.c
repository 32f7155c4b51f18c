/*
 * stream_triad.c: sustainable memory bandwidth, STREAM "triad" a[i] = b[i] + s*c[i],
 * with the campaign's own compiler, flags and OpenMP threads. Trusted project code
 * (never LLM output), compiled and run by hpcagents.machine.
 *
 * The caller sizes the arrays well beyond the last-level cache (STREAM's rule: each
 * array at least four times the sum of the last-level caches), so every run streams
 * from memory. The arrays are first touched by the same static OpenMP schedule that
 * later reads them, so their pages sit near the threads that use them. Bytes are counted
 * as STREAM does, 24 per element (read b and c, write a); a write-allocate cache also
 * reads a, which STREAM does not count, and neither do the kernels' byte models.
 *
 * Usage: stream_triad <elements per array> <runs>
 * Prints one JSON object on stdout; exits 1 if the result is wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <elements per array> <runs>\n", argv[0]);
        return 2;
    }
    const long n = atol(argv[1]);
    const int runs = atoi(argv[2]);
    if (n < 1024 || runs < 1 || runs > 1000) {
        fprintf(stderr, "stream_triad: bad arguments\n");
        return 2;
    }
    const size_t bytes = ((size_t)n * sizeof(double) + 4095) / 4096 * 4096;
    double *a = aligned_alloc(4096, bytes), *b = aligned_alloc(4096, bytes),
           *c = aligned_alloc(4096, bytes);
    if (!a || !b || !c) {
        fprintf(stderr, "stream_triad: cannot allocate 3 x %zu bytes\n", bytes);
        return 3;
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#pragma omp parallel for schedule(static)
#endif
    for (long i = 0; i < n; i++) {
        a[i] = 0.0;
        b[i] = 1.0;
        c[i] = 2.0;
    }
    const double s = 3.0;
    double best = 1e300;
    printf("{\"threads\": %d, \"elements\": %ld, \"runs_s\": [", threads, n);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
        for (long i = 0; i < n; i++)
            a[i] = b[i] + s * c[i];
        double dt = now() - t0;
        if (dt < best)
            best = dt;
        printf("%s%.9f", r ? ", " : "", dt);
    }
    long wrong = 0;
    for (long i = 0; i < n; i += 4099)
        wrong += a[i] != 7.0;
    wrong += a[n - 1] != 7.0;
    const double moved = 3.0 * sizeof(double) * (double)n;
    printf("], \"bytes_per_run\": %.17g, \"best_s\": %.9f, \"gbs\": %.6f, \"wrong\": %ld}\n",
           moved, best, moved / best / 1e9, wrong);
    free(a);
    free(b);
    free(c);
    return wrong ? 1 : 0;
}
