/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsm-tenant-test: hostile local users against a running vhsmd (issue 8). Runs as root and
 * drops to other uids in forked children.
 *
 *   fill SOCKET UID TYPE MAX        as UID, create keys "f<N>" of TYPE until refused or MAX;
 *                                   prints "created N: <status>"; exit 0 iff refused with
 *                                   quota-exceeded
 *   aclburst SOCKET UID VICTIM N    as UID, create N keys with the largest ACL allowed, each
 *                                   naming VICTIM; checks "/" and oversized ACLs are refused
 *   soak SOCKET SECONDS             a victim uid signs and encrypts while four attacker uids mix
 *                                   valid and hostile requests (quota filling, churn, squatting,
 *                                   denied operations on the victim's keys, "/" ACLs, oversized
 *                                   ACLs, listing, connection hoarding) and root keeps creating
 *                                   keys in its own 0/. Fails on any victim or root failure, on any
 *                                   hostile request that succeeds, or on victim latency over the
 *                                   bounds (key use p50 <= NT_SOAK_P50_MS, default 10; p99 <=
 *                                   NT_SOAK_P99_MS, default 300; any op <= NT_SOAK_MAX_MS,
 *                                   default 3000).
 */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/macro.h"
#include "vhsm-client.h"

#define VICTIM_UID 6000u
#define N_ATTACKERS 4
#define ATTACKER_UID0 6101u
#define MAX_SAMPLES 200000

static const char *sock;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void become(uid_t uid) {
    gid_t g = (gid_t)uid;
    if (setgroups(1, &g) < 0 || setresgid(g, g, g) < 0 || setresuid(uid, uid, uid) < 0) {
        perror("drop privileges");
        exit(2);
    }
}

static VhsmClient *connect_or_die(void) {
    VhsmClient *c = NULL;
    int r;
    for (int i = 0; i < 100; i++) {
        if ((r = vhsm_connect(sock, &c)) == 0) {
            (void)vhsm_set_timeout(c, 20000);
            return c;
        }
        usleep(20000);
    }
    fprintf(stderr, "connect: %s\n", strerror(-r));
    exit(2);
}

static bool conn_lost(int r) {
    return r == -EPIPE || r == -ECONNRESET || r == -ETIMEDOUT || r == -ENOTCONN || r == -EPROTO;
}

/* ---- fill ---- */

static int cmd_fill(int argc, char **argv) {
    VhsmClient *c;
    unsigned long max;
    VhsmKeySpec spec = {0};
    int r = 0;
    unsigned long n;
    if (argc != 6)
        return 2;
    sock = argv[2];
    become((uid_t)strtoul(argv[3], NULL, 10));
    spec.type = argv[4];
    max = strtoul(argv[5], NULL, 10);
    c = connect_or_die();
    for (n = 0; n < max; n++) {
        char name[32];
        (void)snprintf(name, sizeof name, "f%lu", n);
        if ((r = vhsm_key_create(c, name, &spec)) < 0)
            break;
    }
    printf("created %lu: %s\n", n, r < 0 ? vhsm_last_error() : "ok");
    (void)vhsm_disconnect(c);
    return r == -EDQUOT ? 0 : 1;
}

/* ---- aclburst ---- */

static int aclburst(VhsmClient *c, uint32_t me, uint32_t victim, unsigned long n);

static int cmd_aclburst(int argc, char **argv) {
    VhsmClient *c;
    uint32_t victim, me;
    unsigned long n;
    int r;
    if (argc != 6)
        return 2;
    sock = argv[2];
    me = (uint32_t)strtoul(argv[3], NULL, 10);
    victim = (uint32_t)strtoul(argv[4], NULL, 10);
    n = strtoul(argv[5], NULL, 10);
    become(me);
    c = connect_or_die();
    r = aclburst(c, me, victim, n);
    (void)vhsm_disconnect(c);
    return r;
}

