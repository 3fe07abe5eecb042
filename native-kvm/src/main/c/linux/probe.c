/*
 * linux-probe: a plain Linux C program, built static with musl (linux-probe-musl) and
 * with glibc (linux-probe-glibc), that the VMM runs as a Linux guest (docs/linux.md).
 * It reports what its process start gave it and answers one request per line of stdin
 * with one line on stdout, the way a worker does:
 *
 *   argv | env | auxv | uname | ids | time | rand | efault | enosys | brk | maps
 *   malloc N        allocate, touch and free N bytes (mmap, munmap, mremap, brk)
 *   set KEY VALUE   remember VALUE under KEY (a table of the process: forks carry it)
 *   get KEY         the VALUE, or "-"
 *   loop N          N getppid calls: the system call round trip, "ns_per_call=..."
 *   cat PATH        the file's size in bytes and first line (stdio), or its errno
 *   wopen PATH      open for writing: its errno (a read-only root: EROFS)
 *   cd DIR          chdir, then getcwd
 *   ls DIR          the directory's names (readdir order) joined by ',', or its errno
 *   exit N          exit_group(N)
 *
 * It says "probe: up" on stderr (the VM's console) before its first read.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int saved_argc;
static char **saved_argv;

#define SLOTS 64
static char keys[SLOTS][64];
static char values[SLOTS][256];

static long raw(long nr, long a, long b, long c)
{
    long r = syscall(nr, a, b, c);
    return r < 0 ? -errno : r;
}

static void reply_argv(void)
{
    printf("argc=%d", saved_argc);
    for (int i = 0; i < saved_argc; i++)
        printf("%c%s", i == 0 ? ' ' : '|', saved_argv[i]);
    printf("\n");
}

static void reply_env(void)
{
    int n = 0;
    for (char **e = environ; *e; e++)
        n++;
    printf("envc=%d", n);
    for (int i = 0; i < n; i++)
        printf("%c%s", i == 0 ? ' ' : '|', environ[i]);
    printf("\n");
}

static void reply_auxv(void)
{
    unsigned char *rnd = (unsigned char *)getauxval(AT_RANDOM);
    printf("phdr=%#lx phent=%lu phnum=%lu pagesz=%lu entry=%#lx hwcap=%#lx hwcap2=%#lx uid=%lu euid=%lu gid=%lu"
           " egid=%lu secure=%lu execfn=%s random=",
           getauxval(AT_PHDR), getauxval(AT_PHENT), getauxval(AT_PHNUM), getauxval(AT_PAGESZ),
           getauxval(AT_ENTRY), getauxval(AT_HWCAP), getauxval(AT_HWCAP2), getauxval(AT_UID),
           getauxval(AT_EUID), getauxval(AT_GID), getauxval(AT_EGID), getauxval(AT_SECURE),
           getauxval(AT_EXECFN) ? (char *)getauxval(AT_EXECFN) : "(none)");
    for (int i = 0; rnd && i < 16; i++)
        printf("%02x", rnd[i]);
    printf("\n");
}

static void reply_uname(void)
{
    struct utsname u;
    if (uname(&u) != 0) {
        printf("uname errno=%d\n", errno);
        return;
    }
    printf("sysname=%s nodename=%s release=%s machine=%s\n", u.sysname, u.nodename, u.release, u.machine);
}

static void reply_time(void)
{
    struct timespec m1, m2, r;
    clock_gettime(CLOCK_MONOTONIC, &m1);
    struct timespec d = { 0, 2000000 };
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &m2);
    clock_gettime(CLOCK_REALTIME, &r);
    long slept = (m2.tv_sec - m1.tv_sec) * 1000000000L + (m2.tv_nsec - m1.tv_nsec);
    printf("slept_ns_ok=%d realtime=%ld time=%ld\n", slept >= 2000000, (long)r.tv_sec, (long)time(NULL));
}

static void reply_rand(void)
{
    unsigned char b[16];
    long n = getrandom(b, sizeof b, 0);
    printf("n=%ld ", n);
    for (int i = 0; i < 16; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static void reply_efault(void)
{
    /* Pointers outside guest RAM, and into page 0: each call answers EFAULT, the VM goes on. */
    long w = raw(SYS_write, 1, 0x7ff000000000L, 10);
    long r = raw(SYS_read, 0, 8, 10);
    long c = raw(SYS_clock_gettime, CLOCK_MONOTONIC, 0x7ff000000000L, 0);
    long u = raw(SYS_uname, 16, 0, 0);
    long g = raw(SYS_getrandom, -4096L, 16, 0);
    printf("write=%ld read=%ld clock_gettime=%ld uname=%ld getrandom=%ld\n", w, r, c, u, g);
}

static void reply_enosys(void)
{
    long a = raw(SYS_inotify_init1, 0, 0, 0);
    long b = raw(SYS_inotify_init1, 0, 0, 0);
    long c = raw(SYS_rseq, 0, 0, 0);
    printf("inotify_init1=%ld,%ld rseq=%ld\n", a, b, c);
}

