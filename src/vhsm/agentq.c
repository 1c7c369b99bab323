/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent channel's queue (see agentq.h).
 *
 * Invariants (all under q->lock):
 *  - A job is in q->jobs (creation order) until done, failed or expired; at most one per key.
 *  - An application connection is in exactly one job's parked list while c->job is set; it
 *    leaves it when its outcome is set (state READY), when it goes, or never otherwise.
 *  - q->n_parked is the number of connections in parked lists; jobs created per uid and parked
 *    requests per uid are counted by walking the lists (both at most AGENTQ_MAX_PARKED).
 *  - A job's agent is a connected agent (agent removal reassigns or fails its jobs).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentq.h"
#include "core/macro.h"
#include "vlog.h"

struct AgentqJob {
    uint64_t id;
    char key[VHSM_MAX_NAME + 1];
    bool stale;
    uid_t uid; /* whose request created it (log rate limits, per-uid bound) */
    int64_t created, deadline;
    AgentqAgent *agent;
    bool delivered; /* handed to its agent by an AGENT_WAIT */
    AgentqConn *parked;
    unsigned n_parked;
    AgentqJob *prev, *next;
};

struct AgentqAgent {
    AgentqConn *conn;
    char **patterns;
    size_t n_patterns;
    AgentqAgent *prev, *next;
};

struct Agentq {
    pthread_mutex_t lock;
    int64_t timeout_ms;
    AgentqResumeFn resume;
    AgentqPokeFn poke;
    void *userdata;
    uint64_t next_id;
    AgentqJob *jobs, *jobs_tail;
    unsigned n_jobs, n_parked, n_agents;
    AgentqAgent *agents;
};

static void agentq_unlock(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}
/* Holds q->lock until the end of the scope. */
#define AGENTQ_LOCKED(q)                                                                           \
    _cleanup_(agentq_unlock) _unused_ pthread_mutex_t *agentq_guard_ = ({                          \
        (void)pthread_mutex_lock(&(q)->lock);                                                      \
        &(q)->lock;                                                                                \
    })

static int64_t mono_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int agentq_new(unsigned timeout_s, AgentqResumeFn resume, AgentqPokeFn poke, void *userdata,
               Agentq **ret) {
    Agentq *q;
    if (!resume || timeout_s == 0)
        return -EINVAL;
    q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    (void)pthread_mutex_init(&q->lock, NULL);
    q->timeout_ms = (int64_t)timeout_s * 1000;
    q->resume = resume;
    q->poke = poke;
    q->userdata = userdata;
    *ret = q;
    return 0;
}

static void agent_free(AgentqAgent *a) {
    for (size_t i = 0; i < a->n_patterns; i++)
        free(a->patterns[i]);
    free(a->patterns);
    free(a);
}

Agentq *agentq_free(Agentq *q) {
    if (!q)
        return NULL;
    while (q->jobs) {
        AgentqJob *j = q->jobs;
        q->jobs = j->next;
        for (AgentqConn *c = j->parked; c; c = c->job_next)
            c->job = NULL;
        free(j);
    }
    while (q->agents) {
        AgentqAgent *a = q->agents;
        q->agents = a->next;
        a->conn->agent = NULL;
        agent_free(a);
    }
    (void)pthread_mutex_destroy(&q->lock);
    free(q);
    return NULL;
}

bool agentq_pattern_valid(const char *p) {
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > VHSM_MAX_PATTERN)
        return false;
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '*')
            return false;
    return true;
}

bool agentq_pattern_match(const char *p, const char *key) {
    size_t n = strlen(p);
    if (n > 0 && p[n - 1] == '*')
        return strncmp(p, key, n - 1) == 0;
    return strcmp(p, key) == 0;
}

static bool agent_serves(const AgentqAgent *a, const char *key) {
    for (size_t i = 0; i < a->n_patterns; i++)
        if (agentq_pattern_match(a->patterns[i], key))
            return true;
    return false;
}

static bool agent_waiting(const AgentqAgent *a) {
    return a->conn->waiting &&
           (a->conn->state == AGENTQ_PARKING || a->conn->state == AGENTQ_PARKED);
}

/* Sets c's outcome and hands it back: a parked connection is resumed, a parking one is found
 * READY by agentq_commit(). */
