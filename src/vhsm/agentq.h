/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent channel's bookkeeping (docs/protocol.md "Agent channel"): which connections are
 * agents and which key names they serve, the jobs handed to them (one per key), and the
 * applications' requests parked on a job until it completes. No sockets here: the server embeds
 * one AgentqConn in each connection and is called back to hand a connection back to its workers.
 *
 * Ownership of a connection (the server's rule: one thread at a time): a connection whose request
 * parks (an application's, or an agent's AGENT_WAIT) is first "parking" (still owned by the
 * worker handling it, which may flush replies of earlier requests), then agentq_commit() makes it
 * "parked": owned by nobody, not armed in the server's epoll set, so that no worker sees it. Only
 * the queue hands it back: it records the outcome and calls resume() under the queue lock, after
 * which the server arms it and one worker answers the parked request. An outcome that arrives
 * while the connection is still parking is found by agentq_commit(), which then returns false
 * (the worker keeps it). So a parked connection is never touched by two threads, nor freed while
 * the queue knows it (the server calls agentq_conn_gone() before freeing any connection).
 *
 * Bounds: AGENTQ_MAX_PARKED parked requests in all, of which non-root uids together take at most
 * AGENTQ_MAX_PARKED - AGENTQ_PARKED_ROOT and each at most AGENTQ_MAX_PARKED_UID (also jobs
 * created per non-root uid); beyond them the request is answered at once with its original error.
 * One job per key (at most AGENTQ_MAX_PARKED jobs); a job lives at most the agent timeout.
 * Thread-safe (one mutex).
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client/proto.h"

#define AGENTQ_MAX_PARKED 256
#define AGENTQ_MAX_PARKED_UID 16 /* per non-root uid */
#define AGENTQ_PARKED_ROOT 32    /* of AGENTQ_MAX_PARKED, only root's requests may use these */
#define AGENTQ_DROP 1            /* outcome: the parked client went away, close the connection */

typedef struct Agentq Agentq;
typedef struct AgentqJob AgentqJob;
typedef struct AgentqAgent AgentqAgent;

typedef enum AgentqState {
    AGENTQ_IDLE = 0, /* nothing parked */
    AGENTQ_PARKING,  /* parked, still owned by its worker (until agentq_commit) */
    AGENTQ_PARKED,   /* owned by nobody: the queue will resume it */
    AGENTQ_READY,    /* the outcome is known: answer the parked request */
    _AGENTQ_STATE_MAX,
    _AGENTQ_STATE_INVALID = -EINVAL,
} AgentqState;

/* Embedded in each server connection; zero-initialised. All fields belong to the queue (its
 * lock) except conn and uid, set by the server at creation. */
typedef struct AgentqConn {
    void *conn; /* the server's connection, passed to resume() */
    uid_t uid;
    AgentqState state;
    bool waiting; /* the parked request is an AGENT_WAIT (else an application's) */
    int outcome;  /* READY: 0 run again, < 0 answer this errno, AGENTQ_DROP */
    char message[VHSM_MAX_AGENT_MESSAGE + 160];
    AgentqJob *job; /* an application's parked request: its job */
    struct AgentqConn *job_prev, *job_next;
    AgentqAgent *agent;    /* set from the connection's first AGENT_WAIT until it closes */
    int64_t wait_deadline; /* ms (monotonic) of the pending AGENT_WAIT */
} AgentqConn;

/* resume(userdata, conn): arm the connection so that a worker answers its parked request.
 * Called with the queue lock held: must not call back into the queue. poke(userdata): a new
 * deadline exists, the caller of agentq_tick() should look again soon (may be NULL). */
typedef void (*AgentqResumeFn)(void *userdata, void *conn);
typedef void (*AgentqPokeFn)(void *userdata);
/* Whether the (parked) connection's peer has hung up. */
typedef bool (*AgentqGoneFn)(void *userdata, void *conn);

int agentq_new(unsigned timeout_s, AgentqResumeFn resume, AgentqPokeFn poke, void *userdata,
               Agentq **ret);
/* Forgets everything without resuming anyone (shutdown: the connections are closed next). */
Agentq *agentq_free(Agentq *q);

/* Whether pattern is valid: 1..VHSM_MAX_PATTERN bytes, no NUL, '*' only as the last byte. */
bool agentq_pattern_valid(const char *pattern);
/* Whether key matches pattern (exact, or the prefix before a final '*'). */
bool agentq_pattern_match(const char *pattern, const char *key);

/* An application's request on key failed with error (-ENOKEY: reason "missing", -EKEYEXPIRED:
 * "stale"). Parks it on the key's job (created and given to an agent if there is none) when an
 * agent serves the key. Returns 1 (parked: c is PARKING), 0 (no agent serves key: answer as
 * usual), -EBUSY (a bound is reached; msg says which), -ENOMEM. */
int agentq_park(Agentq *q, AgentqConn *c, const char *key, int error, char *msg, size_t msg_size);

/* Ends the parking of c by its worker. Returns true if c is now parked (the worker must leave
 * it alone), false if its outcome is already known (the worker answers it now). */
bool agentq_commit(Agentq *q, AgentqConn *c);
/* For a READY application request: its outcome (0: run it again; < 0: answer that errno with
 * msg; AGENTQ_DROP: close). c becomes IDLE. */
int agentq_take_outcome(Agentq *q, AgentqConn *c, char *msg, size_t msg_size);

typedef struct AgentqJobInfo {
    uint64_t id;
    char key[VHSM_MAX_NAME + 1];
    const char *reason; /* "missing" or "stale" (static) */
    unsigned parked;
} AgentqJobInfo;

/* An AGENT_WAIT on c (the caller checked it is root's). patterns (n > 0) replace the served set
 * (n == 0 keeps it; the first wait without patterns serves nothing). resumed: c's parked wait is
 * being answered (keeps its deadline). Returns 1 (a job: *ret filled, the job is this agent's),
 * 0 (the wait is over, idle: answer {}), 2 (wait: c is PARKING), -ENOMEM. */
int agentq_agent_wait(Agentq *q, AgentqConn *c, const char *const *patterns, size_t n_patterns,
                      uint32_t wait_ms, bool resumed, AgentqJobInfo *ret);
/* An AGENT_WAIT request body, parsed (agentq_wait_request_parse). */
typedef struct AgentqWaitRequest {
    const char *patterns[VHSM_MAX_PATTERNS]; /* into storage */
    size_t n_patterns;
    uint32_t wait_ms; /* WAIT_MS, default VHSM_AGENT_WAIT_DEFAULT_MS, capped at the maximum */
    char storage[VHSM_MAX_PATTERNS][VHSM_MAX_PATTERN + 1];
} AgentqWaitRequest;
/* Parses a validated AGENT_WAIT body into *ret (large: allocate it). Returns 0, or -EBADMSG
 * (malformed WAIT_MS), -EMSGSIZE (too many patterns), -EINVAL (a pattern too long, holding NUL,
 * or with '*' elsewhere than at its end), with *ret_error naming the problem (static). */
int agentq_wait_request_parse(const uint8_t *body, size_t len, AgentqWaitRequest *ret,
                              const char **ret_error);
/* An AGENT_DONE body: JOB_ID, STATUS_CODE (a known status; 0 = done), MESSAGE (<= 1024 bytes,
 * copied into message[VHSM_MAX_AGENT_MESSAGE + 1], "" if absent). *ret_error as above. Returns
 * 0, -EBADMSG, -EINVAL (unknown status), -EMSGSIZE (message too long). */
int agentq_done_request_parse(const uint8_t *body, size_t len, uint64_t *ret_id,
                              uint16_t *ret_status, char *message, const char **ret_error);

/* AGENT_DONE: error 0 (done: parked requests run again) or a negative errno they are answered
 * with, with message (may be NULL). Returns 0 or -ENOKEY (unknown or finished job). */
int agentq_agent_done(Agentq *q, uint64_t id, int error, const char *message);

/* A key was imported (key) and/or a verdict recorded (verdict): parked requests that it
 * concerns run again now (their jobs stay open until done or timeout). */
void agentq_key_event(Agentq *q, const char *key, bool verdict);

/* The connection closes (called by its owner before freeing it): its parked request is dropped,
 * its jobs as an agent go to another agent serving their key, else fail with -EHOSTUNREACH. */
void agentq_conn_gone(Agentq *q, AgentqConn *c);

/* Housekeeping at time now (ms, monotonic): expires jobs (-ETIMEDOUT) and agents' waits, drops
 * parked requests whose peer hung up (gone may be NULL). Returns the ms until the next deadline,
 * or -1 if none. */
int64_t agentq_tick(Agentq *q, int64_t now, AgentqGoneFn gone);

/* Counts, for tests and metrics. */
typedef struct AgentqStats {
    unsigned agents, jobs, parked;
} AgentqStats;
void agentq_stats(Agentq *q, AgentqStats *ret);
