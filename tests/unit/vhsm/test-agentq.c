/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the agent channel's queue (src/vhsm/agentq.c) without sockets: pattern matching,
 * one job per key, the hand-over of parked connections (parking / parked / ready, resume called
 * exactly once and only for parked ones), outcomes of AGENT_DONE, key and verdict events, agent
 * disconnect (reassign, else -EHOSTUNREACH), timeouts and waits through agentq_tick, hung-up
 * clients dropped, and the bounds (16 per non-root uid, root's reserve, 256 in all).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vhsm/agentq.h"

#define MAX_CONNS 400

typedef struct Fake {
    AgentqConn aq;
    int resumed; /* resume() calls */
    bool hung_up;
} Fake;

static Fake conns[MAX_CONNS];

static void on_resume(void *userdata, void *conn) {
    Fake *f = conn;
    (void)userdata;
    assert_int_equal(f->aq.state, AGENTQ_READY); /* only ever a parked connection, made ready */
    f->resumed++;
}

static bool on_gone(void *userdata, void *conn) {
    (void)userdata;
    return ((Fake *)conn)->hung_up;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static Agentq *setup(unsigned timeout_s) {
    Agentq *q = NULL;
    memset(conns, 0, sizeof conns);
    for (size_t i = 0; i < MAX_CONNS; i++)
        conns[i].aq.conn = &conns[i];
    assert_int_equal(agentq_new(timeout_s, on_resume, NULL, NULL, &q), 0);
    return q;
}

static Fake *conn(size_t i, uid_t uid) {
    conns[i].aq.uid = uid;
    return &conns[i];
}

/* Makes c an agent serving pattern; its wait returns idle (wait 0 ms). */
static void make_agent(Agentq *q, Fake *c, const char *pattern) {
    const char *p[1] = {pattern};
    AgentqJobInfo j;
    assert_int_equal(agentq_agent_wait(q, &c->aq, p, 1, 0, false, &j), 0);
}

static int park(Agentq *q, Fake *c, const char *key, int error) {
    char msg[256] = "";
    int r = agentq_park(q, &c->aq, key, error, msg, sizeof msg);
    if (r == 1)
        assert_true(agentq_commit(q, &c->aq));
    if (r == -EBUSY)
        assert_non_null(strstr(msg, "agent queue is full"));
    return r;
}

static void test_patterns(void **state) {
    assert_true(agentq_pattern_valid("kms/*"));
    assert_true(agentq_pattern_valid("kms/a/b"));
    assert_true(agentq_pattern_valid("*"));
    assert_false(agentq_pattern_valid(""));
    assert_false(agentq_pattern_valid("kms/*x"));
    assert_false(agentq_pattern_valid("*kms"));
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_false(agentq_pattern_valid(longp));
    assert_true(agentq_pattern_match("kms/*", "kms/db"));
    assert_true(agentq_pattern_match("kms/a/b", "kms/a/b"));
    assert_false(agentq_pattern_match("kms/a/b", "kms/a/bc"));
    assert_false(agentq_pattern_match("kms/a*", "kms/b"));
    assert_true(agentq_pattern_match("*", "0/x"));
    assert_false(agentq_pattern_match("kms/*", "kms"));
}

static void test_no_agent_no_park(void **state) {
    Agentq *q = setup(30);
    Fake *app = conn(1, 1000), *ag = conn(0, 0);
    AgentqStats st;
    assert_int_equal(park(q, app, "kms/db", -ENOKEY), 0);
    make_agent(q, ag, "kms/other");
    assert_int_equal(park(q, app, "kms/db", -ENOKEY), 0);    /* no pattern matches */
    assert_int_equal(park(q, app, "kms/other", -EACCES), 0); /* not a parking error */
    agentq_stats(q, &st);
    assert_int_equal(st.agents, 1);
    assert_int_equal(st.jobs, 0);
    assert_int_equal(st.parked, 0);
    /* the agent's own requests never park */
    assert_int_equal(park(q, ag, "kms/other", -ENOKEY), 0);
    agentq_free(q);
}

/* Many requests on one key: one job, handed to the waiting agent, done -> all run again. */
static void test_one_job_done(void **state) {
    Agentq *q = setup(30);
    Fake *ag = conn(0, 0);
    const char *p[1] = {"kms/*"};
    AgentqJobInfo j;
    AgentqStats st;
    char msg[256];

    make_agent(q, ag, "kms/*");
    /* the agent waits (parking, then parked) */
    assert_int_equal(agentq_agent_wait(q, &ag->aq, p, 1, 10000, false, &j), 2);
    assert_true(agentq_commit(q, &ag->aq));
    for (size_t i = 1; i <= 20; i++)
        assert_int_equal(park(q, conn(i, 1000 + (uid_t)i), "kms/db", -ENOKEY), 1);
    agentq_stats(q, &st);
    assert_int_equal(st.jobs, 1);
    assert_int_equal(st.parked, 20);
    /* the first parked request woke the agent once */
    assert_int_equal(ag->resumed, 1);
    assert_int_equal(agentq_take_outcome(q, &ag->aq, NULL, 0), 0);
    assert_int_equal(agentq_agent_wait(q, &ag->aq, NULL, 0, 0, true, &j), 1);
    assert_string_equal(j.key, "kms/db");
    assert_string_equal(j.reason, "missing");
    assert_int_equal(j.parked, 20);
    /* no second job */
    assert_int_equal(agentq_agent_wait(q, &ag->aq, NULL, 0, 0, false, &j), 0);
    assert_int_equal(agentq_agent_done(q, j.id, 0, NULL), 0);
    for (size_t i = 1; i <= 20; i++) {
        assert_int_equal(conns[i].resumed, 1);
        assert_int_equal(agentq_take_outcome(q, &conns[i].aq, msg, sizeof msg), 0);
        assert_int_equal(conns[i].aq.state, AGENTQ_IDLE);
    }
    assert_int_equal(agentq_agent_done(q, j.id, 0, NULL), -ENOKEY); /* finished */
    agentq_stats(q, &st);
    assert_int_equal(st.jobs, 0);
    assert_int_equal(st.parked, 0);
    agentq_free(q);
}

/* An outcome that arrives while the request is still parking: commit returns false, no resume. */
static void test_outcome_while_parking(void **state) {
    Agentq *q = setup(30);
    Fake *ag = conn(0, 0), *app = conn(1, 1000);
    AgentqJobInfo j;
    char msg[256] = "", m[256];
    make_agent(q, ag, "kms/*");
    assert_int_equal(agentq_park(q, &app->aq, "kms/db", -EKEYEXPIRED, msg, sizeof msg), 1);
    assert_int_equal(agentq_agent_wait(q, &ag->aq, NULL, 0, 0, false, &j), 1);
    assert_string_equal(j.reason, "stale");
    assert_int_equal(agentq_agent_done(q, j.id, -EREMOTEIO, "policy: debug not allowed"), 0);
    assert_false(agentq_commit(q, &app->aq));
    assert_int_equal(app->resumed, 0);
    assert_int_equal(agentq_take_outcome(q, &app->aq, m, sizeof m), -EREMOTEIO);
    assert_non_null(strstr(m, "policy: debug not allowed"));
    assert_non_null(strstr(m, "kms/db"));
    agentq_free(q);
}

static void test_key_event(void **state) {
    Agentq *q = setup(30);
    Fake *ag = conn(0, 0), *a1 = conn(1, 1000), *a2 = conn(2, 1000), *a3 = conn(3, 1000);
    AgentqStats st;
    make_agent(q, ag, "kms/*");
    assert_int_equal(park(q, a1, "kms/x", -ENOKEY), 1);
    assert_int_equal(park(q, a2, "kms/y", -EKEYEXPIRED), 1);
    assert_int_equal(park(q, a3, "kms/z", -ENOKEY), 1);
    agentq_key_event(q, "kms/x", false);
    assert_int_equal(a1->resumed, 1);
    assert_int_equal(a2->resumed + a3->resumed, 0);
    agentq_key_event(q, NULL, true); /* a verdict: stale jobs only */
    assert_int_equal(a2->resumed, 1);
    assert_int_equal(a3->resumed, 0);
    agentq_stats(q, &st);
    assert_int_equal(st.jobs, 3); /* jobs stay until done or timeout */
    assert_int_equal(st.parked, 1);
    agentq_free(q);
}

static void test_agent_gone(void **state) {
    Agentq *q = setup(30);
    Fake *a1 = conn(0, 0), *a2 = conn(1, 0), *app = conn(2, 1000), *app2 = conn(3, 1000);
    AgentqJobInfo j;
    char m[256];
    make_agent(q, a1, "kms/a");
    make_agent(q, a2, "kms/*");
    assert_int_equal(park(q, app, "kms/a", -ENOKEY), 1);
    /* the job went to one of them; take it from whichever holds it */
    Fake *holder = agentq_agent_wait(q, &a1->aq, NULL, 0, 0, false, &j) == 1 ? a1 : a2;
    if (holder == a2)
        assert_int_equal(agentq_agent_wait(q, &a2->aq, NULL, 0, 0, false, &j), 1);
    agentq_conn_gone(q, &holder->aq);
    assert_int_equal(app->resumed, 0); /* moved, not failed */
    Fake *other = holder == a1 ? a2 : a1;
    assert_int_equal(agentq_agent_wait(q, &other->aq, NULL, 0, 0, false, &j), 1);
    assert_string_equal(j.key, "kms/a");
    agentq_conn_gone(q, &other->aq);
    assert_int_equal(app->resumed, 1);
    assert_int_equal(agentq_take_outcome(q, &app->aq, m, sizeof m), -EHOSTUNREACH);
    assert_non_null(strstr(m, "disconnected"));
    /* no agent left: nothing parks */
    assert_int_equal(park(q, app2, "kms/a", -ENOKEY), 0);
    agentq_free(q);
}

static void test_tick_timeout_wait_and_hangup(void **state) {
    Agentq *q = setup(2);
    Fake *ag = conn(0, 0), *a1 = conn(1, 1000), *a2 = conn(2, 1000);
    AgentqJobInfo j;
    char m[256];
    int64_t now = mono_ms();
    make_agent(q, ag, "kms/*");
    assert_int_equal(park(q, a1, "kms/t", -ENOKEY), 1);
    assert_int_equal(park(q, a2, "kms/t", -ENOKEY), 1);
    /* a hung-up client is dropped; the job stays */
    a2->hung_up = true;
    assert_true(agentq_tick(q, now, on_gone) > 0);
    assert_int_equal(a2->resumed, 1);
    assert_int_equal(agentq_take_outcome(q, &a2->aq, NULL, 0), AGENTQ_DROP);
    assert_int_equal(a1->resumed, 0);
    /* the agent's wait ends at its deadline */
    assert_int_equal(agentq_agent_wait(q, &ag->aq, NULL, 0, 0, false, &j), 1); /* the job */
    assert_int_equal(agentq_agent_wait(q, &ag->aq, NULL, 0, 500, false, &j), 2);
    assert_true(agentq_commit(q, &ag->aq));
    (void)agentq_tick(q, now + 600, NULL);
    assert_int_equal(ag->resumed, 1);
    assert_int_equal(agentq_take_outcome(q, &ag->aq, NULL, 0), 0);
    /* the job times out after 2 s */
    (void)agentq_tick(q, now + 2500, NULL);
    assert_int_equal(a1->resumed, 1);
    assert_int_equal(agentq_take_outcome(q, &a1->aq, m, sizeof m), -ETIMEDOUT);
    assert_non_null(strstr(m, "within 2 s"));
    assert_int_equal(agentq_agent_done(q, j.id, 0, NULL), -ENOKEY);
    assert_int_equal(agentq_tick(q, now + 2500, NULL), -1);
    agentq_free(q);
}

static void test_bounds(void **state) {
    Agentq *q = setup(30);
    Fake *ag = conn(0, 0);
    size_t n = 1;
    AgentqStats st;
    make_agent(q, ag, "kms/*");
    /* one uid: 16, then refused; another uid still parks */
    for (int i = 0; i < AGENTQ_MAX_PARKED_UID; i++)
        assert_int_equal(park(q, conn(n++, 5000), "kms/b", -ENOKEY), 1);
    assert_int_equal(park(q, conn(n++, 5000), "kms/b", -ENOKEY), -EBUSY);
    assert_int_equal(park(q, conn(n++, 5000), "kms/c", -ENOKEY), -EBUSY);
    assert_int_equal(park(q, conn(n++, 5001), "kms/b", -ENOKEY), 1);
    /* non-root uids together: up to the total less root's reserve */
    for (uid_t u = 6000; n < MAX_CONNS; u++) {
        int r = 0;
        for (int i = 0; i < AGENTQ_MAX_PARKED_UID && n < MAX_CONNS; i++) {
            char key[32];
            snprintf(key, sizeof key, "kms/k%u", (unsigned)u);
            r = park(q, conn(n++, u), key, -ENOKEY);
            if (r != 1)
                break;
        }
        if (r != 1)
            break;
    }
    agentq_stats(q, &st);
    assert_int_equal(st.parked, AGENTQ_MAX_PARKED - AGENTQ_PARKED_ROOT);
    {
        /* a non-root caller refused is not told how many requests other users have waiting */
        char msg[256] = "", count[16];
        snprintf(count, sizeof count, "%d", AGENTQ_MAX_PARKED - AGENTQ_PARKED_ROOT);
        assert_int_equal(agentq_park(q, &conn(n++, 7777)->aq, "kms/new", -ENOKEY, msg, sizeof msg),
                         -EBUSY);
        assert_non_null(strstr(msg, "agent queue is full"));
        assert_null(strstr(msg, count));
    }
    /* root's requests use the reserve (and no per-uid bound applies to root) */
    for (int i = 0; i < AGENTQ_PARKED_ROOT; i++)
        assert_int_equal(park(q, conn(n++, 0), "kms/root", -ENOKEY), 1);
    assert_int_equal(park(q, conn(n++, 0), "kms/root", -ENOKEY), -EBUSY);
    agentq_stats(q, &st);
    assert_int_equal(st.parked, AGENTQ_MAX_PARKED);
    agentq_free(q);
}

static size_t put_tlv(uint8_t *b, uint16_t tag, const void *v, uint32_t len) {
    b[0] = (uint8_t)(tag >> 8);
    b[1] = (uint8_t)tag;
    b[2] = (uint8_t)(len >> 24);
    b[3] = (uint8_t)(len >> 16);
    b[4] = (uint8_t)(len >> 8);
    b[5] = (uint8_t)len;
    memcpy(b + 6, v, len);
    return 6 + len;
}

static void test_parse_wait(void **state) {
    static AgentqWaitRequest w;
    static uint8_t body[300 * 16];
    const uint8_t ms[4] = {0, 1, 0x86, 0xA0}; /* 100000: capped */
    const char *err = NULL;
    size_t n = 0;

    n += put_tlv(body + n, VHSM_TAG_PATTERN, "kms/*", 5);
    n += put_tlv(body + n, VHSM_TAG_WAIT_MS, ms, 4);
    n += put_tlv(body + n, VHSM_TAG_PATTERN, "kms/a", 5);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), 0);
    assert_int_equal(w.n_patterns, 2);
    assert_string_equal(w.patterns[0], "kms/*");
    assert_string_equal(w.patterns[1], "kms/a");
    assert_int_equal(w.wait_ms, VHSM_AGENT_WAIT_MAX_MS);
    /* no WAIT_MS: the default; no pattern: none */
    assert_int_equal(agentq_wait_request_parse(body, 0, &w, &err), 0);
    assert_int_equal(w.wait_ms, VHSM_AGENT_WAIT_DEFAULT_MS);
    assert_int_equal(w.n_patterns, 0);
    /* '*' inside, NUL, too long, too many, malformed WAIT_MS */
    n = put_tlv(body, VHSM_TAG_PATTERN, "kms/*x", 6);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), -EINVAL);
    assert_non_null(strstr(err, "pattern"));
    n = put_tlv(body, VHSM_TAG_PATTERN, "kms\0x", 5);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), -EINVAL);
    char longp[256];
    memset(longp, 'a', sizeof longp);
    n = put_tlv(body, VHSM_TAG_PATTERN, longp, 256);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), -EINVAL);
    n = 0;
    for (int i = 0; i < 257; i++)
        n += put_tlv(body + n, VHSM_TAG_PATTERN, "kms/x", 5);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), -EMSGSIZE);
    n = put_tlv(body, VHSM_TAG_WAIT_MS, ms, 3);
    assert_int_equal(agentq_wait_request_parse(body, n, &w, &err), -EBADMSG);
}