static void conn_wake(Agentq *q, AgentqConn *c, int outcome, const char *msg) {
    AgentqState was = c->state;
    if (was != AGENTQ_PARKING && was != AGENTQ_PARKED)
        return;
    c->outcome = outcome;
    (void)snprintf(c->message, sizeof c->message, "%s", msg ? msg : "");
    c->state = AGENTQ_READY;
    if (was == AGENTQ_PARKED)
        q->resume(q->userdata, c->conn);
}

static void job_detach(Agentq *q, AgentqJob *j, AgentqConn *c) {
    if (c->job_prev)
        c->job_prev->job_next = c->job_next;
    else
        j->parked = c->job_next;
    if (c->job_next)
        c->job_next->job_prev = c->job_prev;
    c->job_prev = c->job_next = NULL;
    c->job = NULL;
    j->n_parked--;
    q->n_parked--;
}

/* Every request parked on j gets outcome (0: run again) with msg. */
static void job_wake_all(Agentq *q, AgentqJob *j, int outcome, const char *msg) {
    while (j->parked) {
        AgentqConn *c = j->parked;
        job_detach(q, j, c);
        conn_wake(q, c, outcome, msg);
    }
}

static const char *job_reason(const AgentqJob *j) {
    return j->stale ? "stale" : "missing";
}

/* Ends j: wakes its requests, logs one line, frees it. */
static void job_finish(Agentq *q, AgentqJob *j, int outcome, const char *msg, const char *result) {
    int64_t ms = mono_ms() - j->created;
    (void)log_uid_full_errno(LOG_INFO, 0, j->uid,
                             "Agent job %" PRIu64
                             " for key '%s' (%s, %u waiting): %s after %" PRId64 " ms.",
                             j->id, j->key, job_reason(j), j->n_parked, result, ms);
    job_wake_all(q, j, outcome, msg);
    if (j->prev)
        j->prev->next = j->next;
    else
        q->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        q->jobs_tail = j->prev;
    q->n_jobs--;
    free(j);
}

/* Gives j to an agent serving its key other than `except` (one that is waiting first), waking it;
 * false if there is none. */
static bool job_assign(Agentq *q, AgentqJob *j, const AgentqAgent *except) {
    AgentqAgent *pick = NULL;
    for (AgentqAgent *a = q->agents; a; a = a->next) {
        if (a == except || !agent_serves(a, j->key))
            continue;
        if (!pick || (!agent_waiting(pick) && agent_waiting(a)))
            pick = a;
    }
    if (!pick)
        return false;
    j->agent = pick;
    j->delivered = false;
    if (agent_waiting(pick))
        conn_wake(q, pick->conn, 0, NULL);
    return true;
}

static unsigned count_uid_parked(Agentq *q, uid_t uid) {
    unsigned n = 0;
    for (AgentqJob *j = q->jobs; j; j = j->next)
        for (AgentqConn *c = j->parked; c; c = c->job_next)
            n += c->uid == uid;
    return n;
}

static unsigned count_uid_jobs(Agentq *q, uid_t uid) {
    unsigned n = 0;
    for (AgentqJob *j = q->jobs; j; j = j->next)
        n += j->uid == uid;
    return n;
}

