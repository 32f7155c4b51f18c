/*
 * fma_peak.c: peak double-precision FLOP/s of this machine, with the campaign's own
 * compiler, flags and OpenMP threads. Trusted project code (never LLM output), compiled
 * and run by hpcagents.machine.
 *
 * Every thread runs ACC independent multiply-add chains on the widest double vector the
 * flags enable (AVX-512: 8 lanes, AVX/AVX2: 4, SSE2: 2). ACC is larger than the FMA
 * latency times the number of FMA pipes of any current x86 core (4-5 cycles x 2 pipes),
 * so the pipes never wait on a result, and small enough to stay in registers (24 of 32
 * zmm, 12 of 16 ymm/xmm). With FMA each step is one fused instruction; without it, a
 * multiply and an add. Either way a step is 2 flops per lane.
 *
 * The chains converge to 1.0 (a <- a*x + (1-x)), so no value overflows or goes
 * subnormal; x comes from the command line so nothing can be folded at compile time.
 *
 * With AVX-512 there are 32 vector registers, so 24 chains (3 x 8 in flight: latency 4
 * x 2 pipes = 8 needed); with 16 registers, 12 chains.
 *
 * Usage: fma_peak <seconds per run> <runs> <x>
 * Prints one JSON object on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* FMA_BITS=256 builds the 256-bit variant on an AVX-512 machine: on cores with one
 * 512-bit FMA unit but two 256-bit ones, or a lower clock for 512-bit work, it is the
 * faster; hpcagents.machine builds both and keeps the better. */
#if defined(FMA_BITS) && FMA_BITS == 256 && defined(__AVX512F__)
#undef __AVX512F__
#endif

#if defined(__AVX512F__)
typedef __m512d vec;
#define LANES 8
#define VSET(x) _mm512_set1_pd(x)
#define VSTEP(a, x, y) _mm512_fmadd_pd((a), (x), (y))
#define VSUM(a) _mm512_reduce_add_pd(a)
#define HAS_FMA 1
#define VBITS 512
#define WIDE 1
#elif defined(__AVX__) && defined(__FMA__)
typedef __m256d vec;
#define LANES 4
#define VSET(x) _mm256_set1_pd(x)
#define VSTEP(a, x, y) _mm256_fmadd_pd((a), (x), (y))
#define HAS_FMA 1
#define VBITS 256
#elif defined(__AVX__)
typedef __m256d vec;
#define LANES 4
#define VSET(x) _mm256_set1_pd(x)
#define VSTEP(a, x, y) _mm256_add_pd(_mm256_mul_pd((a), (x)), (y))
#define HAS_FMA 0
#define VBITS 256
#elif defined(__SSE2__)
typedef __m128d vec;
#define LANES 2
#define VSET(x) _mm_set1_pd(x)
#define VSTEP(a, x, y) _mm_add_pd(_mm_mul_pd((a), (x)), (y))
#define HAS_FMA 0
#define VBITS 128
#else
typedef double vec __attribute__((vector_size(16)));
#define LANES 2
#define VSET(x) ((vec){(x), (x)})
#define VSTEP(a, x, y) ((a) * (x) + (y))
#define HAS_FMA 0
#define VBITS 128
#endif

#ifndef VSUM
static double vsum(vec v) {
    double lanes[LANES];
    __builtin_memcpy(lanes, &v, sizeof v);
    double s = 0.0;
    for (int i = 0; i < LANES; i++)
        s += lanes[i];
    return s;
}
#define VSUM(a) vsum(a)
#endif

#define CHAINS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#ifdef WIDE
#define ACC 24
#define CHAINS(X) CHAINS12(X) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
#else
#define ACC 12
#define CHAINS(X) CHAINS12(X)
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

static int threads_used(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* iters steps of every chain in every thread; returns a checksum (keeps the work live) */
static double chains(long iters, double xs) {
    double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : total)
#endif
    {
        const vec x = VSET(xs), y = VSET(1.0 - xs);
#define DECL(i) vec a##i = VSET(0.5 + 0.01 * (i));
        CHAINS(DECL)
#undef DECL
        for (long it = 0; it < iters; it++) {
#define STEP(i) a##i = VSTEP(a##i, x, y);
            CHAINS(STEP)
            CHAINS(STEP)
#undef STEP
        }
        double s = 0.0;
#define SUM(i) s += VSUM(a##i);
        CHAINS(SUM)
#undef SUM
        total += s;
    }
    return total;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <seconds per run> <runs> <x>\n", argv[0]);
        return 2;
    }
    const double target = atof(argv[1]);
    const int runs = atoi(argv[2]);
    const double xs = atof(argv[3]);
    if (!(target > 0.0) || runs < 1 || runs > 100 || !(xs > 0.0 && xs < 1.0)) {
        fprintf(stderr, "fma_peak: bad arguments\n");
        return 2;
    }
    const int threads = threads_used();
    double check = chains(1000, xs); /* start the thread team */
    /* calibrate: double the work until one run takes a quarter of the target; each size
     * is timed three times and the fastest counts, so a run slowed by another process
     * does not shrink the work of the measured runs */
    long iters = 1L << 10;
    double t = 0.0;
    for (;;) {
        t = 1e300;
        for (int trial = 0; trial < 3; trial++) {
            double t0 = now();
            check += chains(iters, xs);
            double dt = now() - t0;
            if (dt < t)
                t = dt;
        }
        if (t >= target / 4.0 || iters > (1L << 40))
            break;
        iters *= 2;
    }
    if (t > 0.0)
        iters = (long)((double)iters * target / t) + 1;
    double best = 1e300;
    printf("{\"threads\": %d, \"lanes\": %d, \"vector_bits\": %d, \"fma\": %s, "
           "\"chains\": %d, \"iterations\": %ld, \"runs_s\": [",
           threads, LANES, VBITS, HAS_FMA ? "true" : "false", ACC, iters);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        check += chains(iters, xs);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
        printf("%s%.9f", r ? ", " : "", dt);
    }
    /* 2 chain blocks per iteration, ACC chains, LANES lanes, 2 flops per step */
    const double flops = (double)threads * (double)iters * 2.0 * ACC * LANES * 2.0;
    printf("], \"flops_per_run\": %.17g, \"best_s\": %.9f, \"gflops\": %.6f, "
           "\"checksum\": %.17g}\n",
           flops, best, flops / best / 1e9, check);
    return 0;
}