static void test_parse_done(void **state) {
    uint8_t body[2048];
    const uint8_t id[8] = {0, 0, 0, 0, 0, 0, 0, 7}, st[4] = {0, 0, 0, 19}, bad[4] = {0, 0, 0, 99};
    char msg[VHSM_MAX_AGENT_MESSAGE + 1], longm[1025];
    const char *err = NULL;
    uint16_t status = 1;
    uint64_t jid;
    size_t n = 0;

    n += put_tlv(body + n, VHSM_TAG_JOB_ID, id, 8);
    assert_int_equal(agentq_done_request_parse(body, n, &jid, &status, msg, &err), 0);
    assert_int_equal(jid, 7);
    assert_int_equal(status, 0);
    assert_string_equal(msg, "");
    n += put_tlv(body + n, VHSM_TAG_STATUS_CODE, st, 4);
    n += put_tlv(body + n, VHSM_TAG_MESSAGE, "policy: no", 10);
    assert_int_equal(agentq_done_request_parse(body, n, &jid, &status, msg, &err), 0);
    assert_int_equal(status, VHSM_STATUS_REFUSED);
    assert_string_equal(msg, "policy: no");
    n = put_tlv(body, VHSM_TAG_JOB_ID, id, 8);
    n += put_tlv(body + n, VHSM_TAG_STATUS_CODE, bad, 4);
    assert_int_equal(agentq_done_request_parse(body, n, &jid, &status, msg, &err), -EINVAL);
    memset(longm, 'm', sizeof longm);
    n = put_tlv(body, VHSM_TAG_JOB_ID, id, 8);
    n += put_tlv(body + n, VHSM_TAG_MESSAGE, longm, sizeof longm);
    assert_int_equal(agentq_done_request_parse(body, n, &jid, &status, msg, &err), -EMSGSIZE);
    n = put_tlv(body, VHSM_TAG_JOB_ID, id, 4);
    assert_int_equal(agentq_done_request_parse(body, n, &jid, &status, msg, &err), -EBADMSG);
    assert_int_equal(agentq_done_request_parse(body, 0, &jid, &status, msg, &err), -EBADMSG);
}