static int park_locked(Agentq *q, AgentqConn *c, const char *key, int error, char *msg,
                       size_t msg_size) {
    AgentqJob *j;
    bool served = false;

    /* An agent's own requests never wait for an agent (its connection would stop reading). */
    if (c->agent || c->state != AGENTQ_IDLE)
        return 0;
    for (j = q->jobs; j; j = j->next)
        if (streq(j->key, key))
            break;
    if (!j) {
        for (AgentqAgent *a = q->agents; a && !served; a = a->next)
            served = agent_serves(a, key);
        if (!served)
            return 0;
    }
    if (q->n_parked >= AGENTQ_MAX_PARKED - (c->uid != 0 ? AGENTQ_PARKED_ROOT : 0)) {
        /* Other users' activity is not a non-root caller's business: no global count. */
        if (c->uid == 0)
            (void)snprintf(msg, msg_size, "the agent queue is full (%u requests waiting)",
                           q->n_parked);
        else
            (void)snprintf(msg, msg_size,
                           "the agent queue is full (the share of non-root users is in use)");
        return -EBUSY;
    }
    if (c->uid != 0 && count_uid_parked(q, c->uid) >= AGENTQ_MAX_PARKED_UID) {
        (void)snprintf(msg, msg_size,
                       "the agent queue is full for uid %u (%u requests waiting, the most per uid)",
                       (unsigned)c->uid, AGENTQ_MAX_PARKED_UID);
        return -EBUSY;
    }
    if (!j) {
        if (q->n_jobs >= AGENTQ_MAX_PARKED ||
            (c->uid != 0 && count_uid_jobs(q, c->uid) >= AGENTQ_MAX_PARKED_UID)) {
            (void)snprintf(msg, msg_size, "the agent queue is full (too many keys being fetched)");
            return -EBUSY;
        }
        j = calloc(1, sizeof *j);
        if (!j)
            return -ENOMEM;
        j->id = ++q->next_id;
        (void)snprintf(j->key, sizeof j->key, "%s", key);
        j->stale = error == -EKEYEXPIRED;
        j->uid = c->uid;
        j->created = mono_ms();
        j->deadline = j->created + q->timeout_ms;
        j->prev = q->jobs_tail;
        if (q->jobs_tail)
            q->jobs_tail->next = j;
        else
            q->jobs = j;
        q->jobs_tail = j;
        q->n_jobs++;
        (void)job_assign(q, j, NULL); /* an agent serves key: found above */
        if (q->poke)
            q->poke(q->userdata);
    }
    c->job = j;
    c->job_prev = NULL;
    c->job_next = j->parked;
    if (j->parked)
        j->parked->job_prev = c;
    j->parked = c;
    j->n_parked++;
    q->n_parked++;
    c->waiting = false;
    c->state = AGENTQ_PARKING;
    return 1;
}

int agentq_park(Agentq *q, AgentqConn *c, const char *key, int error, char *msg, size_t msg_size) {
    if (error != -ENOKEY && error != -EKEYEXPIRED)
        return 0;
    if (strlen(key) > VHSM_MAX_NAME)
        return 0;
    AGENTQ_LOCKED(q);
    return park_locked(q, c, key, error, msg, msg_size);
}

bool agentq_commit(Agentq *q, AgentqConn *c) {
    AGENTQ_LOCKED(q);
    if (c->state == AGENTQ_PARKING)
        c->state = AGENTQ_PARKED;
    return c->state == AGENTQ_PARKED;
}

int agentq_take_outcome(Agentq *q, AgentqConn *c, char *msg, size_t msg_size) {
    int r;
    AGENTQ_LOCKED(q);
    r = c->state == AGENTQ_READY ? c->outcome : 0;
    if (msg)
        (void)snprintf(msg, msg_size, "%s", c->message);
    c->state = AGENTQ_IDLE;
    c->outcome = 0;
    c->message[0] = 0;
    return r;
}

static int agent_set_patterns(AgentqAgent *a, const char *const *patterns, size_t n) {
    char **p = calloc(n, sizeof *p);
    if (!p)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        p[i] = strdup(patterns[i]);
        if (!p[i]) {
            for (size_t k = 0; k < i; k++)
                free(p[k]);
            free(p);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < a->n_patterns; i++)
        free(a->patterns[i]);
    free(a->patterns);
    a->patterns = p;
    a->n_patterns = n;
    return 0;
}

static int agent_wait_locked(Agentq *q, AgentqConn *c, const char *const *patterns,
                             size_t n_patterns, uint32_t wait_ms, bool resumed,
                             AgentqJobInfo *ret) {
    AgentqAgent *a = c->agent;
    int64_t now = mono_ms();
    int r;

    if (!a) {
        a = calloc(1, sizeof *a);
        if (!a)
            return -ENOMEM;
        a->conn = c;
        a->next = q->agents;
        if (q->agents)
            q->agents->prev = a;
        q->agents = a;
        q->n_agents++;
        c->agent = a;
    }
    if (n_patterns > 0 && !resumed && (r = agent_set_patterns(a, patterns, n_patterns)) < 0)
        return r;
    if (!resumed)
        c->wait_deadline = now + wait_ms;
    c->state = AGENTQ_IDLE;
    c->waiting = false;
    /* A job of this agent not yet handed out, oldest first. */
    for (AgentqJob *j = q->jobs; j; j = j->next)
        if (j->agent == a && !j->delivered) {
            j->delivered = true;
            *ret = (AgentqJobInfo){.id = j->id, .reason = job_reason(j), .parked = j->n_parked};
            (void)snprintf(ret->key, sizeof ret->key, "%s", j->key);
            return 1;
        }
    if (now >= c->wait_deadline)
        return 0;
    c->waiting = true;
    c->state = AGENTQ_PARKING;
    if (q->poke)
        q->poke(q->userdata);
    return 2;
}