static int aclburst(VhsmClient *c, uint32_t me, uint32_t victim, unsigned long n) {
    uint32_t gids[58];
    char cgs[4][501];
    const char *cgp[4];
    const char *slash[1] = {"/"};
    VhsmAcl acl = {0};
    VhsmKeySpec spec = {.type = "aes256", .acl = &acl};
    int r;

    /* cgroup "/" (every process) is root's to grant */
    acl = (VhsmAcl){.use_cgroups = slash, .n_use_cgroups = 1};
    if ((r = vhsm_key_create(c, "slash", &spec)) != -EPERM && r != -EACCES) {
        fprintf(stderr, "FAIL: ACL with cgroup \"/\" from uid %u: %d (%s)\n", me, r,
                vhsm_last_error());
        return 1;
    }
    /* 4 cgroups of 500 bytes + 58 gids + 2 uids = 64 entries, 2000 cgroup bytes: the most */
    for (int i = 0; i < 4; i++) {
        memset(cgs[i], 'b', 500);
        cgs[i][0] = '/';
        cgs[i][1] = (char)('a' + i);
        cgs[i][500] = 0;
        cgp[i] = cgs[i];
    }
    for (int i = 0; i < 58; i++)
        gids[i] = 7000u + (uint32_t)i;
    acl = (VhsmAcl){.use_uids = &victim,
                    .n_use_uids = 1,
                    .use_gids = gids,
                    .n_use_gids = 58,
                    .use_cgroups = cgp,
                    .n_use_cgroups = 4,
                    .admin_uids = &me,
                    .n_admin_uids = 1};
    {
        uint32_t more[2] = {victim, 1};
        VhsmAcl over = acl;
        VhsmKeySpec ospec = {.type = "aes256", .acl = &over};
        over.use_uids = more;
        over.n_use_uids = 2; /* 65 entries */
        r = vhsm_key_create(c, "over", &ospec);
        if (r != -EMSGSIZE && r != -E2BIG) {
            fprintf(stderr, "FAIL: oversized ACL from uid %u: %d (%s)\n", me, r, vhsm_last_error());
            return 1;
        }
    }
    for (unsigned long i = 0; i < n; i++) {
        char name[32];
        (void)snprintf(name, sizeof name, "burst%04lu", i);
        if ((r = vhsm_key_create(c, name, &spec)) < 0) {
            printf("burst stopped after %lu keys: %s\n", i, vhsm_last_error());
            return r == -EDQUOT ? 0 : 1;
        }
    }
    printf("burst: %lu keys\n", n);
    return 0;
}

/* ---- soak ---- */

typedef struct Shared {
    atomic_long victim_ops, victim_fail, root_ops, root_fail, hostile, hostile_breach;
    atomic_int n_samples, n_admin;
    float samples[MAX_SAMPLES]; /* the victim's key uses: sign, encrypt + decrypt */
    float admin[MAX_SAMPLES];   /* the victim's create + delete (two durable writes) */
    char breach[256];
} Shared;

static Shared *sh;

static void breach(const char *what, int r) {
    atomic_fetch_add(&sh->hostile_breach, 1);
    (void)snprintf(sh->breach, sizeof sh->breach, "%s: got %d (%s)", what, r, vhsm_last_error());
}

/* A hostile request must be refused with `want` (or the connection closed for abuse). */
static void expect_refused(VhsmClient **c, int r, int want, const char *what) {
    atomic_fetch_add(&sh->hostile, 1);
    if (conn_lost(r)) {
        (void)vhsm_disconnect(*c);
        *c = connect_or_die();
        return;
    }
    /* busy (the key-change gate, for the attacker that never backs off) refuses too */
    if (r != want && !(want == -EPERM && r == -EACCES) && r != -EBUSY)
        breach(what, r);
}