/* ---- threads racing: parks, commits, AGENT_DONE (twice, unknown ids), key and verdict events,
 * timeouts and hang-ups through agentq_tick, apps and agents closing (also while parking), on
 * heap connections freed at once (ASan sees any use after agentq_conn_gone). Each parked
 * connection is resumed exactly once, and once every agent is gone none is left waiting. ---- */
typedef struct RFake {
    AgentqConn aq;
    _Atomic int resumed;
    _Atomic bool hung_up;
    bool parked; /* owner's view: committed, waiting for resume */
} RFake;

static _Atomic bool race_stop, race_stop_events, race_bad;

static void race_resume(void *userdata, void *conn) {
    RFake *f = conn;
    (void)userdata;
    if (f->aq.state != AGENTQ_READY || atomic_fetch_add(&f->resumed, 1) != 0)
        race_bad = true; /* resumed twice, or not made ready */
}

static bool race_gone(void *userdata, void *conn) {
    (void)userdata;
    return ((RFake *)conn)->hung_up;
}

static RFake *rfake(uid_t uid) {
    RFake *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->aq.conn = f;
    f->aq.uid = uid;
    return f;
}

static Agentq *race_q;
static const char *const race_keys[] = {"kms/r0", "kms/r1", "kms/r2", "kms/r3", "kms/r4"};

