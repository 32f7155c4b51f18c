/* The generic trusted runner: calls ONE kernel, once per command, with arguments laid
 * out by the judge in a shared-memory file. It holds nothing of the judge: no inputs
 * generator, no seed, no reference, no tolerance, no checker and no timer whose reading
 * is trusted (the judge times every call from its own side).
 *
 * Linked with the kernel's object file and a call stub generated from kernel.yaml's
 * `parameters` (hpca_call reads slot i of the header: an integer, a double, or the byte
 * offset of an array in the file).
 *
 * usage: runner ARENA-FILE SIZE READONLY-BYTES
 *
 * The arena is mapped ONCE, before any candidate code runs: its first READONLY-BYTES
 * (the header and every read-only input, laid out first by the judge) without write
 * permission, the rest (the outputs) read-write; then the file is closed, so the
 * process holds no way to make a writable view of its inputs. A write to an input
 * faults at once, during the call, not after it.
 *
 * Built with -DHPCA_SECCOMP (the candidate's runner, never the reference's), it then
 * installs a system-call filter (seccomp) before the kernel is first entered: only what a
 * kernel needs (memory mapping outside the arena, futex, threads of this process, exit);
 * anything else traps, and the SIGSYS handler reports the call's number on stderr before
 * the process exits. The judge believes nothing this process says about time: it freezes
 * the whole process (SIGSTOP) the moment an answer arrives and whenever no call of its
 * own is running, so an early or forged "done" only cuts the kernel's work short.
 *
 * Commands on stdin, one per line, answers on stdout:
 *   "c NONCE"  call the kernel, answer "d NONCE"
 *   "q"        exit 0
 * At start, once everything is in place, the runner answers "r".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef HPCA_SECCOMP
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

void hpca_call(unsigned char *base);

static unsigned char *arena_base;
static size_t arena_size;

static int read_line(char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        char ch;
        ssize_t r = read(0, &ch, 1);
        if (r <= 0)
            return 0;
        if (ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = 0;
    return 1;
}

static void say(int fd, const char *text) { (void)!write(fd, text, strlen(text)); }

static void say_number(int fd, const char *prefix, unsigned long long v)
{
    char buf[64], digits[24];
    size_t n = 0, d = 0;
    while (prefix[n] && n < 32) {
        buf[n] = prefix[n];
        n++;
    }
    do {
        digits[d++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && d < sizeof digits);
    while (d)
        buf[n++] = digits[--d];
    buf[n++] = '\n';
    (void)!write(fd, buf, n);
}

/* A fault reports where it happened, relative to the arena, so the judge can name the
 * array the kernel wrote to (or the address was outside the arena). Async-signal-safe. */
static void on_fault(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    uintptr_t addr = (uintptr_t)info->si_addr, lo = (uintptr_t)arena_base;
    if (addr >= lo && addr < lo + arena_size)
        say_number(2, sig == SIGSEGV ? "hpca-fault: SIGSEGV arena+" : "hpca-fault: SIGBUS arena+",
                   addr - lo);
    else
        say(2, sig == SIGSEGV ? "hpca-fault: SIGSEGV outside the arena\n"
                              : "hpca-fault: SIGBUS outside the arena\n");
    _exit(96);
}

#ifdef HPCA_SECCOMP
static void on_sigsys(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    say_number(2, info->si_errno == 1 ? "hpca-seccomp: arena " : "hpca-seccomp: ",
               (unsigned long long)info->si_syscall);
    _exit(97);
}

/* --- a tiny classic-BPF assembler with forward labels ----------------------------- */
#define MAXI 512
#define MAXL 64
struct prog {
    struct sock_filter ins[MAXI];
    int n, bad;
    int label_at[MAXL];
    int fix_ins[MAXI], fix_true[MAXI], fix_false[MAXI];
};

static void emit(struct prog *p, unsigned short code, unsigned int k, int jt, int jf)
{
    if (p->n >= MAXI) {
        p->bad = 1;
        return;
    }
    p->ins[p->n] = (struct sock_filter)BPF_JUMP(code, k, 0, 0);
    p->fix_true[p->n] = jt; /* label ids, 0 = fall through */
    p->fix_false[p->n] = jf;
    p->n++;
}
static void stmt(struct prog *p, unsigned short code, unsigned int k) { emit(p, code, k, 0, 0); }
static void label(struct prog *p, int l) { p->label_at[l] = p->n; }
static void resolve(struct prog *p)
{
    for (int i = 0; i < p->n; i++) {
        int jt = p->fix_true[i], jf = p->fix_false[i];
        if (jt > 0) {
            int d = p->label_at[jt] - i - 1;
            if (d < 0 || d > 255)
                p->bad = 1;
            p->ins[i].jt = (unsigned char)d;
        }
        if (jf) {
            int d = p->label_at[jf] - i - 1;
            if (d < 0 || d > 255)
                p->bad = 1;
            p->ins[i].jf = (unsigned char)d;
        }
    }
}
/* BPF_JA takes a 32-bit offset in k: resolved the same way */
static void jump(struct prog *p, int l)
{
    emit(p, BPF_JMP | BPF_JA, 0, 0, 0);
    p->fix_true[p->n - 1] = -l; /* marked: resolved by resolve_ja */
}
static void resolve_ja(struct prog *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->fix_true[i] < 0) {
            int l = -p->fix_true[i];
            p->ins[i].k = (unsigned int)(p->label_at[l] - i - 1);
            p->fix_true[i] = 0;
        }
}

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
enum { L_ALLOW = 1, L_TRAP, L_ARENA, L_EACCES, L_ENOSYS, L_FIRST_FREE };

