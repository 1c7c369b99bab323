/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash consistency of the SQLite store: a child process runs a fixed sequence of admin writes
 * (create, create, replace, policy-set, delete, audit, repeated) on a real file and, after each
 * call returned 0, appends the operation's index to an acknowledgement file. The parent kills it
 * with SIGKILL at a random moment (some rounds while it is still opening the store), then
 * reopens the store and checks: PRAGMA integrity_check says ok, no foreign key is dangling,
 * every acknowledged write of every round so far is there with its value, version and policy
 * (only the one operation after the last acknowledgement may or may not have committed), no
 * unacknowledged operation beyond that one is visible, the audit chain verifies against the head
 * and holds exactly one row per committed operation. Repeated for NT_KMSD_CRASH_ROUNDS rounds
 * (default 30); the seed is printed and can be fixed with NT_TEST_SEED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/macro.h"
#include "core/secret.h"
#include "kmsd/store.h"
#include "kmsd-test-util.h"

#define MAX_ROUNDS 200
#define MAX_OPS 100000
#define KEK_BYTE 0x5a

static const char *db_path, *ack_path;
static long last_acked[MAX_ROUNDS]; /* per round: the last acknowledged op index, -1 none */

static void op_id(int round, long i, char id[static 32]) {
    snprintf(id, 32, "r%d-%ld", round, i);
}

/* The value written for (id, version): SHA-256 of "id|version", as an aes256 key. */
static Secret *value_for(const char *id, uint32_t version) {
    char in[64];
    Secret *v = NULL;
    unsigned n = 0;
    int len = snprintf(in, sizeof in, "%s|%u", id, version);
    if (secret_new(32, &v) < 0 ||
        EVP_Digest(in, (size_t)len, secret_data(v), &n, EVP_sha256(), NULL) != 1)
        abort();
    return v;
}

static json_t *policy_for(long x) {
    return json_pack("{s:i,s:{},s:I}", "version", 1, "rules", "x", (json_int_t)x);
}

/* ---- the child ---- */

static int child_op(KmsStore *s, int round, long i) {
    _cleanup_(secret_freep) Secret *v = NULL;
    char id[32];
    long base = i - i % 6;
    int r = -EINVAL;

    switch (i % 6) {
    case 0:
    case 1: {
        op_id(round, i, id);
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make(id, "aes256");
        v = value_for(id, 1);
        r = kms_store_create(s, &m, v, &admin_ev);
        break;
    }
    case 2: {
        uint32_t version = 0;
        op_id(round, base, id);
        v = value_for(id, 2);
        r = kms_store_replace(s, id, v, &admin_ev, &version);
        if (r >= 0 && version != 2)
            r = -EPROTO;
        break;
    }
    case 3: {
        json_auto_t *p = policy_for(i);
        op_id(round, base, id);
        r = kms_store_set_policy(s, id, p, &admin_ev);
        break;
    }
    case 4:
        op_id(round, base, id);
        r = kms_store_delete(s, id, &admin_ev);
        break;
    case 5: {
        KmsAuditEvent e = {.action = "release",
                           .actor = "token:crash",
                           .secret_id = "x",
                           .result = "refused",
                           .rule = "measurement_in"};
        r = kms_store_audit(s, &e);
        break;
    }
    }
    return r;
}