static RFake *race_close(RFake *f) {
    agentq_conn_gone(race_q, &f->aq);
    uid_t uid = f->aq.uid;
    free(f);
    return rfake(uid);
}

typedef struct RApps {
    RFake *c[16];
    unsigned seed;
    uid_t uid;
} RApps;

static void *race_apps(void *userdata) {
    RApps *a = userdata;
    char msg[256];
    for (size_t i = 0; i < 16; i++)
        a->c[i] = rfake(a->uid);
    while (!race_stop)
        for (size_t i = 0; i < 16; i++) {
            RFake *f = a->c[i];
            if (f->parked) {
                if (!atomic_load(&f->resumed)) {
                    if (rand_r(&a->seed) % 200 == 0)
                        f->hung_up = true;
                    continue;
                }
                f->parked = false;
                f->resumed = 0;
                int o = agentq_take_outcome(race_q, &f->aq, msg, sizeof msg);
                if (o == AGENTQ_DROP || f->hung_up || rand_r(&a->seed) % 4 == 0)
                    a->c[i] = race_close(f);
                continue;
            }
            int r = agentq_park(race_q, &f->aq, race_keys[rand_r(&a->seed) % 5],
                                rand_r(&a->seed) % 2 ? -ENOKEY : -EKEYEXPIRED, msg, sizeof msg);
            if (r != 1)
                continue;
            if (rand_r(&a->seed) % 8 == 0) { /* closed while parking (a failed flush) */
                a->c[i] = race_close(f);
                continue;
            }
            if (agentq_commit(race_q, &f->aq))
                f->parked = true;
            else
                (void)agentq_take_outcome(race_q, &f->aq, msg, sizeof msg);
        }
    return NULL;
}

