/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Peer identity (see peer.h for the pid-reuse defences). Everything read from /proc is bounded
 * and parsed strictly; any doubt leaves the cgroup unknown, which denies cgroup-based access.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "core/log.h"
#include "peer.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older headers lack it, the kernel answers ENOPROTOOPT */
#endif

#define PROC_READ_MAX 8192

/* Reads a small /proc file into buf (NUL-terminated). */
static int read_small(const char *path, char *buf, size_t size) {
    _cleanup_close_ int fd = -EBADF;
    size_t have = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return negative_errno();
    while (have < size - 1) {
        ssize_t n = read(fd, buf + have, size - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return negative_errno();
        if (n == 0)
            break;
        have += (size_t)n;
    }
    if (have == size - 1)
        return -EFBIG;
    buf[have] = 0;
    return 0;
}

int peer_parse_cgroup(const char *content, char **ret) {
    const char *line = content;

    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len >= 3 && memcmp(line, "0::", 3) == 0) {
            const char *path = line + 3;
            size_t plen = len - 3;
            char *s;
            if (plen == 0 || path[0] != '/' || memchr(path, 0, plen))
                return -EBADMSG;
            s = strndup(path, plen);
            if (!s)
                return -ENOMEM;
            *ret = s;
            return 0;
        }
        line = eol ? eol + 1 : NULL;
    }
    return -ENOENT;
}

int peer_parse_starttime(const char *content, unsigned long long *ret) {
    /* "pid (comm) S ppid ..." : comm may contain ") ", so search the last ')'. */
    const char *p = strrchr(content, ')');
    unsigned long long v;
    char *end;

    if (!p || p[1] != ' ')
        return -EBADMSG;
    p += 2;
    /* p is at field 3 (state); starttime is field 22: skip 19 fields. */
    for (int i = 0; i < 19; i++) {
        p = strchr(p, ' ');
        if (!p)
            return -EBADMSG;
        p++;
    }
    if (*p < '0' || *p > '9')
        return -EBADMSG;
    errno = 0;
    v = strtoull(p, &end, 10);
    if (errno != 0 || (*end != ' ' && *end != '\n' && *end != 0))
        return -EBADMSG;
    *ret = v;
    return 0;
}

unsigned long long peer_boottime_ticks(void) {
    struct timespec ts;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    (void)clock_gettime(CLOCK_BOOTTIME, &ts);
    return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
           (unsigned long long)ts.tv_nsec / (1000000000ull / (unsigned long long)hz);
}

static int read_cgroup(pid_t pid, char **ret) {
    char path[64], buf[PROC_READ_MAX];
    int r;
    (void)snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    r = read_small(path, buf, sizeof buf);
    if (r < 0)
        return r;
    return peer_parse_cgroup(buf, ret);
}

static int read_starttime(pid_t pid, unsigned long long *ret) {
    char path[64], buf[PROC_READ_MAX];
    int r;
    (void)snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    r = read_small(path, buf, sizeof buf);
    if (r < 0)
        return r;
    return peer_parse_starttime(buf, ret);
}

/* True if pidfd still refers to a running process with pid `pid`. */
static bool pidfd_still_is(int pidfd, pid_t pid) {
    char path[64], buf[PROC_READ_MAX];
    const char *p;

    if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0)
        return false;
    (void)snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    if (read_small(path, buf, sizeof buf) < 0)
        return false;
    p = strstr(buf, "\nPid:\t");
    if (!p)
        return false;
    return strtol(p + 6, NULL, 10) == (long)pid;
}

static void identify_cgroup(int fd, pid_t pid, unsigned long long accept_ticks, Peer *p) {
    _cleanup_close_ int pidfd = -EBADF;
    _cleanup_free_ char *cg = NULL;
    socklen_t len = sizeof pidfd;
    unsigned long long st1 = 0, st2 = 0;
    int r;

    if (pid <= 0)
        return;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0 &&
        len == sizeof pidfd) {
        r = read_cgroup(pid, &cg);
        if (r < 0) {
            log_debug_errno(r, "Cannot read the cgroup of peer pid %d: %m", (int)pid);
            return;
        }
        if (!pidfd_still_is(pidfd, pid)) {
            log_debug("Peer pid %d exited while its cgroup was read; cgroup unknown.", (int)pid);
            return;
        }
        p->cgroup = TAKE_PTR(cg);
        p->pidfd = true;
        return;
    }
    pidfd = -EBADF;

    /* No pidfd: bracket the read with the start time. */
    if (read_starttime(pid, &st1) < 0)
        return;
    r = read_cgroup(pid, &cg);
    if (r < 0)
        return;
    if (read_starttime(pid, &st2) < 0 || st1 != st2 || st1 > accept_ticks) {
        log_debug("Peer pid %d changed identity while its cgroup was read; cgroup unknown.",
                  (int)pid);
        return;
    }
    p->cgroup = TAKE_PTR(cg);
}

/* The peer's supplementary groups as the kernel recorded them at connect(). Leaves none on any
 * failure (old kernel, too many groups, no memory): then the primary gid alone counts, which
 * only ever grants less. */
static void identify_groups(int fd, Peer *p) {
    socklen_t len = 64 * sizeof(gid_t);
    for (int attempt = 0; attempt < 2; attempt++) {
        gid_t *g;
        if (len == 0 || len % sizeof(gid_t) != 0 || len > PEER_GROUPS_MAX * sizeof(gid_t))
            break;
        g = malloc(len);
        if (!g)
            break;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
            if (len % sizeof(gid_t) != 0) {
                free(g);
                break;
            }
            p->groups = g;
            p->n_groups = len / sizeof(gid_t);
            return;
        }
        free(g);
        if (errno != ERANGE) /* ENOPROTOOPT: a kernel before 4.13 */
            break;
        /* len now holds the size needed */
    }
    log_debug("Supplementary groups of pid %d unknown: its primary gid alone counts.", (int)p->pid);
}

int peer_identify(int fd, unsigned long long accept_boottime_ticks, Peer *ret) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    Peer p = {0};

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return negative_errno();
    if (len != sizeof cred)
        return -EIO;
    p.uid = cred.uid;
    p.gid = cred.gid;
    p.pid = cred.pid;
    identify_groups(fd, &p);
    identify_cgroup(fd, cred.pid, accept_boottime_ticks, &p);
    *ret = p;
    return 0;
}

void peer_done(Peer *p) {
    free(p->cgroup);
    p->cgroup = NULL;
    free(p->groups);
    p->groups = NULL;
    p->n_groups = 0;
}
