/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhsmd socket server: a unix stream listener, a fixed pool of worker threads sharing one
 * epoll set of connections (EPOLLONESHOT: a ready connection is handled by exactly one idle
 * worker, which reads what is available, answers every complete frame in order, writes the
 * replies with one send and re-arms), and a main thread that accepts, identifies peers, enforces
 * connection limits, expires stalled connections and handles SIGTERM/SIGINT.
 *
 * Why this shape: operations are CPU-bound and range from microseconds (HMAC) to milliseconds
 * (RSA-4096); a pool of one worker per core keeps every core busy without a hand-off thread on
 * the hot path (the worker that sees the readable socket runs the operation), and one slow
 * request occupies only one worker. Sockets are non-blocking; a client that stalls mid-frame or
 * stops reading its replies is disconnected after the idle timeout without blocking anyone.
 *
 * The agent channel (agentq.h, docs/protocol.md "Agent channel"): a request that waits for the
 * agent (an application's, parked on a job, or an agent's AGENT_WAIT long poll) holds no worker:
 * its frame stays at the front of the connection's input buffer and the connection is left
 * unarmed (not stalled, reading nothing more) until the agent queue hands it back; then a worker
 * answers it and carries on. The main thread runs the queue's deadlines (job timeouts, waits) and
 * notices parked clients that hung up.
 *
 * Shutdown (server_request_stop, async-signal-safe): stop accepting, unlink the socket, let
 * every worker finish the request it is running and flush its reply, then close all
 * connections; server_run() returns 0.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "dispatch.h"

typedef struct ServerConfig {
    const char *socket_path;
    mode_t socket_mode;        /* e.g. 0666: access is decided per key by peer identity */
    gid_t socket_gid;          /* (gid_t)-1: leave the group */
    unsigned threads;          /* 0: one per online CPU */
    unsigned max_connections;  /* 0: 1024; lowered to fit RLIMIT_NOFILE (logged) */
    unsigned max_per_uid;      /* 0: 128 (root is exempt) */
    unsigned root_connections; /* 0: 16; of max_connections, only root may use these */
    unsigned stall_timeout_ms; /* 0: 10000; a partial frame or unread reply older than this */
    unsigned spin_us;          /* busy-poll a connection this long after a reply; 0: off */
    bool no_peer_pidfd;        /* no SO_PEERPIDFD (old kernel, or the test knob): cgroups unknown */
    unsigned agent_timeout_s;  /* 0: 30; how long a request waits for the agent (agent channel) */
} ServerConfig;

typedef struct Server Server;

/* Creates the listening socket (refusing to replace a live socket: -EADDRINUSE; a stale one is
 * removed). dispatch is borrowed. Returns 0 or a negative errno (logged by the caller). */
int server_new(const ServerConfig *cfg, Dispatch *dispatch, Server **ret);
/* Runs until a stop is requested; returns 0 after a clean shutdown, or a negative errno. */
int server_run(Server *s);
/* Async-signal-safe. */
void server_request_stop(Server *s);
/* Closes everything and unlinks the socket if still present. Accepts NULL, returns NULL. */
Server *server_free(Server *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Server *, server_free);