typedef struct RAgent {
    RFake *c;
    unsigned seed;
} RAgent;

static void *race_agent(void *userdata) {
    RAgent *a = userdata;
    const char *pat[] = {"kms/r*"};
    bool resumed = false;
    a->c = rfake(0);
    while (!race_stop) {
        AgentqJobInfo j;
        int r = agentq_agent_wait(race_q, &a->c->aq, pat, 1, rand_r(&a->seed) % 3, resumed, &j);
        resumed = false;
        if (r == 2) {
            if (agentq_commit(race_q, &a->c->aq))
                while (!atomic_load(&a->c->resumed))
                    sched_yield(); /* the tick ends the wait within ms */
            a->c->resumed = 0;
            if (agentq_take_outcome(race_q, &a->c->aq, NULL, 0) == AGENTQ_DROP)
                a->c = race_close(a->c);
            else
                resumed = true;
            continue;
        }
        if (r != 1)
            continue;
        switch (rand_r(&a->seed) % 5) {
        case 0:
            (void)agentq_agent_done(race_q, j.id, 0, NULL);
            break;
        case 1:
            (void)agentq_agent_done(race_q, j.id, -EREMOTEIO, "no");
            (void)agentq_agent_done(race_q, j.id, 0, NULL);
            break;
        case 2:
            break; /* never: the timeout */
        default:
            a->c = race_close(a->c); /* hangs up holding the job */
        }
    }
    return NULL;
}