/* Trap when [args[0], args[0] + args[1]) overlaps the arena [S, E): 64-bit arithmetic
 * on 32-bit words, scratch memory M[0..3]. Ends in L_ALLOW or L_ARENA. */
static void range_check(struct prog *p, uint64_t S, uint64_t E, int l_no, int l_base)
{
    uint32_t s_hi = (uint32_t)(S >> 32), s_lo = (uint32_t)S;
    uint32_t e_hi = (uint32_t)(E >> 32), e_lo = (uint32_t)E;
    int l_carry0 = l_base, l_store = l_base + 1, l_hi_eq = l_base + 2, l_chk_end = l_base + 3,
        l_end_eq = l_base + 4;
    /* end = addr + len */
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    stmt(p, BPF_ST, 0); /* M0 = addr_lo */
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
    stmt(p, BPF_MISC | BPF_TAX, 0);
    stmt(p, BPF_LD | BPF_MEM, 0);
    stmt(p, BPF_ALU | BPF_ADD | BPF_X, 0);
    stmt(p, BPF_ST, 1); /* M1 = end_lo */
    stmt(p, BPF_LDX | BPF_MEM, 0);
    emit(p, BPF_JMP | BPF_JGE | BPF_X, 0, l_carry0, 0); /* end_lo >= addr_lo: no carry */
    stmt(p, BPF_LD | BPF_IMM, 1);
    jump(p, l_store);
    label(p, l_carry0);
    stmt(p, BPF_LD | BPF_IMM, 0);
    label(p, l_store);
    stmt(p, BPF_MISC | BPF_TAX, 0); /* X = carry */
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_HI(0));
    stmt(p, BPF_ALU | BPF_ADD | BPF_X, 0);
    stmt(p, BPF_MISC | BPF_TAX, 0);
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_HI(1));
    stmt(p, BPF_ALU | BPF_ADD | BPF_X, 0);
    stmt(p, BPF_ST, 3); /* M3 = end_hi */
    /* addr < E ? */
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_HI(0));
    emit(p, BPF_JMP | BPF_JGT | BPF_K, e_hi, l_no, 0);
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, e_hi, l_hi_eq, l_chk_end);
    label(p, l_hi_eq);
    stmt(p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(p, BPF_JMP | BPF_JGE | BPF_K, e_lo, l_no, 0);
    /* end > S ? */
    label(p, l_chk_end);
    stmt(p, BPF_LD | BPF_MEM, 3);
    emit(p, BPF_JMP | BPF_JGT | BPF_K, s_hi, L_ARENA, 0);
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, s_hi, l_end_eq, l_no);
    label(p, l_end_eq);
    stmt(p, BPF_LD | BPF_MEM, 1);
    emit(p, BPF_JMP | BPF_JGT | BPF_K, s_lo, L_ARENA, l_no);
}