int agentq_agent_wait(Agentq *q, AgentqConn *c, const char *const *patterns, size_t n_patterns,
                      uint32_t wait_ms, bool resumed, AgentqJobInfo *ret) {
    AGENTQ_LOCKED(q);
    return agent_wait_locked(q, c, patterns, n_patterns, wait_ms, resumed, ret);
}

int agentq_wait_request_parse(const uint8_t *body, size_t len, AgentqWaitRequest *ret,
                              const char **ret_error) {
    size_t off = 0;
    VhsmTlv t;
    int r;

    ret->n_patterns = 0;
    r = vhsm_body_get_u32(body, len, VHSM_TAG_WAIT_MS, &ret->wait_ms);
    if (r == -ENOENT)
        ret->wait_ms = VHSM_AGENT_WAIT_DEFAULT_MS;
    else if (r < 0) {
        *ret_error = "agent-wait: malformed wait time";
        return -EBADMSG;
    }
    ret->wait_ms = MIN(ret->wait_ms, VHSM_AGENT_WAIT_MAX_MS);
    while ((r = vhsm_tlv_next(body, len, &off, &t)) > 0) {
        char *p;
        if (t.tag != VHSM_TAG_PATTERN)
            continue;
        if (ret->n_patterns == VHSM_MAX_PATTERNS) {
            *ret_error = "agent-wait: more than 256 patterns";
            return -EMSGSIZE;
        }
        if (t.len > VHSM_MAX_PATTERN || memchr(t.value, 0, t.len)) {
            *ret_error = "agent-wait: a pattern is longer than 255 bytes or holds a NUL byte";
            return -EINVAL;
        }
        p = ret->storage[ret->n_patterns];
        memcpy(p, t.value, t.len);
        p[t.len] = 0;
        if (!agentq_pattern_valid(p)) {
            *ret_error = "agent-wait: invalid pattern (a key name, or a prefix ending in '*'; '*' "
                         "only at the end)";
            return -EINVAL;
        }
        ret->patterns[ret->n_patterns++] = p;
    }
    if (r < 0) {
        *ret_error = "agent-wait: malformed body";
        return -EBADMSG;
    }
    return 0;
}

int agentq_done_request_parse(const uint8_t *body, size_t len, uint64_t *ret_id,
                              uint16_t *ret_status, char *message, const char **ret_error) {
    uint32_t status = 0;
    int r;

    if (vhsm_body_get_u64(body, len, VHSM_TAG_JOB_ID, ret_id) < 0) {
        *ret_error = "agent-done: missing or malformed job id";
        return -EBADMSG;
    }
    r = vhsm_body_get_u32(body, len, VHSM_TAG_STATUS_CODE, &status);
    if (r < 0 && r != -ENOENT) {
        *ret_error = "agent-done: malformed status";
        return -EBADMSG;
    }
    if (status >= _VHSM_STATUS_MAX) {
        *ret_error = "agent-done: unknown status";
        return -EINVAL;
    }
    r = vhsm_body_get_str(body, len, VHSM_TAG_MESSAGE, VHSM_MAX_AGENT_MESSAGE, message,
                          VHSM_MAX_AGENT_MESSAGE + 1);
    if (r == -ENOENT)
        message[0] = 0;
    else if (r == -ENAMETOOLONG) {
        *ret_error = "agent-done: message longer than 1024 bytes";
        return -EMSGSIZE;
    } else if (r < 0) {
        *ret_error = "agent-done: malformed message";
        return -EBADMSG;
    }
    *ret_status = (uint16_t)status;
    return 0;
}