static void *race_events(void *userdata) {
    unsigned seed = 99;
    (void)userdata;
    while (!race_stop_events) {
        switch (rand_r(&seed) % 3) {
        case 0:
            agentq_key_event(race_q, race_keys[rand_r(&seed) % 5], rand_r(&seed) % 2);
            break;
        case 1:
            (void)agentq_agent_done(race_q, 1 + rand_r(&seed) % 5000, -ETIMEDOUT, NULL);
            break;
        default:
            (void)agentq_tick(race_q, mono_ms(), race_gone);
        }
    }
    return NULL;
}

static void test_race(void **state) {
    pthread_t apps_t[5], agents_t[3], ev;
    RApps apps[5];
    RAgent agents[3];
    AgentqStats st;
    char msg[256];

    race_stop = race_stop_events = race_bad = false;
    assert_int_equal(agentq_new(1, race_resume, NULL, NULL, &race_q), 0);
    for (int i = 0; i < 5; i++) {
        apps[i] = (RApps){.seed = (unsigned)i + 1, .uid = i == 4 ? 0 : 1000 + (uid_t)i};
        assert_int_equal(pthread_create(&apps_t[i], NULL, race_apps, &apps[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        agents[i] = (RAgent){.seed = (unsigned)i + 17};
        assert_int_equal(pthread_create(&agents_t[i], NULL, race_agent, &agents[i]), 0);
    }
    assert_int_equal(pthread_create(&ev, NULL, race_events, NULL), 0);
    usleep(2500 * 1000);
    race_stop = true;
    for (int i = 0; i < 5; i++)
        assert_int_equal(pthread_join(apps_t[i], NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(agents_t[i], NULL), 0); /* the ticks end their waits */
    race_stop_events = true;
    assert_int_equal(pthread_join(ev, NULL), 0);
    assert_false(race_bad);
    /* The agents go: every job fails, every parked request is handed back. */
    for (int i = 0; i < 3; i++)
        agents[i].c = race_close(agents[i].c);
    agentq_stats(race_q, &st);
    assert_int_equal(st.jobs, 0);
    assert_int_equal(st.parked, 0);
    assert_int_equal(st.agents, 0);
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 16; k++) {
            RFake *f = apps[i].c[k];
            if (f->parked) {
                assert_int_equal(atomic_load(&f->resumed), 1);
                (void)agentq_take_outcome(race_q, &f->aq, msg, sizeof msg); /* any outcome */
            }
            agentq_conn_gone(race_q, &f->aq);
            free(f);
        }
    for (int i = 0; i < 3; i++)
        free(agents[i].c);
    assert_false(race_bad);
    race_q = agentq_free(race_q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_no_agent_no_park),
        cmocka_unit_test(test_one_job_done),
        cmocka_unit_test(test_outcome_while_parking),
        cmocka_unit_test(test_key_event),
        cmocka_unit_test(test_agent_gone),
        cmocka_unit_test(test_tick_timeout_wait_and_hangup),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_parse_wait),
        cmocka_unit_test(test_parse_done),
        cmocka_unit_test(test_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
