/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride agent --config FILE: the daemon beside vhsmd that brings kms/ keys from nitride-kmsd
 * when applications need them (docs/agent.md).
 *
 * Threads:
 *   - the main thread holds one vhsmd connection and long-polls AGENT_WAIT with the configured
 *     key names as patterns; each job it receives is attached to its key's state;
 *   - a pool of workers (at most AGENT_MAX_WORKERS) runs the flows: at most one flow per key at
 *     a time; a job that arrives while its key's flow runs waits for the next flow; each flow
 *     ends with AGENT_DONE for the jobs it served (on a connection of its own);
 *   - a signal thread turns SIGTERM/SIGINT into a clean exit.
 * A flow is `nitride fetch`'s (attest-flow.c, fetch-flow.c): challenge, transfer key in vhsmd,
 * report, token, release from kmsd, IMPORT_RELEASE with the token; or, for a key vhsmd already
 * holds whose attestation is stale or about to be, the attestation and ATTESTATION_SET with the
 * token. Keys with the attested policy are attested again refresh_before_s before their verdict
 * ends (min(token exp, iat + max_age)).
 *
 * The agent never holds a secret in the clear: it handles the token, public keys and the release
 * sealed to vhsmd's transfer key. Process not dumpable, no core files. A flow's error lines are
 * also collected (thread-local log capture) and become AGENT_DONE's message, which vhsmd shows
 * to the waiting applications: kmsd's rule, expected and found for a policy refusal.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "agent-conf.h"
#include "agent.h"
#include "attest-flow.h"
#include "core/log.h"
#include "core/macro.h"
#include "fetch-flow.h"
#include "vhsm/client/vhsm-client.h"

#define AGENT_MAX_WORKERS 8
#define AGENT_WAIT_MS 25000
#define AGENT_MAX_JOBS_PER_KEY 64
#define AGENT_MESSAGE_MAX 1024
#define AGENT_RECONNECT_MAX_MS 5000
#define AGENT_MIN_REFRESH_MS 1000
#define AGENT_STOP_GRACE_MS 3000
/* A key refused by a service's policy (or answered invalid) is not asked for again within this
 * time: its jobs get the last answer, so that a local user looping on a key cannot make the agent
 * hit the services without bound. */
#define AGENT_REFUSED_HOLD_MS 5000

typedef struct JobList {
    uint64_t ids[AGENT_MAX_JOBS_PER_KEY];
    size_t n;
} JobList;

typedef struct KeyState {
    const AgentSecret *s;
    bool running, queued;
    const char *reason; /* of the queued flow: "missing", "stale", "prefetch", "refresh" */
    const char *next_reason;
    JobList jobs;                         /* answered by the queued (or running) flow */
    JobList next_jobs;                    /* came while the flow ran: answered by another flow */
    int64_t refresh_at_ms;                /* CLOCK_MONOTONIC; 0: none */
    int last_exit;                        /* NT_EXIT_* of the last flow, -1 before any */
    int64_t last_end_ms;                  /* when it ended (CLOCK_MONOTONIC) */
    char last_message[AGENT_MESSAGE_MAX]; /* its error lines (failed flows) */
} KeyState;

typedef struct Agent {
    AgentConf conf;
    const char *provider, *sim_dir;
    bool once;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    KeyState *keys;
    size_t n_keys;
    size_t *queue; /* ring of key indexes, each key at most once */
    size_t q_head, q_len;
    unsigned active;
    bool stopping;
} Agent;

static Agent agent = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

/* ---- logging: lines name the key of the thread's flow; error lines are collected ---- */

static _Thread_local const char *log_key;
static _Thread_local char *log_capture; /* AGENT_MESSAGE_MAX bytes, or NULL */

static void agent_log_sink(int level, const char *msg, void *userdata) {
    (void)userdata;
    if (level <= LOG_ERR && log_capture) {
        size_t len = strlen(log_capture);
        if (len + 3 < AGENT_MESSAGE_MAX)
            (void)snprintf(log_capture + len, AGENT_MESSAGE_MAX - len, "%s%s", len ? "; " : "",
                           msg);
    }
    fprintf(stderr, "nitride agent: %s%s%s%s\n", log_key ? "[" : "", log_key ? log_key : "",
            log_key ? "] " : "", msg);
}