static void reply_malloc(long n)
{
    unsigned char *p = malloc((size_t)n);
    if (!p) {
        printf("malloc failed errno=%d\n", errno);
        return;
    }
    memset(p, 0xab, (size_t)n);
    p = realloc(p, (size_t)n * 2);
    if (!p) {
        printf("realloc failed errno=%d\n", errno);
        return;
    }
    long sum = 0;
    for (long i = 0; i < n; i += 4096)
        sum += p[i];
    free(p);
    void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int zero = m != MAP_FAILED && ((char *)m)[12345] == 0;
    if (m != MAP_FAILED)
        munmap(m, 1 << 20);
    void *huge = mmap(NULL, 1L << 40, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("ok sum=%ld zero=%d huge=%s\n", sum, zero, huge == MAP_FAILED && errno == ENOMEM ? "ENOMEM" : "mapped");
}

static void reply_brk(void)
{
    /* Raw brk: musl's sbrk refuses any increment. */
    long a = syscall(SYS_brk, 0);
    long b = syscall(SYS_brk, a + (1 << 16));
    ((char *)a)[100] = 1;
    long c = syscall(SYS_brk, a);
    long d = syscall(SYS_brk, 0);
    long e = syscall(SYS_brk, a + (1L << 40));
    printf("grow=%d shrink=%d huge=%d\n", b == a + (1 << 16), c == a && d == a, e == a);
}

static void reply_loop(long n)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
    printf("calls=%ld ns_per_call=%ld\n", n, n > 0 ? ns / n : 0);
}

static void reply_cat(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("errno=%d\n", errno);
        return;
    }
    char first[256] = "";
    if (!fgets(first, sizeof first, f))
        first[0] = 0;
    first[strcspn(first, "\n")] = 0;
    long n = (long)strlen(first) + (first[0] ? 1 : 0);
    char buf[4096];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        n += (long)k;
    fclose(f);
    printf("bytes=%ld first=%s\n", n, first);
}

static void reply_wopen(const char *path)
{
    FILE *f = fopen(path, "w");
    printf("errno=%d\n", f ? 0 : errno);
    if (f)
        fclose(f);
}

static void reply_cd(const char *dir)
{
    char cwd[512];
    int r = chdir(dir);
    int e = errno;
    printf("chdir=%d errno=%d cwd=%s\n", r, r ? e : 0, getcwd(cwd, sizeof cwd) ? cwd : "?");
}

static void reply_ls(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("errno=%d\n", errno);
        return;
    }
    struct dirent *e;
    int first = 1;
    while ((e = readdir(d)) != NULL) {
        printf("%s%s", first ? "" : ",", e->d_name);
        first = 0;
    }
    closedir(d);
    printf("\n");
}

static void remember(const char *k, const char *v)
{
    for (int i = 0; i < SLOTS; i++)
        if (keys[i][0] == 0 || strcmp(keys[i], k) == 0) {
            snprintf(keys[i], sizeof keys[i], "%s", k);
            snprintf(values[i], sizeof values[i], "%s", v);
            printf("ok\n");
            return;
        }
    printf("full\n");
}

static void recall(const char *k)
{
    for (int i = 0; i < SLOTS; i++)
        if (keys[i][0] && strcmp(keys[i], k) == 0) {
            printf("%s\n", values[i]);
            return;
        }
    printf("-\n");
}

int main(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
    fprintf(stderr, "probe: up\n");
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *arg = strchr(line, ' ');
        if (arg)
            *arg++ = 0;
        if (!strcmp(line, "argv"))
            reply_argv();
        else if (!strcmp(line, "env"))
            reply_env();
        else if (!strcmp(line, "auxv"))
            reply_auxv();
        else if (!strcmp(line, "uname"))
            reply_uname();
        else if (!strcmp(line, "ids"))
            printf("pid=%d ppid=%d tid=%ld uid=%d euid=%d gid=%d egid=%d\n", getpid(), getppid(),
                   syscall(SYS_gettid), getuid(), geteuid(), getgid(), getegid());
        else if (!strcmp(line, "time"))
            reply_time();
        else if (!strcmp(line, "rand"))
            reply_rand();
        else if (!strcmp(line, "efault"))
            reply_efault();
        else if (!strcmp(line, "enosys"))
            reply_enosys();
        else if (!strcmp(line, "malloc") && arg)
            reply_malloc(atol(arg));
        else if (!strcmp(line, "loop") && arg)
            reply_loop(atol(arg));
        else if (!strcmp(line, "cat") && arg)
            reply_cat(arg);
        else if (!strcmp(line, "wopen") && arg)
            reply_wopen(arg);
        else if (!strcmp(line, "ls") && arg)
            reply_ls(arg);
        else if (!strcmp(line, "cd") && arg)
            reply_cd(arg);
        else if (!strcmp(line, "brk"))
            reply_brk();
        else if (!strcmp(line, "set") && arg && strchr(arg, ' ')) {
            char *v = strchr(arg, ' ');
            *v++ = 0;
            remember(arg, v);
        } else if (!strcmp(line, "get") && arg)
            recall(arg);
        else if (!strcmp(line, "exit") && arg) {
            fflush(stdout);
            exit(atoi(arg));
        } else
            printf("? %s\n", line);
        fflush(stdout);
    }
    fprintf(stderr, "probe: end of input\n");
    return 0;
}
