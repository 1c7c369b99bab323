/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsm-agent-test: plays the nitride agent on vhsmd's agent channel through libvhsm, for
 * vhsm-agent.sh. One connection, kept open for the whole run (a job belongs to the connection
 * that received it).
 *
 *   agent SOCK PATTERN OUTFILE GOFILE ACTION [ARG]
 *       registers as an agent serving PATTERN (a first AGENT_WAIT of 1 ms), writes "ready" to
 *       OUTFILE, waits (at most 30 s) for one job and appends "job <json>", waits until GOFILE
 *       exists (at most 30 s), then:
 *         import RELEASE_FILE   IMPORT_RELEASE of the file, then AGENT_DONE 0
 *         attest TOKEN_FILE     ATTESTATION_SET with the token, then AGENT_DONE 0
 *         done                  AGENT_DONE 0 (nothing imported)
 *         refused MSG | unavailable MSG | timeout MSG   AGENT_DONE with that status
 *         disconnect            closes the connection (no AGENT_DONE)
 *         hold                  keeps the connection, no AGENT_DONE, until GOFILE.stop exists
 *       then (except disconnect) one more AGENT_WAIT of 500 ms: "idle" or "job <json>" (a second
 *       job), and AGENT_DONE on the finished id again ("done-again <errno>"). "end" last.
 *   apps SOCK KEY N OUTFILE   N threads, each its own connection, encrypt with KEY at once;
 *       OUTFILE gets one line per thread: "<errno> <message>"
 * Exit status: 0 ran (results in OUTFILE), 2 usage or setup error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/macro.h"
#include "vhsm-client.h"

static const char *sock;