static void attacker(unsigned idx, double deadline) {
    uid_t me = ATTACKER_UID0 + idx;
    VhsmClient *c, *hoard[32] = {0};
    unsigned seed = 1234u + idx, n_created = 0;
    const char *slash[1] = {"/"};
    char victim_sig[64];
    become(me);
    if (idx == 0) /* hostile: no backoff, a busy change is asked again at once */
        (void)setenv("VHSM_BUSY_RETRY_MS", "0", 1);
    c = connect_or_die();
    (void)snprintf(victim_sig, sizeof victim_sig, "%u/sig", VICTIM_UID);
    while (now_ms() < deadline) {
        unsigned op = (unsigned)rand_r(&seed) % 10;
        char name[32];
        int r;
        uint8_t *out = NULL;
        size_t ol = 0;
        switch (op) {
        case 0:
        case 1: { /* fill the quota; churn once it is full */
            static const char *types[] = {"p256", "ed25519", "aes256", "hmac-sha256", "p384"};
            VhsmKeySpec spec = {.type = types[rand_r(&seed) % 5]};
            (void)snprintf(name, sizeof name, "a%u", n_created);
            r = vhsm_key_create(c, name, &spec);
            if (r == 0)
                n_created++;
            else if (r == -EDQUOT && n_created > 0) {
                (void)snprintf(name, sizeof name, "a%u", (unsigned)rand_r(&seed) % n_created);
                (void)vhsm_key_rotate(c, name, NULL);
                (void)vhsm_key_delete(c, name);
            } else if (conn_lost(r)) {
                (void)vhsm_disconnect(c);
                c = connect_or_die();
            }
            break;
        }
        case 2: { /* squat the victim's namespace and kms/ */
            VhsmKeySpec spec = {.type = "aes256"};
            (void)snprintf(name, sizeof name, "%u/enc%u", VICTIM_UID, (unsigned)rand_r(&seed));
            expect_refused(&c, vhsm_key_create(c, name, &spec), -ENOTUNIQ, "create in victim ns");
            expect_refused(&c, vhsm_key_create(c, "kms/luks", &spec), -ENOTUNIQ, "create in kms/");
            break;
        }
        case 3: /* use and administer the victim's keys */
            expect_refused(&c, vhsm_sign(c, victim_sig, NULL, 0, "x", 1, &out, &ol), -EPERM,
                           "sign with the victim's key");
            free(out);
            expect_refused(&c, vhsm_key_delete(c, victim_sig), -EPERM, "delete victim's key");
            break;
        case 4: { /* "/" ACL */
            VhsmAcl acl = {.use_cgroups = slash, .n_use_cgroups = 1};
            VhsmKeySpec spec = {.type = "aes256", .acl = &acl};
            expect_refused(&c, vhsm_key_create(c, "everyone", &spec), -EPERM, "ACL with \"/\"");
            break;
        }
        case 5: { /* list: bounded pages */
            char *j = NULL;
            r = vhsm_key_list_page(c, NULL, 1000, &j);
            free(j);
            if (conn_lost(r)) {
                (void)vhsm_disconnect(c);
                c = connect_or_die();
            }
            break;
        }
        case 6: { /* hoard connections, release them later */
            unsigned i = (unsigned)rand_r(&seed) % ELEMENTSOF(hoard);
            if (hoard[i]) {
                hoard[i] = vhsm_disconnect(hoard[i]);
            } else
                (void)vhsm_connect(sock, &hoard[i]);
            break;
        }
        case 7: { /* garbage: a huge RANDOM, an unknown opcode */
            uint8_t buf[16];
            (void)vhsm_random(c, buf, sizeof buf);
            r = vhsm_call_raw(c, 0x7777, NULL, 0, NULL, NULL);
            if (r == 0)
                breach("unknown opcode", r);
            if (conn_lost(r)) {
                (void)vhsm_disconnect(c);
                c = connect_or_die();
            }
            break;
        }
        default: { /* ordinary use of its own keys */
            if (n_created == 0)
                break;
            (void)snprintf(name, sizeof name, "a%u", (unsigned)rand_r(&seed) % n_created);
            r = vhsm_sign(c, name, NULL, 0, "m", 1, &out, &ol);
            free(out);
            if (conn_lost(r)) {
                (void)vhsm_disconnect(c);
                c = connect_or_die();
            }
        }
        }
    }
    for (size_t i = 0; i < ELEMENTSOF(hoard); i++)
        (void)vhsm_disconnect(hoard[i]);
    (void)vhsm_disconnect(c);
}