_noreturn_ static void child_run(int round) {
    /* Secrets are wiped in a forked child (MADV_WIPEONFORK): make the KEK again. */
    Secret *kek = kek_fill(KEK_BYTE);
    KmsStore *s = NULL;
    int fd;

    char *err = NULL;
    int r = kms_store_open_sqlite(db_path, kek, &s, &err);
    if (r < 0) {
        fprintf(stderr, "child: %d %s\n", r, err ? err : "");
        _exit(3);
    }
    fd = open(ack_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        _exit(4);
    for (long i = 0; i < MAX_OPS; i++) {
        char line[32];
        int n;
        if (child_op(s, round, i) < 0)
            _exit(5);
        /* Acknowledged only after the call (and so the commit) returned. */
        n = snprintf(line, sizeof line, "%ld\n", i);
        if (write(fd, line, (size_t)n) != n)
            _exit(6);
    }
    _exit(0);
}

/* ---- the parent ---- */

/* Reads the acknowledgements of a round: they must be 0, 1, ..., L (a torn last line is not an
 * acknowledgement). Returns L, or -1 if none. */
static long read_acks(void) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    long expect = 0;
    char *p, *nl;
    int r = read_full_file(ack_path, 64 * 1024 * 1024, &buf, &len);
    if (r == -ENOENT)
        return -1;
    assert_int_equal(r, 0);
    for (p = (char *)buf; (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = 0;
        assert_int_equal(strtol(p, NULL, 10), expect);
        expect++;
    }
    return expect - 1;
}

typedef struct IdState {
    bool exists;
    uint32_t version;
    long policy_x; /* -1: the initial policy */
} IdState;

/* The state of the id created by op i0 once ops 0..upto committed. */
static IdState state_after(long i0, long upto) {
    IdState st = {.exists = upto >= i0, .version = 1, .policy_x = -1};
    if (i0 % 6 == 0) {
        if (upto >= i0 + 2)
            st.version = 2;
        if (upto >= i0 + 3)
            st.policy_x = i0 + 3;
        if (upto >= i0 + 4)
            st.exists = false;
    }
    return st;
}

static IdState state_read(KmsStore *s, const char *id) {
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    _cleanup_(secret_freep) Secret *v = NULL;
    IdState st = {};
    int r = kms_store_get(s, id, &m, &v);
    if (r == -ENOENT)
        return st;
    if (r < 0)
        fail_msg("get %s: %d", id, r);
    st.exists = true;
    st.version = m.version;
    json_t *x = json_object_get(m.policy, "x");
    st.policy_x = x ? (long)json_integer_value(x) : -1;
    /* Every version's value is the one written. */
    for (uint32_t ver = 1; ver <= m.version; ver++) {
        _cleanup_(secret_freep) Secret *want = value_for(id, ver), *got = NULL;
        assert_int_equal(kms_store_get_version(s, id, ver, &got), 0);
        if (!secret_eq(got, want))
            fail_msg("%s version %u: wrong value", id, ver);
    }
    _cleanup_(secret_freep) Secret *latest = value_for(id, m.version);
    assert_true(secret_eq(v, latest));
    return st;
}

static bool state_eq(IdState a, IdState b) {
    if (a.exists != b.exists)
        return false;
    return !a.exists || (a.version == b.version && a.policy_x == b.policy_x);
}

/* Checks one round's ids; returns how many of its ops committed (L+1 or L+2); *ret_uncertain
 * is set when op L+1 writes only an audit row, so whether it committed is not visible here. */
static long check_round(KmsStore *s, int round, bool *ret_uncertain) {
    long L = last_acked[round];
    bool next_committed = false;

    /* Ids created up to L+1, plus L+2 to see that nothing later leaked in. */
    for (long i0 = 0; i0 <= L + 2; i0++) {
        char id[32];
        IdState got, a, b;
        if (i0 % 6 > 1)
            continue;
        op_id(round, i0, id);
        got = state_read(s, id);
        a = state_after(i0, L);
        b = state_after(i0, L + 1);
        if (state_eq(got, b) && !state_eq(a, b))
            next_committed = true;
        else if (!state_eq(got, a))
            fail_msg("round %d (last ack %ld): %s is {%d,v%u,x%ld}, want {%d,v%u,x%ld}", round, L,
                     id, got.exists, got.version, got.policy_x, a.exists, a.version, a.policy_x);
    }
    *ret_uncertain = (L + 1) % 6 == 5;
    return L + 1 + (next_committed ? 1 : 0);
}

static void raw_integrity(void) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void sleep_us(long us) {
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0)
        ;
}

static void test_sigkill_during_writes(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(KEK_BYTE);
    const char *env = getenv("NT_KMSD_CRASH_ROUNDS"), *seed_env = getenv("NT_TEST_SEED");
    int rounds = env ? atoi(env) : 30;
    unsigned seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 10)
                             : (unsigned)time(NULL) ^ (unsigned)getpid();
    long total_acked = 0, total_ops_min = 0, total_ops_max = 0;
    struct timespec t0, t1;

    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = 30;
    printf("# crash test: %d rounds, NT_TEST_SEED=%u\n", rounds, seed);
    srand(seed);
    db_path = strdup(tpath("crash.db"));
    ack_path = strdup(tpath("acks"));
    clock_gettime(CLOCK_MONOTONIC, &t0);

    for (int round = 0; round < rounds; round++) {
        int status = 0;
        pid_t pid;

        (void)unlink(ack_path);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_run(round);
        if (round % 5 == 0) {
            /* While it opens the store, or just after. */
            sleep_us(rand() % 3000);
        } else {
            /* Once it writes, at a random moment. */
            for (int w = 0; w < 5000 && read_acks() < 0; w++)
                sleep_us(1000);
            sleep_us(rand() % 30000);
        }
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fail_msg("round %d: the child ended on its own (status 0x%x)", round, status);
        last_acked[round] = read_acks();
        total_acked += last_acked[round] + 1;

        /* Reopen and check everything so far. */
        {
            _cleanup_(kms_store_freep) KmsStore *s = NULL;
            _cleanup_free_ char *err = NULL;
            char verr[256];
            int64_t seq;
            char head[65];
            int r = kms_store_open_sqlite(db_path, kek, &s, &err);
            if (r < 0)
                fail_msg("round %d: reopen: %d %s", round, r, err ? err : "");
            raw_integrity();
            total_ops_min = total_ops_max = 0;
            for (int k = 0; k <= round; k++) {
                bool uncertain = false;
                long committed = check_round(s, k, &uncertain);
                total_ops_min += committed;
                total_ops_max += committed + (uncertain ? 1 : 0);
            }
            r = store_chain_verify(s, verr);
            if (r < 0)
                fail_msg("round %d: audit chain: %s", round, verr);
            assert_int_equal(kms_store_audit_head(s, &seq, head), 0);
            if (seq < total_ops_min || seq > total_ops_max)
                fail_msg("round %d: %" PRId64 " audit rows for %ld..%ld committed operations",
                         round, seq, total_ops_min, total_ops_max);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("# %ld acknowledged writes over %d kills, all present; %.1f s\n", total_acked, rounds,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    /* The test must have exercised writes, not only kills during open. */
    assert_true(total_acked > rounds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_during_writes),
    };
    secret_set_allow_unlocked(true);
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
