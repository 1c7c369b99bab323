/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Peer identity of a vhsmd client connection, established once when the connection is accepted:
 * uid, gid and pid from SO_PEERCRED and the supplementary groups from SO_PEERGROUPS (Linux
 * 4.13+; the kernel's snapshots at connect() time, which the peer cannot forge), and the cgroup
 * v2 path read from /proc/PID/cgroup.
 *
 * Reading /proc/PID/cgroup races with pid reuse: the peer may exit and its pid be recycled by
 * another process before the read. Defences, in order of preference:
 *  - SO_PEERPIDFD (Linux 6.5+): a pidfd for the exact peer process. After reading the cgroup we
 *    check that the pidfd's process still runs (pidfd_send_signal(pidfd, 0)) and that
 *    /proc/self/fdinfo/<pidfd> still names the same pid: a live process cannot have given its
 *    pid away, so the cgroup we read was the peer's.
 *  - Otherwise: the process start time (/proc/PID/stat field 22) is read before and after the
 *    cgroup, must be equal, and must not be later than the moment we accepted the connection
 *    (a process started after accept() cannot be the one that connected).
 * If neither check passes, the cgroup is left unknown (NULL): no cgroup ACL entry matches it,
 * so the failure is closed. uid/gid are always valid.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "core/macro.h"

#define PEER_GROUPS_MAX 1024 /* supplementary groups kept (the kernel allows 65536) */

typedef struct Peer {
    uid_t uid;
    gid_t gid;
    gid_t *groups; /* supplementary groups (SO_PEERGROUPS), malloc'd, or NULL */
    size_t n_groups;
    pid_t pid;    /* 0 if the peer is in a pid namespace we cannot see */
    char *cgroup; /* cgroup v2 path ("/system.slice/x.service"), or NULL if unknown */
    bool pidfd;   /* true if the cgroup was verified through a pidfd */
} Peer;

/* Identifies the peer of a connected unix socket. Returns 0 (cgroup may be NULL; groups empty if
 * the kernel lacks SO_PEERGROUPS, or the peer has more than PEER_GROUPS_MAX: then only its
 * primary gid counts) or a negative errno if SO_PEERCRED fails. accept_boottime_ticks: the time of
 * accept() in clock ticks since boot (peer_boottime_ticks()), for the start-time check. */
int peer_identify(int fd, unsigned long long accept_boottime_ticks, Peer *ret);
void peer_done(Peer *p);

/* Now, in clock ticks (sysconf(_SC_CLK_TCK)) since boot (CLOCK_BOOTTIME), the unit of
 * /proc/PID/stat's starttime. */
unsigned long long peer_boottime_ticks(void);

/* Parses the content of /proc/PID/cgroup and returns the cgroup v2 ("0::") path, malloc'd.
 * Returns 0, -ENOENT (no v2 line), -EBADMSG (malformed, or a path that is not absolute), -ENOMEM.
 */
int peer_parse_cgroup(const char *content, char **ret);
/* Parses the starttime (field 22) out of the content of /proc/PID/stat (the comm field may hold
 * spaces and parentheses). Returns 0 or -EBADMSG. */
int peer_parse_starttime(const char *content, unsigned long long *ret);