static void victim(double deadline) {
    VhsmClient *c;
    VhsmKeySpec sig = {.type = "p256"}, enc = {.type = "aes256"};
    unsigned n = 0;
    become(VICTIM_UID);
    c = connect_or_die();
    while (now_ms() < deadline) {
        double t0 = now_ms();
        uint8_t *s = NULL, *ct = NULL, *pt = NULL;
        size_t sl = 0, cl = 0, pl = 0;
        int r;
        switch (n++ % 4) {
        case 0:
        case 1:
            r = vhsm_sign(c, "sig", NULL, 0, "msg", 3, &s, &sl);
            break;
        case 2:
            r = vhsm_encrypt(c, "enc", NULL, 0, "secret", 6, NULL, 0, &ct, &cl);
            if (r == 0)
                r = vhsm_decrypt(c, "enc", NULL, 0, 0, ct, cl, NULL, 0, &pt, &pl);
            if (r == 0 && (pl != 6 || memcmp(pt, "secret", 6) != 0))
                r = -EBADMSG;
            break;
        default: { /* the victim can still create (and delete) keys */
            char name[32];
            (void)snprintf(name, sizeof name, "tmp%u", n);
            r = vhsm_key_create(c, name, n % 8 == 3 ? &sig : &enc);
            if (r == 0)
                r = vhsm_key_delete(c, name);
        }
        }
        free(s);
        free(ct);
        if (pt)
            vhsm_free_secret(pt, pl);
        if (r < 0) {
            atomic_fetch_add(&sh->victim_fail, 1);
            fprintf(stderr, "victim: op %u failed: %s\n", n % 4, vhsm_last_error());
            if (conn_lost(r)) {
                (void)vhsm_disconnect(c);
                c = connect_or_die();
            }
        }
        atomic_fetch_add(&sh->victim_ops, 1);
        if ((n - 1) % 4 == 3) {
            int i = atomic_fetch_add(&sh->n_admin, 1);
            if (i < MAX_SAMPLES)
                sh->admin[i] = (float)(now_ms() - t0);
        } else {
            int i = atomic_fetch_add(&sh->n_samples, 1);
            if (i < MAX_SAMPLES)
                sh->samples[i] = (float)(now_ms() - t0);
        }
        usleep(2000); /* a service, not a benchmark */
    }
    (void)vhsm_disconnect(c);
}