static int install_filter(uintptr_t lo, uintptr_t hi)
{
    static struct prog p;
    memset(&p, 0, sizeof p);
    int self = (int)getpid();
    static const int allowed[] = {
        SYS_read, SYS_mmap /* checked below */, SYS_brk, SYS_futex, SYS_sched_yield,
        SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime, SYS_clock_getres,
        SYS_gettimeofday, SYS_getpid, SYS_gettid, SYS_getcpu, SYS_exit, SYS_exit_group,
        SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_restart_syscall, SYS_set_robust_list,
        SYS_rseq, SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_sysinfo,
        SYS_set_tid_address, SYS_getrandom, SYS_sched_getparam, SYS_sched_getscheduler,
    };
    /* not allowed, but answered with an error instead of a kill: glibc falls back
     * (clone3 -> clone, sysconf's file look-ups -> sched_getaffinity) */
    static const int eacces[] = {SYS_open, SYS_openat, SYS_newfstatat, SYS_fstat, SYS_readlink};
    static const int enosys[] = {SYS_clone3};

    stmt(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, L_TRAP);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    emit(&p, BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, L_TRAP, 0); /* x32 ABI */
    for (size_t i = 0; i < sizeof eacces / sizeof *eacces; i++)
        emit(&p, BPF_JMP | BPF_JEQ | BPF_K, (unsigned)eacces[i], L_EACCES, 0);
    for (size_t i = 0; i < sizeof enosys / sizeof *enosys; i++)
        emit(&p, BPF_JMP | BPF_JEQ | BPF_K, (unsigned)enosys[i], L_ENOSYS, 0);
    int l_write = L_FIRST_FREE, l_clone = L_FIRST_FREE + 1, l_mmap = L_FIRST_FREE + 2,
        l_range = L_FIRST_FREE + 3, l_mremap = L_FIRST_FREE + 4, l_kill = L_FIRST_FREE + 5,
        l_tgkill = L_FIRST_FREE + 6, l_sigaction = L_FIRST_FREE + 7,
        l_next = L_FIRST_FREE + 8; /* l_next..l_next+4 */
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_write, l_write, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, l_clone, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, l_mmap, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, l_range, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, l_range, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_madvise, l_range, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_mremap, l_mremap, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_kill, l_kill, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, l_tgkill, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigaction, l_sigaction, 0);
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        emit(&p, BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allowed[i], L_ALLOW, 0);
    jump(&p, L_TRAP);

    /* write: only to this process's stdout (the command channel) and stderr */
    label(&p, l_write);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_HI(0));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 0, 0, L_TRAP);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 1, L_ALLOW, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 2, L_ALLOW, L_TRAP);
    /* clone: threads of this process only (what pthread_create and OpenMP make) */
    label(&p, l_clone);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(&p, BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, L_TRAP);
    emit(&p, BPF_JMP | BPF_JSET | BPF_K, CLONE_VM, L_ALLOW, L_TRAP);
    /* mmap: never MAP_FIXED (it could replace the arena's read-only pages) */
    label(&p, l_mmap);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(3));
    emit(&p, BPF_JMP | BPF_JSET | BPF_K, MAP_FIXED, L_ARENA, L_ALLOW);
    /* mremap: never to a fixed address, never the arena */
    label(&p, l_mremap);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(3));
    emit(&p, BPF_JMP | BPF_JSET | BPF_K, MREMAP_FIXED | 4 /* MREMAP_DONTUNMAP */, L_ARENA,
         l_range);
    /* signals: to this process only */
    label(&p, l_kill);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, (unsigned)self, L_ALLOW, L_TRAP);
    label(&p, l_tgkill);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, (unsigned)self, L_ALLOW, L_TRAP);
    /* rt_sigaction: only glibc's own two internal signals (installed when the first thread
     * is created); never SIGSYS, SIGSEGV or SIGBUS, whose handlers report to the judge */
    label(&p, l_sigaction);
    stmt(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 32, L_ALLOW, 0);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 33, L_ALLOW, L_TRAP);
    /* munmap, mprotect, madvise, mremap: never a byte of the arena */
    label(&p, l_range);
    range_check(&p, lo, hi, L_ALLOW, l_next);

    label(&p, L_ALLOW);
    stmt(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    label(&p, L_TRAP);
    stmt(&p, BPF_RET | BPF_K, SECCOMP_RET_TRAP);
    label(&p, L_ARENA);
    stmt(&p, BPF_RET | BPF_K, SECCOMP_RET_TRAP | 1);
    label(&p, L_EACCES);
    stmt(&p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES);
    label(&p, L_ENOSYS);
    stmt(&p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    resolve_ja(&p);
    resolve(&p);
    if (p.bad)
        return -1;
    struct sock_fprog prog = {.len = (unsigned short)p.n, .filter = p.ins};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}
#endif

int main(int argc, char **argv)
{
    if (argc != 4) {
        say(1, "e usage: runner ARENA-FILE SIZE READONLY-BYTES\n");
        return 2;
    }
    size_t size = strtoull(argv[2], NULL, 10), ro = strtoull(argv[3], NULL, 10);
    long page = sysconf(_SC_PAGESIZE);
    if (size == 0 || ro > size || ro % (size_t)page) {
        say(1, "e bad arena sizes\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        say(1, "e cannot open the arena\n");
        return 3;
    }
    unsigned char *base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        say(1, "e cannot map the arena\n");
        return 3;
    }
    if (size > ro && mmap(base + ro, size - ro, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                          fd, (off_t)ro) == MAP_FAILED) {
        say(1, "e cannot map the arena's outputs\n");
        return 3;
    }
    close(fd);
    arena_base = base;
    arena_size = size;

    static unsigned char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
#ifdef HPCA_SECCOMP
    sa.sa_sigaction = on_sigsys;
    sigaction(SIGSYS, &sa, NULL);
    /* the filter covers the whole mapping, rounded out to pages */
    uintptr_t lo = (uintptr_t)base, hi = lo + ((size + (size_t)page - 1) / (size_t)page) * page;
    if (install_filter(lo, hi) != 0) {
        say(1, "e cannot install the system-call filter\n");
        return 4;
    }
#endif
    say(1, "r\n");
    char line[128];
    while (read_line(line, sizeof line)) {
        if (line[0] == 'q')
            return 0;
        if (line[0] != 'c' || line[1] != ' ') {
            say(1, "e unknown command\n");
            return 2;
        }
        hpca_call(base);
        char answer[140] = "d ";
        size_t n = strlen(line + 2);
        if (n > sizeof answer - 4)
            n = sizeof answer - 4;
        memcpy(answer + 2, line + 2, n);
        answer[2 + n] = '\n';
        (void)!write(1, answer, 3 + n);
    }
    return 0;
}