static void agent_log_set_capture(char *buf) {
    if (buf)
        buf[0] = '\0';
    log_capture = buf;
}

/* ---- the run queue (agent.lock held) ---- */

static void enqueue(KeyState *k, const char *reason) {
    if (k->queued || k->running)
        return;
    k->queued = true;
    k->reason = reason;
    agent.queue[(agent.q_head + agent.q_len) % agent.n_keys] = (size_t)(k - agent.keys);
    agent.q_len++;
    (void)pthread_cond_broadcast(&agent.cond);
}

static KeyState *dequeue(void) {
    KeyState *k;
    if (agent.q_len == 0)
        return NULL;
    k = &agent.keys[agent.queue[agent.q_head]];
    agent.q_head = (agent.q_head + 1) % agent.n_keys;
    agent.q_len--;
    k->queued = false;
    return k;
}

static KeyState *key_find(const char *name) {
    for (size_t i = 0; i < agent.n_keys; i++)
        if (streq(agent.keys[i].s->key, name))
            return &agent.keys[i];
    return NULL;
}

static bool job_add(JobList *l, uint64_t id) {
    if (l->n >= AGENT_MAX_JOBS_PER_KEY)
        return false;
    l->ids[l->n++] = id;
    return true;
}

/* ---- vhsmd ---- */

static int vhsm_open(VhsmClient **ret) {
    return vhsm_connect(agent.conf.vhsm_socket, ret);
}

