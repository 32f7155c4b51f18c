/* The generic trusted runner: calls ONE kernel, once per command, with arguments laid
 * out by the judge in a shared-memory file. It holds nothing of the judge: no inputs
 * generator, no seed, no reference, no tolerance, no checker and no timer whose reading
 * is trusted (the judge times the pipe round trip from outside this process).
 *
 * Linked with the kernel's object file and a call stub generated from kernel.yaml's
 * `parameters` (hpca_call reads slot i of the header: an integer, a double, or the byte
 * offset of an array in the file).
 *
 * usage: runner ARENA-FILE      commands on stdin, one per line, answers on stdout:
 *   "c SIZE"  map the first SIZE bytes of the file (again if SIZE changed), call the
 *             kernel, answer "d"
 *   "q"       exit 0
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void hpca_call(unsigned char *base);

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

static void say(const char *text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        say("e usage: runner ARENA-FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        say("e cannot open the arena\n");
        return 3;
    }
    unsigned char *base = NULL;
    size_t mapped = 0;
    char line[128];
    while (read_line(line, sizeof line)) {
        if (line[0] == 'q')
            return 0;
        if (line[0] != 'c') {
            say("e unknown command\n");
            return 2;
        }
        size_t size = strtoull(line + 1, NULL, 10);
        if (size != mapped) {
            if (base)
                munmap(base, mapped);
            base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (base == MAP_FAILED) {
                say("e cannot map the arena\n");
                return 3;
            }
            mapped = size;
        }
        hpca_call(base);
        say("d\n");
    }
    return 0;
}