static const char *error_name(int error) {
    return vhsm_status_to_string((uint16_t)vhsm_status_from_errno(error));
}

int agentq_agent_done(Agentq *q, uint64_t id, int error, const char *message) {
    char msg[sizeof((AgentqConn){0}).message], result[64];
    AgentqJob *j;
    AGENTQ_LOCKED(q);
    for (j = q->jobs; j; j = j->next)
        if (j->id == id)
            break;
    if (!j)
        return -ENOKEY;
    if (error == 0) {
        msg[0] = 0;
        (void)snprintf(result, sizeof result, "done");
    } else {
        if (message && *message)
            (void)snprintf(msg, sizeof msg, "key '%s': %s", j->key, message);
        else
            (void)snprintf(msg, sizeof msg, "key '%s': the agent reports %s", j->key,
                           error_name(error));
        (void)snprintf(result, sizeof result, "%s", error_name(error));
    }
    job_finish(q, j, error, msg, result);
    return 0;
}

void agentq_key_event(Agentq *q, const char *key, bool verdict) {
    AGENTQ_LOCKED(q);
    for (AgentqJob *j = q->jobs; j; j = j->next)
        if ((key && streq(j->key, key)) || (verdict && j->stale))
            job_wake_all(q, j, 0, NULL);
}

void agentq_conn_gone(Agentq *q, AgentqConn *c) {
    AgentqAgent *a;
    AGENTQ_LOCKED(q);
    if (c->job)
        job_detach(q, c->job, c);
    c->state = AGENTQ_IDLE;
    c->waiting = false;
    a = c->agent;
    if (a) {
        char msg[sizeof c->message];
        AgentqJob *next;
        for (AgentqJob *j = q->jobs; j; j = next) {
            next = j->next;
            if (j->agent != a || job_assign(q, j, a))
                continue;
            (void)snprintf(msg, sizeof msg,
                           "key '%s': the agent serving it disconnected before providing it",
                           j->key);
            job_finish(q, j, -EHOSTUNREACH, msg, "agent disconnected");
        }
        if (a->prev)
            a->prev->next = a->next;
        else
            q->agents = a->next;
        if (a->next)
            a->next->prev = a->prev;
        q->n_agents--;
        c->agent = NULL;
        agent_free(a);
    }
}

int64_t agentq_tick(Agentq *q, int64_t now, AgentqGoneFn gone) {
    int64_t next = -1;
    AgentqJob *nj;
    char msg[sizeof((AgentqConn){0}).message];
    AGENTQ_LOCKED(q);

    for (AgentqJob *j = q->jobs; j; j = nj) {
        nj = j->next;
        if (now >= j->deadline) {
            (void)snprintf(msg, sizeof msg,
                           "key '%s': the agent did not provide it within %" PRId64 " s", j->key,
                           q->timeout_ms / 1000);
            job_finish(q, j, -ETIMEDOUT, msg, "timeout");
            continue;
        }
        if (gone) {
            AgentqConn *nc;
            for (AgentqConn *c = j->parked; c; c = nc) {
                nc = c->job_next;
                if (c->state == AGENTQ_PARKED && gone(q->userdata, c->conn)) {
                    job_detach(q, j, c);
                    conn_wake(q, c, AGENTQ_DROP, NULL);
                }
            }
        }
        if (next < 0 || j->deadline - now < next)
            next = j->deadline - now;
    }
    for (AgentqAgent *a = q->agents; a; a = a->next) {
        AgentqConn *c = a->conn;
        if (!agent_waiting(a))
            continue;
        if (now >= c->wait_deadline) {
            conn_wake(q, c, 0, NULL);
            continue;
        }
        if (gone && c->state == AGENTQ_PARKED && gone(q->userdata, c->conn)) {
            conn_wake(q, c, AGENTQ_DROP, NULL);
            continue;
        }
        if (next < 0 || c->wait_deadline - now < next)
            next = c->wait_deadline - now;
    }
    return next;
}

void agentq_stats(Agentq *q, AgentqStats *ret) {
    AGENTQ_LOCKED(q);
    *ret = (AgentqStats){.agents = q->n_agents, .jobs = q->n_jobs, .parked = q->n_parked};
}