/* AGENT_DONE on a connection of its own; failures are logged (vhsmd then times the job out). */
static void job_done(uint64_t id, int status, const char *message) {
    VhsmClient *c = NULL;
    int r = vhsm_open(&c);
    if (r >= 0) {
        (void)vhsm_set_timeout(c, 10000);
        r = vhsm_agent_done(c, id, status, message && message[0] ? message : NULL);
    }
    if (r < 0)
        log_warning_errno(r, "AGENT_DONE for job %" PRIu64 " failed: %s (%m)", id,
                          vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
    (void)vhsm_disconnect(c);
}

/* The key's description from vhsmd's key list: 1 and *ret_attested / *ret_max_age if vhsmd has
 * the key, 0 if not, < 0 on error. (KEY_LIST, not KEY_INFO: an operation on a missing kms/ key
 * would be parked for this very agent.) */
static int key_lookup(AttestRun *run, const char *name, bool *ret_attested, uint32_t *ret_max_age) {
    _cleanup_free_ char *text = NULL;
    json_auto_t *list = NULL;
    VhsmClient *c = NULL;
    size_t i;
    json_t *k;
    int r;

    r = attest_vhsm(run, &c); /* the flow's connection */
    if (r < 0)
        return r;
    if (run->deadline_ms == 0) /* before attest_run_start() */
        (void)vhsm_set_timeout(c, 10000);
    r = vhsm_key_list(c, &text);
    if (r < 0) {
        attest_vhsm_close(run);
        return r;
    }
    list = json_loads(text, 0, NULL);
    if (!json_is_array(list))
        return -EBADMSG;
    json_array_foreach(list, i, k) {
        const json_t *policy = json_object_get(k, "policy");
        const char *kind = json_string_value(json_object_get(policy, "kind"));
        if (!streq_ptr(json_string_value(json_object_get(k, "name")), name))
            continue;
        *ret_attested = streq_ptr(kind, "attested");
        *ret_max_age = (uint32_t)json_integer_value(json_object_get(policy, "max_age"));
        return 1;
    }
    return 0;
}

/* ATTESTATION_SET with the token. NT_EXIT_OK or an exit code (logged). */
static int set_verdict(AttestRun *run, const char *token) {
    VhsmClient *c = NULL;
    int r = attest_vhsm(run, &c);
    if (r >= 0)
        r = vhsm_attestation_set_token(c, token);
    if (r < 0) {
        attest_vhsm_close(run);
        log_error_errno(r, "vhsmd did not take the attestation verdict: %s (%m)",
                        vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

/* ---- one flow ---- */

static int64_t claim_int(const json_t *claims, const char *name) {
    const json_t *v = json_object_get(claims, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* When to attest again for an attested key: refresh_before_s before min(exp, iat + max_age), at
 * least AGENT_MIN_REFRESH_MS from now, halfway there when the verdict is shorter than the margin.
 */
static int64_t refresh_time(const json_t *claims, uint32_t max_age) {
    int64_t iat = claim_int(claims, "iat"), exp = claim_int(claims, "exp"), now = time(NULL);
    int64_t end = exp, left_ms, at_ms;

    if (max_age > 0 && iat > 0 && (end == 0 || iat + (int64_t)max_age < end))
        end = iat + (int64_t)max_age;
    if (end == 0)
        return 0;
    left_ms = (end - now) * 1000;
    at_ms = left_ms - (int64_t)agent.conf.refresh_before_s * 1000;
    if (at_ms < left_ms / 2)
        at_ms = left_ms / 2;
    return attest_now_ms() + MAX(at_ms, (int64_t)AGENT_MIN_REFRESH_MS);
}

/* The release and import for s. NT_EXIT_OK (also when vhsmd has this version already: the
 * token is then recorded as verdict) or an exit code (logged). */
static int flow_fetch(AttestRun *run, const AgentSecret *s, const char *token) {
    _cleanup_free_ char *release = NULL, *name = NULL, *reply = NULL;
    FetchArgs f = {
        .secret_id = s->secret_id,
        .as_name = s->key,
        .volume_uuid = s->volume_uuid,
        .kms_ca = s->kms.ca,
    };
    int64_t version = 0;
    int r;

    r = attest_check_url(s->kms.url, "kms.url", &f.kms_base);
    if (r != NT_EXIT_OK)
        return r;
    r = fetch_release(run, &f, token, &release, &name, &version);
    free(f.kms_base);
    if (r != NT_EXIT_OK)
        return r;
    if (!fetch_name_matches(s->key, name)) {
        log_error("kmsd released secret '%s' as '%s', not as the configured '%s'; not imported.",
                  s->secret_id, name, s->key);
        return NT_EXIT_INVALID;
    }
    r = fetch_import_release(run, release, token, &reply);
    if (r == -EEXIST || r == -ESTALE) {
        log_info("vhsmd holds %s version %" PRId64 " or newer already; recording the verdict.",
                 name, version);
        return set_verdict(run, token);
    }
    if (r < 0) {
        log_error_errno(r, "vhsmd refused the release: %s (%m)",
                        vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
        return NT_EXIT_IO;
    }
    log_info("imported %s version %" PRId64 ".", name, version);
    return NT_EXIT_OK;
}

/* The flow's steps for s (see the file's comment). The exit code; *ret_refresh_at_ms as
 * key_flow(). */
static int key_flow_steps(AttestRun *run, AttestArgs *a, const AgentSecret *s, const char *reason,
                          int64_t *ret_refresh_at_ms) {
    _cleanup_free_ char *token = NULL;
    json_auto_t *claims = NULL;
    bool present = false, attested = false;
    uint32_t max_age = 0;
    int r;

    if (!streq(reason, "missing")) {
        r = key_lookup(run, s->key, &attested, &max_age);
        if (r < 0) {
            log_error_errno(r, "Failed to list vhsmd's keys: %s (%m)",
                            vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
            return NT_EXIT_IO;
        }
        present = r > 0;
    }
    if (present && !attested)
        return NT_EXIT_OK; /* a local-policy key held already: nothing to do, no network */
    r = attest_run_start(run, a);
    if (r == NT_EXIT_OK)
        r = attest_obtain_token(run, &token, &claims);
    if (r == NT_EXIT_POLICY)
        r = NT_EXIT_REFUSED;
    if (r == NT_EXIT_OK)
        r = present ? set_verdict(run, token) : flow_fetch(run, s, token);
    if (r == NT_EXIT_IO && run->gave_up)
        r = NT_EXIT_UNAVAILABLE;
    if (r != NT_EXIT_OK)
        return r;
    if (!present) {
        int q = key_lookup(run, s->key, &attested, &max_age);
        if (q < 0)
            log_warning_errno(q, "Failed to list vhsmd's keys after the import: %m");
    }
    if (attested)
        *ret_refresh_at_ms = refresh_time(claims, max_age);
    return NT_EXIT_OK;
}

/* Runs the flow for s, its error lines collected in message. Returns the exit code;
 * *ret_refresh_at_ms the next refresh (0: none); whether the deadline ran out on transient
 * failures, and whether the last of them was a timeout. */
static int key_flow(const AgentSecret *s, const char *reason,
                    char message[static AGENT_MESSAGE_MAX], int64_t *ret_refresh_at_ms,
                    bool *ret_gave_up, bool *ret_timed_out) {
    AttestArgs a = {
        .attestd_url = s->attestd.url,
        .ca_file = s->attestd.ca,
        .vhsm_socket = agent.conf.vhsm_socket,
        .provider = agent.provider,
        .sim_dir = agent.sim_dir,
        .timeout_s = agent.conf.deadline_s,
    };
    AttestRun run = ATTEST_RUN_INIT(&a);
    int64_t t0 = attest_now_ms();
    int r;

    run.backoff = (NtBackoff){.base_ms = agent.conf.initial_ms, .max_ms = agent.conf.max_ms};
    *ret_refresh_at_ms = 0;
    log_key = s->key;
    agent_log_set_capture(message);
    log_info("flow started (%s).", reason);
    r = key_flow_steps(&run, &a, s, reason, ret_refresh_at_ms);
    *ret_gave_up = run.gave_up;
    *ret_timed_out = run.gave_up && strstr(run.last_error, "timed out");
    attest_run_done(&run, &a);
    agent_log_set_capture(NULL);
    if (r == NT_EXIT_OK)
        log_info("flow done in %" PRId64 " ms%s.", attest_now_ms() - t0,
                 *ret_refresh_at_ms ? "; attested again before the verdict ends" : "");
    else
        log_notice("flow failed (exit %d) in %" PRId64 " ms.", r, attest_now_ms() - t0);
    log_key = NULL;
    return r;
}

/* The AGENT_DONE status for a flow's exit code. */
static int done_status(int r, bool timed_out) {
    switch (r) {
    case NT_EXIT_OK:
        return 0;
    case NT_EXIT_REFUSED:
    case NT_EXIT_POLICY:
        return -EREMOTEIO;
    case NT_EXIT_UNAVAILABLE:
        return timed_out ? -ETIMEDOUT : -EHOSTUNREACH;
    case NT_EXIT_NO_PROVIDER:
        return -EIO;
    default: /* invalid answers, TLS failures: the service is not usable as configured */
        return -EHOSTUNREACH;
    }
}

/* ---- workers ---- */

/* The key whose refresh is due, or NULL with *ret_wait_ms until the next one (-1: none). */
static KeyState *due_refresh(int64_t *ret_wait_ms) {
    int64_t now = attest_now_ms(), next = -1;
    for (size_t i = 0; i < agent.n_keys; i++) {
        KeyState *k = &agent.keys[i];
        if (k->refresh_at_ms == 0 || k->running || k->queued)
            continue;
        if (k->refresh_at_ms <= now)
            return k;
        if (next < 0 || k->refresh_at_ms - now < next)
            next = k->refresh_at_ms - now;
    }
    *ret_wait_ms = next;
    return NULL;
}

static void cond_wait_ms(int64_t ms) {
    struct timespec ts;
    if (ms < 0) {
        (void)pthread_cond_wait(&agent.cond, &agent.lock);
        return;
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    (void)pthread_cond_timedwait(&agent.cond, &agent.lock, &ts);
}

static void *worker_main(void *userdata) {
    char message[AGENT_MESSAGE_MAX];
    (void)userdata;

    (void)pthread_mutex_lock(&agent.lock);
    while (!agent.stopping) {
        const char *reason;
        int64_t wait_ms = -1, refresh_at = 0;
        bool gave_up = false, timed_out = false;
        JobList jobs;
        KeyState *k;
        int r;

        k = dequeue();
        if (k)
            reason = k->reason;
        else if (!agent.once && (k = due_refresh(&wait_ms))) {
            reason = "refresh";
            k->refresh_at_ms = 0;
        } else {
            if (agent.once && agent.q_len == 0 && agent.active == 0)
                break;
            cond_wait_ms(wait_ms);
            continue;
        }
        k->running = true;
        jobs = k->jobs;
        k->jobs.n = 0;
        agent.active++;
        (void)pthread_mutex_unlock(&agent.lock);

        r = key_flow(k->s, reason, message, &refresh_at, &gave_up, &timed_out);
        for (size_t i = 0; i < jobs.n; i++)
            job_done(jobs.ids[i], done_status(r, timed_out), r == NT_EXIT_OK ? NULL : message);

        (void)pthread_mutex_lock(&agent.lock);
        agent.active--;
        k->running = false;
        k->last_exit = r;
        k->last_end_ms = attest_now_ms();
        (void)snprintf(k->last_message, sizeof k->last_message, "%s",
                       r == NT_EXIT_OK ? "" : message);
        if (r == NT_EXIT_OK)
            k->refresh_at_ms = refresh_at;
        else if (streq(reason, "refresh") && gave_up)
            /* The services are down: try again while the verdict may still hold. */
            k->refresh_at_ms = attest_now_ms() + (int64_t)agent.conf.max_ms;
        if (k->next_jobs.n > 0) {
            k->jobs = k->next_jobs;
            k->next_jobs.n = 0;
            enqueue(k, k->next_reason ? k->next_reason : "missing");
        }
        (void)pthread_cond_broadcast(&agent.cond);
    }
    (void)pthread_cond_broadcast(&agent.cond);
    (void)pthread_mutex_unlock(&agent.lock);
    return NULL;
}

/* A job from AGENT_WAIT. */
static void job_received(const VhsmAgentJob *job) {
    const char *reason = streq(job->reason, "stale") ? "stale" : "missing";
    char held[AGENT_MESSAGE_MAX] = "";
    int held_status = 0;
    KeyState *k;
    bool ok = false;

    (void)pthread_mutex_lock(&agent.lock);
    k = key_find(job->key);
    if (k && !k->running && !k->queued &&
        (k->last_exit == NT_EXIT_REFUSED || k->last_exit == NT_EXIT_POLICY ||
         k->last_exit == NT_EXIT_INVALID) &&
        attest_now_ms() - k->last_end_ms < AGENT_REFUSED_HOLD_MS) {
        held_status = done_status(k->last_exit, false);
        (void)snprintf(
            held, sizeof held,
            "%.900s (the agent's attempt of %" PRId64 " ms ago; not asked again within %d s)",
            k->last_message, attest_now_ms() - k->last_end_ms, AGENT_REFUSED_HOLD_MS / 1000);
    } else if (k && k->running) {
        ok = job_add(&k->next_jobs, job->id);
        k->next_reason = reason;
    } else if (k) {
        ok = job_add(&k->jobs, job->id);
        if (ok)
            enqueue(k, reason);
    }
    (void)pthread_mutex_unlock(&agent.lock);
    if (held_status != 0) {
        log_info("job %" PRIu64 ": %s refused moments ago; answered without asking again.", job->id,
                 job->key);
        job_done(job->id, held_status, held);
    } else if (!k) {
        log_warning("vhsmd asked for '%.255s', which this agent does not serve.", job->key);
        job_done(job->id, -ENOKEY, "the nitride agent has no secret configured for this key");
    } else if (!ok) {
        log_warning("Too many jobs for %s at once; answering job %" PRIu64 " as unavailable.",
                    job->key, job->id);
        job_done(job->id, -EHOSTUNREACH, "the nitride agent has too many jobs for this key");
    } else
        log_info("job %" PRIu64 ": %s %s (%" PRIu32 " request%s parked).", job->id, job->key,
                 job->reason, job->parked, job->parked == 1 ? "" : "s");
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The long-poll loop; returns only on an unrecoverable error (the stop is the signal thread's). */
static int wait_loop(void) {
    _cleanup_free_ const char **patterns = calloc(agent.n_keys, sizeof *patterns);
    NtBackoff backoff = {.base_ms = 100, .max_ms = AGENT_RECONNECT_MAX_MS};
    VhsmClient *c = NULL;
    bool warned = false, serving = false;
    int r;

    if (!patterns)
        return log_oom();
    for (size_t i = 0; i < agent.n_keys; i++)
        patterns[i] = agent.keys[i].s->key;
    for (;;) {
        VhsmAgentJob job = {};
        if (!c) {
            r = vhsm_open(&c);
            if (r < 0) {
                if (!warned)
                    log_warning_errno(r, "Cannot connect to vhsmd (%s): %m; retrying.",
                                      agent.conf.vhsm_socket ? agent.conf.vhsm_socket
                                                             : "default socket");
                warned = true;
                sleep_ms(nt_backoff_next(&backoff, -1));
                continue;
            }
        }
        /* The first wait on a connection is short: its answer tells that vhsmd took the
         * patterns (the connection stays an agent between waits), which is logged. */
        r = vhsm_agent_wait(c, patterns, agent.n_keys, serving ? AGENT_WAIT_MS : 1, &job);
        if (r >= 0) {
            nt_backoff_reset(&backoff);
            if (!serving)
                log_info("Serving %zu key%s for vhsmd (%s).", agent.n_keys,
                         agent.n_keys == 1 ? "" : "s",
                         agent.conf.vhsm_socket ? agent.conf.vhsm_socket : "default socket");
            serving = true;
            warned = false;
        }
        if (r == 1) {
            job.key[sizeof job.key - 1] = '\0';
            job.reason[sizeof job.reason - 1] = '\0';
            job_received(&job);
        } else if (r < 0) {
            if (warned)
                ; /* said once until it works again */
            else if (r == -EOPNOTSUPP || r == -EPERM || r == -EACCES || r == -EBADRQC)
                log_error_errno(r, "vhsmd refused AGENT_WAIT: %s (%m); retrying.",
                                vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
            else
                log_warning_errno(r, "AGENT_WAIT failed: %s (%m); reconnecting.",
                                  vhsm_last_error()[0] ? vhsm_last_error() : "no detail");
            warned = true;
            serving = false;
            c = vhsm_disconnect(c);
            sleep_ms(nt_backoff_next(&backoff, -1));
        }
    }
}

/* ---- signals ---- */

static void *signal_main(void *userdata) {
    sigset_t *set = userdata;
    int sig = 0;
    int64_t end;

    while (sigwait(set, &sig) != 0)
        ;
    log_info("Stopping (%s).", strsignal(sig));
    (void)pthread_mutex_lock(&agent.lock);
    agent.stopping = true;
    (void)pthread_cond_broadcast(&agent.cond);
    /* Flows in progress get a moment to finish; vhsmd answers the jobs of an agent that goes
     * away ("agent disconnected") or hands them to another agent. */
    end = attest_now_ms() + AGENT_STOP_GRACE_MS;
    while (agent.active > 0 && attest_now_ms() < end)
        cond_wait_ms(end - attest_now_ms());
    (void)pthread_mutex_unlock(&agent.lock);
    (void)fflush(stdout);
    (void)fflush(stderr);
    /* The main thread may be blocked in AGENT_WAIT: end without unwinding the other threads
     * (nothing to save; the process holds no secret). */
    _exit(agent.active > 0 ? NT_EXIT_IO : NT_EXIT_OK);
}

/* ---- command ---- */

static void help(FILE *f) {
    fprintf(
        f, "Usage: nitride agent --config FILE [OPTIONS]\n"
           "Bring kms/ keys from nitride-kmsd into vhsmd when applications need them.\n\n"
           "  --config FILE         the configuration (docs/agent.md)\n"
           "  --vhsm-socket PATH    vhsmd's socket (overrides \"vhsm_socket\")\n"
           "  --once                fetch the prefetch keys, then exit with their status\n"
           "  --check               check the configuration and exit\n"
           "  --provider P          evidence provider: auto, sev-guest, tsm or sim (default auto)\n"
           "  --sim DIR             the simulated chip in DIR (implies --provider sim)\n\n"
           "Exit codes: 0 done (--once: every key fetched), 3 usage or configuration error,\n"
           "4 local error, 5 no evidence provider, 13 a key refused by a service's policy,\n"
           "14 a service unavailable within the deadline.\n");
}

/* --once: the exit code of the worst result, refusals first. */
static int once_status(void) {
    int worst = NT_EXIT_OK;
    for (size_t i = 0; i < agent.n_keys; i++) {
        int r = agent.keys[i].last_exit;
        if (r < 0 || r == NT_EXIT_OK)
            continue;
        if (r == NT_EXIT_REFUSED || worst == NT_EXIT_OK ||
            (r == NT_EXIT_UNAVAILABLE && worst != NT_EXIT_REFUSED))
            worst = r;
    }
    return worst;
}

/* Checks the URLs and CA files of the configuration (before any thread starts). */
static int check_services(void) {
    for (size_t i = 0; i < agent.conf.n_secrets; i++) {
        const AgentSecret *s = &agent.conf.secrets[i];
        const AgentService *svc[] = {&s->attestd, &s->kms};
        for (size_t j = 0; j < ELEMENTSOF(svc); j++) {
            _cleanup_free_ char *base = NULL;
            int r = attest_check_url(svc[j]->url, j == 0 ? "attestd.url" : "kms.url", &base);
            if (r != NT_EXIT_OK)
                return r;
            if (svc[j]->ca && access(svc[j]->ca, R_OK) < 0) {
                log_error("secrets[%zu] (%s): cannot read the CA file '%s': %m", i, s->key,
                          svc[j]->ca);
                return NT_EXIT_USAGE;
            }
        }
    }
    return NT_EXIT_OK;
}

int cmd_agent(int argc, char **argv) {
    enum {
        ARG_CONFIG = 0x100,
        ARG_VHSM_SOCKET,
        ARG_ONCE,
        ARG_CHECK,
        ARG_PROVIDER,
        ARG_SIM,
    };
    static const struct option options[] = {
        {"config", required_argument, NULL, ARG_CONFIG},
        {"vhsm-socket", required_argument, NULL, ARG_VHSM_SOCKET},
        {"socket", required_argument, NULL, ARG_VHSM_SOCKET},
        {"once", no_argument, NULL, ARG_ONCE},
        {"check", no_argument, NULL, ARG_CHECK},
        {"provider", required_argument, NULL, ARG_PROVIDER},
        {"sim", required_argument, NULL, ARG_SIM},
        {"sim-dir", required_argument, NULL, ARG_SIM},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    const char *config = NULL, *socket_path = NULL;
    pthread_t workers[AGENT_MAX_WORKERS], sig_thread;
    size_t n_workers = 0;
    struct rlimit no_core = {0, 0};
    char err[512] = "";
    sigset_t set;
    bool check = false;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        switch (c) {
        case ARG_CONFIG:
            config = optarg;
            break;
        case ARG_VHSM_SOCKET:
            if (!attest_text_option_ok("--vhsm-socket", optarg, 107))
                return NT_EXIT_USAGE;
            socket_path = optarg;
            break;
        case ARG_ONCE:
            agent.once = true;
            break;
        case ARG_CHECK:
            check = true;
            break;
        case ARG_PROVIDER:
            if (!streq(optarg, "auto") && !streq(optarg, "sev-guest") && !streq(optarg, "tsm") &&
                !streq(optarg, "sim")) {
                log_error("Unknown provider '%s' (expected auto, sev-guest, tsm or sim).", optarg);
                return NT_EXIT_USAGE;
            }
            agent.provider = streq(optarg, "auto") ? NULL : optarg;
            break;
        case ARG_SIM:
            agent.sim_dir = optarg;
            break;
        case 'h':
            help(stdout);
            return NT_EXIT_OK;
        default:
            help(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (!config) {
        log_error("'nitride agent' needs --config FILE.");
        return NT_EXIT_USAGE;
    }
    if (agent.sim_dir) {
        if (agent.provider && !streq(agent.provider, "sim")) {
            log_error("--sim only applies to --provider sim.");
            return NT_EXIT_USAGE;
        }
        agent.provider = "sim";
    }
    r = agent_conf_load(config, &agent.conf, err);
    if (r == -ENOMEM)
        return log_oom(), NT_EXIT_IO;
    if (r < 0) {
        log_error("Invalid configuration '%s': %s.", config, err);
        return NT_EXIT_USAGE;
    }
    if (socket_path) {
        free(agent.conf.vhsm_socket);
        agent.conf.vhsm_socket = strdup(socket_path);
        if (!agent.conf.vhsm_socket)
            return log_oom(), NT_EXIT_IO;
    }
    r = check_services();
    if (r != NT_EXIT_OK || check) {
        if (r == NT_EXIT_OK)
            printf("%s: %zu secret%s configured.\n", config, agent.conf.n_secrets,
                   agent.conf.n_secrets == 1 ? "" : "s");
        agent_conf_clear(&agent.conf);
        return r;
    }

    /* No core file, no ptrace by other users, no /proc/PID/mem for them: tokens are not
     * secrets, but nothing in this process needs to be readable. */
    (void)setrlimit(RLIMIT_CORE, &no_core);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        log_warning("Failed to make the process non-dumpable: %m");
    log_set_sink(agent_log_sink, NULL);

    agent.n_keys = agent.conf.n_secrets;
    agent.keys = calloc(agent.n_keys, sizeof *agent.keys);
    agent.queue = calloc(agent.n_keys, sizeof *agent.queue);
    if (!agent.keys || !agent.queue)
        return log_oom(), NT_EXIT_IO;
    for (size_t i = 0; i < agent.n_keys; i++) {
        agent.keys[i].s = &agent.conf.secrets[i];
        agent.keys[i].last_exit = -1;
    }
    {
        pthread_condattr_t ca;
        (void)pthread_condattr_init(&ca);
        (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        (void)pthread_cond_init(&agent.cond, &ca);
        (void)pthread_condattr_destroy(&ca);
    }

    (void)sigemptyset(&set);
    (void)sigaddset(&set, SIGTERM);
    (void)sigaddset(&set, SIGINT);
    (void)pthread_sigmask(SIG_BLOCK, &set, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&sig_thread, NULL, signal_main, &set) != 0) {
        log_error("Failed to start the signal thread.");
        return NT_EXIT_IO;
    }

    (void)pthread_mutex_lock(&agent.lock);
    for (size_t i = 0; i < agent.n_keys; i++)
        if (agent.keys[i].s->prefetch)
            enqueue(&agent.keys[i], "prefetch");
    if (agent.once && agent.q_len == 0) /* --once without prefetch keys: all of them */
        for (size_t i = 0; i < agent.n_keys; i++)
            enqueue(&agent.keys[i], "prefetch");
    (void)pthread_mutex_unlock(&agent.lock);

    for (size_t i = 0; i < MIN(agent.n_keys, (size_t)AGENT_MAX_WORKERS); i++) {
        if (pthread_create(&workers[n_workers], NULL, worker_main, NULL) != 0) {
            log_error("Failed to start a worker thread.");
            break;
        }
        n_workers++;
    }
    if (n_workers == 0)
        return NT_EXIT_IO;
    log_info("Started: %zu key%s, %zu worker%s%s.", agent.n_keys, agent.n_keys == 1 ? "" : "s",
             n_workers, n_workers == 1 ? "" : "s", agent.once ? ", --once" : "");

    if (agent.once) {
        for (size_t i = 0; i < n_workers; i++)
            (void)pthread_join(workers[i], NULL);
        r = once_status();
        log_info("--once: done, exit %d.", r);
        (void)fflush(stdout);
        (void)fflush(stderr);
        free(agent.keys);
        free(agent.queue);
        agent_conf_clear(&agent.conf);
        _exit(r); /* the signal thread still waits in sigwait() */
    }
    r = wait_loop();
    (void)fflush(stderr);
    _exit(r < 0 ? NT_EXIT_IO : r);
}
