/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Peer identity (see peer.h for the pid-reuse defence). Everything read from /proc is bounded
 * and parsed strictly; any doubt leaves the cgroup unknown, which denies cgroup-based access.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static int read_cgroup(pid_t pid, char **ret) {
    char path[64], buf[PROC_READ_MAX];
    int r;
    (void)snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    r = read_small(path, buf, sizeof buf);
    if (r < 0)
        return r;
    return peer_parse_cgroup(buf, ret);
}

/* The pid of pidfd's process in our pid namespace, from /proc/self/fdinfo/<pidfd> ("Pid:"):
 * > 0, or 0 if the process is in a pid namespace we cannot see, or -ESRCH once it was reaped
 * (the kernel shows -1; Linux 6.16+ hands out pidfds for reaped peers), or a negative errno. */
static pid_t pidfd_pid(int pidfd) {
    char path[64], buf[PROC_READ_MAX];
    const char *p;
    char *end;
    long v;
    int r;

    (void)snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    r = read_small(path, buf, sizeof buf);
    if (r < 0)
        return r;
    p = strstr(buf, "\nPid:\t");
    if (!p)
        return -ENOENT; /* a kernel whose fdinfo does not name the pid */
    errno = 0;
    v = strtol(p + 6, &end, 10);
    if (errno != 0 || end == p + 6 || (*end != '\n' && *end != 0) || v < -1 || v > INT32_MAX)
        return -EBADMSG;
    return v == -1 ? -ESRCH : (pid_t)v;
}

/* True if pidfd's process has not exited. The kernel wakes pidfd pollers (POLLIN) when the
 * process exits, before it can be reaped and its pid given to another process: so while this
 * holds, the pid still names the process of the pidfd. Unlike pidfd_send_signal(pidfd, 0) it
 * needs no permission to signal the peer. Any doubt counts as exited. */
static bool pidfd_alive(int pidfd) {
    struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
    int n;

    do
        n = poll(&pfd, 1, 0);
    while (n < 0 && errno == EINTR);
    return n == 0;
}

/* Reads the cgroup of pidfd's process, which SO_PEERCRED named pid. Returns 0 or a negative
 * errno (-ESRCH: exited, reaped or not visible). */
static int pidfd_cgroup(int pidfd, pid_t pid, char **ret) {
    _cleanup_free_ char *cg = NULL;
    pid_t fd_pid;
    int r;

    fd_pid = pidfd_pid(pidfd);
    if (fd_pid < 0)
        return fd_pid;
    if (fd_pid == 0 || fd_pid != pid)
        return -ESRCH; /* invisible to us, or not the pid SO_PEERCRED named */
    r = read_cgroup(fd_pid, &cg);
    if (r < 0)
        return r;
    if (!pidfd_alive(pidfd))
        return -ESRCH; /* exited during the read: the pid may have been recycled since */
    *ret = TAKE_PTR(cg);
    return 0;
}

/* Cgroup only through a live pidfd of the connecting process (SO_PEERPIDFD); anything else
 * (no SO_PEERPIDFD, the peer exited, fdinfo without Pid) leaves it unknown. */
static void identify_cgroup(int fd, pid_t pid, bool use_pidfd, Peer *p) {
    _cleanup_close_ int pidfd = -EBADF;
    socklen_t len = sizeof pidfd;
    int r;

    if (!use_pidfd || pid <= 0)
        return;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
        /* ENOPROTOOPT: kernel < 6.5; ESRCH: the peer was reaped (kernel < 6.16) */
        log_debug_errno(negative_errno(), "No pidfd for peer pid %d (%m); cgroup unknown.",
                        (int)pid);
        return;
    }
    if (len != sizeof pidfd || pidfd < 0)
        return;
    r = pidfd_cgroup(pidfd, pid, &p->cgroup);
    if (r < 0) {
        log_debug_errno(r, "Cgroup of peer pid %d not verified (%m); cgroup unknown.", (int)pid);
        return;
    }
    p->pidfd = true;
}

bool peer_pidfd_supported(void) {
    _cleanup_close_ int a = -EBADF, b = -EBADF, pidfd = -EBADF;
    socklen_t len = sizeof pidfd;
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return false;
    a = sv[0];
    b = sv[1];
    if (getsockopt(a, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
        return false;
    return len == sizeof pidfd && pidfd >= 0;
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

int peer_identify(int fd, bool use_pidfd, Peer *ret) {
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
    identify_cgroup(fd, cred.pid, use_pidfd, &p);
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