static void out_line(const char *path, const char *fmt, ...) _printf_(2, 3);
static void out_line(const char *path, const char *fmt, ...) {
    FILE *f = fopen(path, "a");
    va_list ap;
    if (!f) {
        perror(path);
        exit(2);
    }
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static bool wait_file(const char *path, int seconds) {
    for (int i = 0; i < seconds * 50; i++) {
        if (access(path, F_OK) == 0)
            return true;
        usleep(20000);
    }
    return false;
}

static char *read_text(const char *path) {
    uint8_t *p = NULL;
    size_t n = 0;
    char *s;
    if (read_full_file(path, 1 << 20, &p, &n) < 0) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    s = malloc(n + 1);
    if (!s)
        exit(2);
    memcpy(s, p, n);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        n--;
    s[n] = 0;
    free(p);
    return s;
}

static void job_line(const char *out, const char *what, const VhsmAgentJob *j) {
    out_line(out, "%s {\"id\":%llu,\"key\":\"%s\",\"reason\":\"%s\",\"parked\":%u}", what,
             (unsigned long long)j->id, j->key, j->reason, j->parked);
}

static int cmd_agent(int argc, char **argv) {
    const char *pattern, *out, *go, *action, *arg;
    const char *pats[1];
    char stop[4096];
    VhsmClient *c = NULL;
    VhsmAgentJob job;
    int r;

    if (argc < 6)
        return 2;
    sock = argv[1];
    pattern = argv[2];
    out = argv[3];
    go = argv[4];
    action = argv[5];
    arg = argc > 6 ? argv[6] : NULL;
    pats[0] = pattern;
    if (vhsm_connect(sock, &c) < 0)
        return 2;
    r = vhsm_agent_wait(c, pats, 1, 1, &job);
    if (r < 0) {
        out_line(out, "wait-failed %d %s", -r, vhsm_last_error());
        return 0;
    }
    out_line(out, "ready");
    for (int i = 0;; i++) {
        r = vhsm_agent_wait(c, NULL, 0, 1000, &job);
        if (r < 0) {
            out_line(out, "wait-failed %d %s", -r, vhsm_last_error());
            return 0;
        }
        if (r == 1)
            break;
        if (i >= 30) {
            out_line(out, "no-job");
            return 0;
        }
    }
    job_line(out, "job", &job);
    if (!wait_file(go, 30)) {
        out_line(out, "no-go");
        return 0;
    }
    if (streq(action, "disconnect")) {
        vhsm_disconnect(c);
        out_line(out, "end");
        return 0;
    }
    if (streq(action, "import") || streq(action, "attest")) {
        char *text = read_text(arg);
        r = streq(action, "import") ? vhsm_import_release(c, text, NULL, NULL)
                                    : vhsm_attestation_set_token(c, text);
        free(text);
        out_line(out, "%s %d %s", action, -r, r < 0 ? vhsm_last_error() : "");
        r = vhsm_agent_done(c, job.id, 0, NULL);
    } else if (streq(action, "done"))
        r = vhsm_agent_done(c, job.id, 0, NULL);
    else if (streq(action, "refused"))
        r = vhsm_agent_done(c, job.id, -EREMOTEIO, arg);
    else if (streq(action, "unavailable"))
        r = vhsm_agent_done(c, job.id, -EHOSTUNREACH, arg);
    else if (streq(action, "timeout"))
        r = vhsm_agent_done(c, job.id, -ETIMEDOUT, arg);
    else if (streq(action, "hold")) {
        (void)snprintf(stop, sizeof stop, "%s.stop", go);
        (void)wait_file(stop, 60);
        r = 0;
    } else
        return 2;
    out_line(out, "done %d %s", -r, r < 0 ? vhsm_last_error() : "");
    r = vhsm_agent_wait(c, NULL, 0, 500, &job);
    if (r == 1)
        job_line(out, "job", &job);
    else
        out_line(out, r == 0 ? "idle" : "wait-failed %d", -r);
    r = vhsm_agent_done(c, job.id, 0, NULL);
    out_line(out, "done-again %d", -r);
    vhsm_disconnect(c);
    out_line(out, "end");
    return 0;
}

typedef struct App {
    pthread_t t;
    const char *key;
    int r;
    char msg[512];
} App;

static pthread_barrier_t start;

static void *app_main(void *userdata) {
    App *a = userdata;
    VhsmClient *c = NULL;
    uint8_t *ct = NULL;
    size_t n = 0;
    a->r = vhsm_connect(sock, &c);
    (void)pthread_barrier_wait(&start);
    if (a->r >= 0)
        a->r = vhsm_encrypt(c, a->key, NULL, 0, "hello", 5, NULL, 0, &ct, &n);
    (void)snprintf(a->msg, sizeof a->msg, "%s", a->r < 0 ? vhsm_last_error() : "ok");
    free(ct);
    vhsm_disconnect(c);
    return NULL;
}

static int cmd_apps(int argc, char **argv) {
    App *apps;
    int n;
    if (argc != 5)
        return 2;
    sock = argv[1];
    n = atoi(argv[3]);
    if (n <= 0 || n > 1000)
        return 2;
    apps = calloc((size_t)n, sizeof *apps);
    if (!apps)
        return 2;
    (void)pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        apps[i].key = argv[2];
        if (pthread_create(&apps[i].t, NULL, app_main, &apps[i]) != 0)
            return 2;
    }
    for (int i = 0; i < n; i++) {
        (void)pthread_join(apps[i].t, NULL);
        out_line(argv[4], "%d %s", -apps[i].r, apps[i].msg);
    }
    free(apps);
    return 0;
}

/* ---- stress: races of parking, AGENT_DONE, timeouts, agent and app disconnects ---- */
static _Atomic int stress_stop;
static _Atomic unsigned stress_jobs, stress_parked_ok, stress_calls;

static unsigned rnd(unsigned *seed, unsigned n) {
    return (unsigned)rand_r(seed) % n;
}

/* An application: encrypt on one of 4 missing keys, hanging up after 5..300 ms (libvhsm's
 * timeout closes the connection), or waiting for the outcome. */
static void *stress_app(void *userdata) {
    unsigned seed = (unsigned)(uintptr_t)userdata;
    while (!stress_stop) {
        VhsmClient *c = NULL;
        char key[32];
        uint8_t *ct = NULL;
        size_t n = 0;
        if (vhsm_connect(sock, &c) < 0) {
            usleep(10000);
            continue;
        }
        (void)vhsm_set_timeout(c, rnd(&seed, 3) == 0 ? 3000 : 5 + rnd(&seed, 300));
        (void)snprintf(key, sizeof key, "kms/stress%u", rnd(&seed, 4));
        if (vhsm_encrypt(c, key, NULL, 0, "x", 1, NULL, 0, &ct, &n) >= 0)
            stress_parked_ok++;
        stress_calls++;
        free(ct);
        vhsm_disconnect(c);
    }
    return NULL;
}