static void root_agent(double deadline) {
    VhsmClient *c = connect_or_die();
    VhsmKeySpec spec = {.type = "p384"};
    unsigned n = 0;
    while (now_ms() < deadline) {
        char name[32];
        int r;
        (void)snprintf(name, sizeof name, "0/agent%u", n++);
        r = vhsm_key_create(c, name, &spec);
        if (r == 0)
            r = vhsm_key_delete(c, name);
        if (r < 0) {
            atomic_fetch_add(&sh->root_fail, 1);
            fprintf(stderr, "root: %s\n", vhsm_last_error());
        }
        atomic_fetch_add(&sh->root_ops, 1);
        usleep(20000);
    }
    (void)vhsm_disconnect(c);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmd_soak(int argc, char **argv) {
    double secs, deadline;
    pid_t pids[N_ATTACKERS + 2];
    int n, na, fail = 0;
    double base_use, base_admin;
    double p50_max = getenv("NT_SOAK_P50_MS") ? atof(getenv("NT_SOAK_P50_MS")) : 10;
    double p99_max = getenv("NT_SOAK_P99_MS") ? atof(getenv("NT_SOAK_P99_MS")) : 300;
    double max_max = getenv("NT_SOAK_MAX_MS") ? atof(getenv("NT_SOAK_MAX_MS")) : 3000;
    if (argc != 4)
        return 2;
    sock = argv[2];
    secs = atof(argv[3]);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 2;
    { /* the victim's keys, before the attack */
        pid_t p = fork();
        if (p == 0) {
            VhsmClient *c;
            VhsmKeySpec sig = {.type = "p256"}, enc = {.type = "aes256"};
            become(VICTIM_UID);
            c = connect_or_die();
            if (vhsm_key_create(c, "sig", &sig) < 0 || vhsm_key_create(c, "enc", &enc) < 0) {
                fprintf(stderr, "victim set-up: %s\n", vhsm_last_error());
                _exit(1);
            }
            _exit(0);
        }
        if (waitpid(p, &n, 0) < 0 || !WIFEXITED(n) || WEXITSTATUS(n) != 0)
            return 1;
    }
    { /* the reference in the same run: the victim alone for 3 s */
        pid_t p = fork();
        if (p == 0) {
            victim(now_ms() + 3000);
            _exit(0);
        }
        if (waitpid(p, &n, 0) < 0 || !WIFEXITED(n) || WEXITSTATUS(n) != 0)
            return 1;
        n = MIN(atomic_load(&sh->n_samples), MAX_SAMPLES);
        na = MIN(atomic_load(&sh->n_admin), MAX_SAMPLES);
        qsort(sh->samples, (size_t)n, sizeof(float), cmp_float);
        qsort(sh->admin, (size_t)na, sizeof(float), cmp_float);
        base_use = n ? sh->samples[n / 2] : 0;
        base_admin = na ? sh->admin[na / 2] : 0;
        if (atomic_load(&sh->victim_fail)) {
            fprintf(stderr, "FAIL: the victim failed with nobody else around\n");
            return 1;
        }
        atomic_store(&sh->n_samples, 0);
        atomic_store(&sh->n_admin, 0);
        atomic_store(&sh->victim_ops, 0);
    }
    deadline = now_ms() + secs * 1000;
    for (unsigned i = 0; i < N_ATTACKERS + 2; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 2;
        if (pids[i] == 0) {
            if (i < N_ATTACKERS)
                attacker(i, deadline);
            else if (i == N_ATTACKERS)
                victim(deadline);
            else
                root_agent(deadline);
            _exit(0);
        }
    }
    for (unsigned i = 0; i < N_ATTACKERS + 2; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "FAIL: child %u ended abnormally (status 0x%x)\n", i, st);
            fail = 1;
        }
    }
    n = MIN(atomic_load(&sh->n_samples), MAX_SAMPLES);
    na = MIN(atomic_load(&sh->n_admin), MAX_SAMPLES);
    qsort(sh->samples, (size_t)n, sizeof(float), cmp_float);
    qsort(sh->admin, (size_t)na, sizeof(float), cmp_float);
    {
        double p50 = n ? sh->samples[n / 2] : 0, p99 = n ? sh->samples[(n * 99) / 100] : 0,
               mx = n ? sh->samples[n - 1] : 0;
        double a50 = na ? sh->admin[na / 2] : 0, a99 = na ? sh->admin[(na * 99) / 100] : 0,
               amx = na ? sh->admin[na - 1] : 0;
        printf("soak %.0f s: victim %ld ops, %ld failed; key use latency p50 %.2f ms p99 %.2f ms "
               "max %.2f ms; create+delete p50 %.2f ms p99 %.2f ms max %.2f ms; root %ld ops, "
               "%ld failed; attackers %ld hostile requests, %ld succeeded\n",
               secs, atomic_load(&sh->victim_ops), atomic_load(&sh->victim_fail), p50, p99, mx, a50,
               a99, amx, atomic_load(&sh->root_ops), atomic_load(&sh->root_fail),
               atomic_load(&sh->hostile), atomic_load(&sh->hostile_breach));
        printf("soak: the victim alone (same run): key use p50 %.2f ms, create+delete p50 %.2f "
               "ms; under attack / alone: key use p50 x%.1f, create+delete p50 x%.1f\n",
               base_use, base_admin, base_use > 0 ? p50 / base_use : 0,
               base_admin > 0 ? a50 / base_admin : 0);
        if (atomic_load(&sh->victim_fail) || atomic_load(&sh->root_fail) || n < 10) {
            fprintf(stderr, "FAIL: the victim or root saw failures (or made no progress)\n");
            fail = 1;
        }
        if (atomic_load(&sh->hostile_breach)) {
            fprintf(stderr, "FAIL: a hostile request succeeded: %s\n", sh->breach);
            fail = 1;
        }
        if (p50 > p50_max || p99 > p99_max || mx > max_max || amx > max_max) {
            fprintf(stderr,
                    "FAIL: victim latency: key use p50 %.1f ms (bound %.0f), p99 %.1f ms (bound "
                    "%.0f), max %.1f ms, create+delete max %.1f ms (bound %.0f)\n",
                    p50, p50_max, p99, p99_max, mx, amx, max_max);
            fail = 1;
        }
    }
    return fail;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && streq(argv[1], "fill"))
        return cmd_fill(argc, argv);
    if (argc >= 2 && streq(argv[1], "aclburst"))
        return cmd_aclburst(argc, argv);
    if (argc >= 2 && streq(argv[1], "soak"))
        return cmd_soak(argc, argv);
    fprintf(stderr, "usage: vhsm-tenant-test fill|aclburst|soak SOCKET ...\n");
    return 2;
}
