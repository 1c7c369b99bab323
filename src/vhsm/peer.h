/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Peer identity of a vhsmd client connection, established once when the connection is accepted:
 * uid, gid and pid from SO_PEERCRED and the supplementary groups from SO_PEERGROUPS (Linux
 * 4.13+; the kernel's snapshots at connect() time, which the peer cannot forge), and the cgroup
 * v2 path read from /proc/PID/cgroup.
 *
 * Reading /proc/PID/cgroup races with pid reuse: the peer may exit and its pid be recycled by
 * another process before the read. The one defence: SO_PEERPIDFD (Linux 6.5+) gives a pidfd for
 * the exact peer process; the cgroup is read from /proc/<pid of the pidfd>/cgroup and then the
 * pidfd must still be alive (poll: not readable). A process that has not exited cannot have been
 * reaped, so its pid was not recycled and the file read was the peer's. Without a live pidfd
 * (kernel < 6.5, peer exited, or the test knob) the cgroup is left unknown (NULL): no cgroup ACL
 * entry matches it, so the failure is closed. uid/gid are always valid. (A start-time check is
 * deliberately not used: a process that got the pid between connect() and accept() passes it.)
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
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
    struct VaultSession *session; /* the connection's PIN login (vault.h), or NULL: the owner of
                                   * the connection releases it (vault_session_unref) */
    uint64_t conn_id; /* unique per connection of the daemon (session objects live with it) */
} Peer;

/* Identifies the peer of a connected unix socket. Returns 0 (cgroup may be NULL; groups empty if
 * the kernel lacks SO_PEERGROUPS, or the peer has more than PEER_GROUPS_MAX: then only its
 * primary gid counts) or a negative errno if SO_PEERCRED fails. use_pidfd false: behave as on a
 * kernel without SO_PEERPIDFD (the cgroup stays unknown). */
int peer_identify(int fd, bool use_pidfd, Peer *ret);
void peer_done(Peer *p);

/* True if the kernel answers SO_PEERPIDFD (Linux 6.5+). */
bool peer_pidfd_supported(void);

/* Parses the content of /proc/PID/cgroup and returns the cgroup v2 ("0::") path, malloc'd.
 * Returns 0, -ENOENT (no v2 line), -EBADMSG (malformed, or a path that is not absolute), -ENOMEM.
 */
int peer_parse_cgroup(const char *content, char **ret);