/* An agent: waits for jobs and answers each at random: done, refused, twice, never (the
 * timeout), or by hanging up (the job moves to another agent or fails). */
static void *stress_agent(void *userdata) {
    unsigned seed = (unsigned)(uintptr_t)userdata;
    const char *pat[] = {"kms/stress*"};
    VhsmClient *c = NULL;
    while (!stress_stop) {
        VhsmAgentJob j;
        int r;
        if (!c && vhsm_connect(sock, &c) < 0) {
            usleep(10000);
            continue;
        }
        r = vhsm_agent_wait(c, pat, 1, 1 + rnd(&seed, 100), &j);
        if (r < 0) {
            c = vhsm_disconnect(c);
            continue;
        }
        if (r == 0)
            continue;
        stress_jobs++;
        usleep(rnd(&seed, 30000));
        switch (rnd(&seed, 6)) {
        case 0:
            (void)vhsm_agent_done(c, j.id, 0, NULL);
            break;
        case 1:
            (void)vhsm_agent_done(c, j.id, -EREMOTEIO, "stress refusal");
            break;
        case 2:
            (void)vhsm_agent_done(c, j.id, -EHOSTUNREACH, NULL);
            (void)vhsm_agent_done(c, j.id, 0, NULL);
            break;
        case 3:
            break; /* never: the timeout */
        default:
            c = vhsm_disconnect(c); /* holding the job */
        }
    }
    vhsm_disconnect(c);
    return NULL;
}

/* Completes job ids it did not receive (any root connection may), racing the agents. */
static void *stress_doner(void *userdata) {
    unsigned seed = (unsigned)(uintptr_t)userdata;
    VhsmClient *c = NULL;
    while (!stress_stop) {
        if (!c && vhsm_connect(sock, &c) < 0) {
            usleep(10000);
            continue;
        }
        if (vhsm_agent_done(c, 1 + rnd(&seed, stress_jobs + 8), rnd(&seed, 2) ? 0 : -ETIMEDOUT,
                            NULL) < 0 &&
            vhsm_last_error()[0] == 0)
            c = vhsm_disconnect(c);
        usleep(rnd(&seed, 5000));
    }
    vhsm_disconnect(c);
    return NULL;
}

/*   stress SOCK SECONDS: 24 apps, 3 agents, 1 stray completer for SECONDS; then a ping on a new
 *   connection must work. Prints "stress jobs=N calls=N". */
static int cmd_stress(int argc, char **argv) {
    pthread_t t[28];
    VhsmClient *c = NULL;
    int secs, r;
    if (argc != 3)
        return 2;
    sock = argv[1];
    secs = atoi(argv[2]);
    for (unsigned i = 0; i < 28; i++) {
        void *(*fn)(void *) = i < 24 ? stress_app : i < 27 ? stress_agent : stress_doner;
        if (pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(i * 7919u + 1)) != 0)
            return 2;
    }
    sleep((unsigned)secs);
    stress_stop = 1;
    for (unsigned i = 0; i < 28; i++)
        (void)pthread_join(t[i], NULL);
    r = vhsm_connect(sock, &c);
    if (r >= 0)
        r = vhsm_ping(c);
    vhsm_disconnect(c);
    printf("stress jobs=%u calls=%u ok=%u ping=%d\n", stress_jobs, stress_calls, stress_parked_ok,
           r);
    return r < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && streq(argv[1], "agent"))
        return cmd_agent(argc - 1, argv + 1);
    if (argc >= 2 && streq(argv[1], "apps"))
        return cmd_apps(argc - 1, argv + 1);
    if (argc >= 2 && streq(argv[1], "stress"))
        return cmd_stress(argc - 1, argv + 1);
    fprintf(stderr, "usage: vhsm-agent-test agent|apps ...\n");
    return 2;
}
