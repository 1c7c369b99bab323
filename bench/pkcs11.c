/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-pkcs11: a PKCS#11 client that loads any module and measures signatures and AES-GCM
 * through it, synchronously (one call at a time per thread, as applications use PKCS#11).
 *
 *   bench-pkcs11                   libvhsm-pkcs11.so (on a vhsmd started here) next to SoftHSM2
 *                                  (Debian's softhsm2, its own token in a temporary directory)
 *   bench-pkcs11 MODULE [MODULE2]  the given modules (first slot with a token; PIN from
 *                                  $NT_BENCH_PIN if the token needs a login)
 *
 * Operations: ECDSA P-256 sign (CKM_ECDSA over a SHA-256 digest), RSA-2048 sign
 * (CKM_SHA256_RSA_PKCS), Ed25519 sign (CKM_EDDSA, 32-byte message), AES-256-GCM encrypt of
 * 4 KiB (CKM_AES_GCM, 12-byte IV, 16-byte tag), each with 1 and 2 threads (one session per
 * thread). Every measurement is repeated in NT_BENCH_ROUNDS rounds (default 3), the modules
 * measured back to back within a round; ratios are taken within a round and the medians shown.
 * NT_BENCH_SECONDS (default 1) is the time per measurement. NT_BENCH_OPS (a comma-separated
 * subset of ecdsa,rsa,ed25519,gcm) and NT_BENCH_THREADS (1 or 2) select rows, for profiling one
 * operation at a time, and NT_BENCH_NO_PEER=1 skips SoftHSM2 (profiling the vHSM alone); a
 * partial run judges no targets. NT_BENCH_CPU=1 also prints, for the vHSM rows, the CPU time per
 * operation of the client process and of vhsmd (medians), and so what bounds the row.
 * A/B comparisons of daemon settings: NT_BENCH_B="vhsmd arguments" (and/or NT_BENCH_B_VHSMD,
 * another vhsmd binary) starts a second vhsmd with them and measures it in place of SoftHSM2, as a
 * second slot of the same module, within the same rounds (ratio = first / second). A row a module
 * cannot run (its mechanism missing) shows "n/a". Exit status: 0, or 1 when the first module misses
 * a target of issue 12 against the second (>= 2x on ECDSA P-256 and AES-GCM with 2 threads, no row
 * below 1x), 2 on set-up failure.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "snp/sim.h"

#define MAX_ROUNDS 15
#define SOFTHSM_PATH "/usr/lib/softhsm/libsofthsm2.so"

enum { OP_ECDSA, OP_RSA, OP_ED25519, OP_GCM, N_OPS };
static const char *op_keys[N_OPS] = {"ecdsa", "rsa", "ed25519", "gcm"};
static const char *op_names[N_OPS] = {"ECDSA P-256 sign", "RSA-2048 sign", "Ed25519 sign",
                                      "AES-256-GCM 4 KiB encrypt"};

typedef struct Module {
    const char *label;
    const char *path;
    void *dl;
    CK_FUNCTION_LIST *f;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE keep; /* keeps the login alive */
    CK_OBJECT_HANDLE key[N_OPS];
    bool has[N_OPS];
    pid_t daemon; /* the vhsmd serving it, when started here */
} Module;

static char tmpdir[64];
static pid_t vhsmd_pid, vhsmd_b_pid; /* the second: A/B mode (NT_BENCH_B) */
static double seconds = 1.0;

static void die(const char *what, CK_RV rv) {
    fprintf(stderr, "bench-pkcs11: %s failed (CK_RV 0x%lx)\n", what, (unsigned long)rv);
    if (vhsmd_pid > 0) {
        kill(vhsmd_pid, SIGTERM);
        waitpid(vhsmd_pid, NULL, 0);
    }
    if (vhsmd_b_pid > 0) {
        kill(vhsmd_b_pid, SIGTERM);
        waitpid(vhsmd_b_pid, NULL, 0);
    }
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- set-up --------------------------------------------------------------------------------- */

/* Starts a vhsmd on sock with its own state under tmpdir/tag; extra: more arguments (split on
 * spaces) or NULL; bin: the binary. Returns its pid. */
static pid_t start_vhsmd_at(const char *sock, const char *tag, const char *bin, const char *extra) {
    char sim[128], ks[128], anchor[160];
    pid_t pid;
    snprintf(sim, sizeof(sim), "%s/sim%s", tmpdir, tag);
    snprintf(ks, sizeof(ks), "%s/keystore%s", tmpdir, tag);
    snprintf(anchor, sizeof(anchor), "file:%s/keystore%s.anchor", tmpdir, tag);
    SimInitOptions opts = {.product = SNP_PRODUCT_MILAN};
    if (sim_chip_init(sim, &opts) < 0)
        die("sim_chip_init", 0);
    pid = fork();
    if (pid < 0)
        die("fork", 0);
    if (pid == 0) {
        char log[128], *argv[64], *copy = strdup(extra ? extra : "");
        int n = 0;
        snprintf(log, sizeof(log), "%s/vhsmd%s.log", tmpdir, tag);
        if (!copy || !freopen(log, "a", stderr))
            _exit(127);
        const char *fixed[] = {
            "vhsmd",      "--foreground", "--socket",  sock, "--keystore",         ks,
            "--provider", "sim",          "--sim-dir", sim,  "--freshness-anchor", anchor};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(*fixed); i++)
            argv[n++] = (char *)fixed[i];
        const char *spin = getenv("NT_BENCH_SPIN_US");
        if (spin && !extra) {
            argv[n++] = "--spin-us";
            argv[n++] = (char *)spin;
        }
        for (char *save = NULL, *a = strtok_r(copy, " ", &save); a && n < 62;
             a = strtok_r(NULL, " ", &save))
            argv[n++] = a;
        argv[n] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        struct stat st;
        if (stat(sock, &st) == 0)
            return pid;
        usleep(25000);
    }
    die("starting vhsmd", 0);
    return -1;
}

static void module_load(Module *m) {
    m->dl = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
    if (!m->dl) {
        fprintf(stderr, "bench-pkcs11: %s\n", dlerror());
        exit(2);
    }
    CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR) = (void *)dlsym(m->dl, "C_GetFunctionList");
    if (!gfl || gfl(&m->f) != CKR_OK)
        die("C_GetFunctionList", 0);
    CK_C_INITIALIZE_ARGS a = {.flags = CKF_OS_LOCKING_OK};
    CK_RV rv = m->f->C_Initialize(&a);
    if (rv != CKR_OK)
        die("C_Initialize", rv);
}

/* SoftHSM2: initialise a fresh token (SO PIN, user PIN) through PKCS#11 itself. */
static void softhsm_init_token(Module *m) {
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_RV rv = m->f->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK || n == 0)
        die("SoftHSM2 C_GetSlotList", rv);
    CK_UTF8CHAR label[32];
    memset(label, ' ', sizeof(label));
    memcpy(label, "bench", 5);
    if ((rv = m->f->C_InitToken(slots[0], (CK_UTF8CHAR_PTR) "12345678", 8, label)) != CKR_OK)
        die("SoftHSM2 C_InitToken", rv);
    n = 16;
    if ((rv = m->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
        die("C_GetSlotList", rv);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (m->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, label, 32) == 0) {
            m->slot = slots[i];
            CK_SESSION_HANDLE s;
            if ((rv = m->f->C_OpenSession(m->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                          &s)) != CKR_OK ||
                (rv = m->f->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR) "12345678", 8)) != CKR_OK ||
                (rv = m->f->C_InitPIN(s, (CK_UTF8CHAR_PTR) "123456", 6)) != CKR_OK ||
                (rv = m->f->C_Logout(s)) != CKR_OK || (rv = m->f->C_CloseSession(s)) != CKR_OK)
                die("SoftHSM2 token set-up", rv);
            return;
        }
    }
    die("SoftHSM2: the initialised token", 0);
}

static void module_open(Module *m, bool first_slot) {
    CK_RV rv;
    if (first_slot) {
        CK_SLOT_ID slots[16];
        CK_ULONG n = 16;
        if ((rv = m->f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK || n == 0)
            die("C_GetSlotList (a token)", rv);
        m->slot = slots[0];
    }
    if ((rv = m->f->C_OpenSession(m->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                  &m->keep)) != CKR_OK)
        die("C_OpenSession", rv);
    CK_TOKEN_INFO ti;
    if ((rv = m->f->C_GetTokenInfo(m->slot, &ti)) != CKR_OK)
        die("C_GetTokenInfo", rv);
    if (ti.flags & CKF_LOGIN_REQUIRED) {
        const char *pin = getenv("NT_BENCH_PIN");
        if (!pin)
            pin = "123456";
        if ((rv = m->f->C_Login(m->keep, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin))) != CKR_OK)
            die("C_Login", rv);
    }
}

static bool has_mech(Module *m, CK_MECHANISM_TYPE t) {
    CK_MECHANISM_INFO mi;
    return m->f->C_GetMechanismInfo(m->slot, t, &mi) == CKR_OK;
}

/* Generates the key of an operation. SoftHSM2: a session object where it allows (its fastest:
 * no token file behind it), else a token object. The vHSM: a token object first, because its
 * session objects live on one vhsmd connection per slot (they are bound to the connection that
 * made them), so threads sharing a session key take turns on that connection; token keys are
 * what a multi-threaded application uses with it (docs/pkcs11.md "Session objects"). */
static bool gen_key(Module *m, int op) {
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static const CK_BYTE ed_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    static const CK_BYTE ed_str[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                     'd',  's',  '2', '5', '5', '1', '9'};
    CK_BBOOL yes = CK_TRUE;
    CK_ULONG bits = 2048, len = 32;
    CK_MECHANISM_TYPE need[N_OPS] = {CKM_ECDSA, CKM_SHA256_RSA_PKCS, CKM_EDDSA, CKM_AES_GCM};
    if (!has_mech(m, need[op]))
        return false;
    for (int attempt = 0; attempt < 4; attempt++) {
        CK_BBOOL token = (attempt % 2 == 0) == (m->daemon > 0) ? CK_TRUE : CK_FALSE;
        CK_OBJECT_HANDLE pub = 0;
        CK_RV rv;
        if (op == OP_GCM) {
            CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
            CK_ATTRIBUTE t[] = {
                {CKA_TOKEN, &token, 1}, {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_ENCRYPT, &yes, 1}};
            rv = m->f->C_GenerateKey(m->keep, &mech, t, 3, &m->key[op]);
        } else {
            CK_MECHANISM mech = {op == OP_ECDSA ? CKM_EC_KEY_PAIR_GEN
                                 : op == OP_RSA ? CKM_RSA_PKCS_KEY_PAIR_GEN
                                                : CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                 NULL, 0};
            CK_ATTRIBUTE pt[2] = {{CKA_TOKEN, &token, 1}};
            if (op == OP_ECDSA)
                pt[1] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p256, sizeof(p256)};
            else if (op == OP_RSA)
                pt[1] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
            else if (attempt < 2)
                pt[1] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)ed_oid, sizeof(ed_oid)};
            else
                pt[1] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)ed_str, sizeof(ed_str)};
            CK_ATTRIBUTE vt[] = {{CKA_TOKEN, &token, 1}, {CKA_SIGN, &yes, 1}};
            rv = m->f->C_GenerateKeyPair(m->keep, &mech, pt, 2, vt, 2, &pub, &m->key[op]);
        }
        if (rv == CKR_OK)
            return true;
    }
    return false;
}

/* ---- measurement ---------------------------------------------------------------------------- */

typedef struct Job {
    Module *m;
    int op;
    atomic_bool *stop;
    uint64_t count;
    CK_RV err;
    pthread_barrier_t *start;
} Job;

static void *run(void *p) {
    Job *j = p;
    CK_FUNCTION_LIST *f = j->m->f;
    CK_SESSION_HANDLE s;
    CK_RV rv = f->C_OpenSession(j->m->slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
    pthread_barrier_wait(j->start);
    if (rv != CKR_OK) {
        j->err = rv;
        return NULL;
    }
    static const CK_BYTE msg[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CK_BYTE out[4096 + 64], in[4096] = {0};
    CK_BYTE iv[12] = {0};
    CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};
    CK_MECHANISM mech;
    switch (j->op) {
    case OP_ECDSA:
        mech = (CK_MECHANISM){CKM_ECDSA, NULL, 0};
        break;
    case OP_RSA:
        mech = (CK_MECHANISM){CKM_SHA256_RSA_PKCS, NULL, 0};
        break;
    case OP_ED25519:
        mech = (CK_MECHANISM){CKM_EDDSA, NULL, 0};
        break;
    default:
        mech = (CK_MECHANISM){CKM_AES_GCM, &gcm, sizeof(gcm)};
        break;
    }
    uint64_t n = 0, ctr = 0;
    uintptr_t tid = (uintptr_t)pthread_self();
    memcpy(iv + 8, &tid, 4);
    while (!atomic_load_explicit(j->stop, memory_order_relaxed)) {
        CK_ULONG ol = sizeof(out);
        if (j->op == OP_GCM) {
            ctr++;
            memcpy(iv, &ctr, 8); /* a fresh IV per encryption */
            rv = f->C_EncryptInit(s, &mech, j->m->key[j->op]);
            if (rv == CKR_OK)
                rv = f->C_Encrypt(s, in, sizeof(in), out, &ol);
        } else {
            rv = f->C_SignInit(s, &mech, j->m->key[j->op]);
            if (rv == CKR_OK)
                rv = f->C_Sign(s, (CK_BYTE_PTR)msg, sizeof(msg), out, &ol);
        }
        if (rv != CKR_OK) {
            j->err = rv;
            break;
        }
        n++;
    }
    j->count = n;
    f->C_CloseSession(s);
    return NULL;
}

/* CPU time used so far by this process (all threads, ended ones too), in seconds. */
static double self_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time used so far by a vhsmd (the sum over its threads' schedstat), in seconds; < 0 if it
 * cannot be read. Its workers live as long as it does, so differences are exact. */
static double vhsmd_cpu(pid_t pid) {
    char path[64];
    double sum = 0;
    DIR *d;
    struct dirent *e;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    if (!(d = opendir(path)))
        return -1;
    while ((e = readdir(d))) {
        char p2[300];
        unsigned long long ns = 0;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (!f)
            continue;
        if (fscanf(f, "%llu", &ns) == 1)
            sum += (double)ns / 1e9;
        fclose(f);
    }
    closedir(d);
    return sum;
}

/* CPU µs per operation of the last vHSM measurement: the client process, vhsmd. */
static double cpu_client_us, cpu_vhsmd_us;

/* ops/s of module m for op with n threads; < 0 on failure. */
static double measure(Module *m, int op, int threads) {
    pid_t daemon = m->daemon;
    double c0 = self_cpu(), v0 = vhsmd_cpu(daemon);
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, (unsigned)threads + 1);
    Job jobs[8];
    pthread_t th[8];
    atomic_bool stop = false;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (Job){.m = m, .op = op, .stop = &stop, .start = &b};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    /* the clock starts once every thread has its session */
    pthread_barrier_wait(&b);
    double t0 = now();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    uint64_t total = 0;
    CK_RV err = CKR_OK;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].count;
        if (jobs[i].err != CKR_OK)
            err = jobs[i].err;
    }
    double t = now() - t0;
    pthread_barrier_destroy(&b);
    if (total > 0) {
        cpu_client_us = (self_cpu() - c0) / (double)total * 1e6;
        cpu_vhsmd_us = v0 >= 0 ? (vhsmd_cpu(daemon) - v0) / (double)total * 1e6 : -1;
    }
    if (err != CKR_OK) {
        fprintf(stderr, "bench-pkcs11: %s, %s: CK_RV 0x%lx\n", m->label, op_names[op],
                (unsigned long)err);
        return -1;
    }
    return (double)total / t;
}

/* Whether the comma-separated list has the word. */
static bool list_has(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ",");
        if (l == n && strncmp(p, word, n) == 0)
            return true;
        p += l + (p[l] == ',');
    }
    return false;
}

static void cleanup(void) {
    if (vhsmd_pid > 0) {
        kill(vhsmd_pid, SIGTERM);
        waitpid(vhsmd_pid, NULL, 0);
        vhsmd_pid = 0;
    }
    if (vhsmd_b_pid > 0) {
        kill(vhsmd_b_pid, SIGTERM);
        waitpid(vhsmd_b_pid, NULL, 0);
        vhsmd_b_pid = 0;
    }
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        (void)!system(cmd);
    }
}

int main(int argc, char **argv) {
    Module mods[2] = {0};
    bool partial = false;
    size_t n_mods = 0;
    size_t rounds = 3;
    const char *e = getenv("NT_BENCH_ROUNDS");
    if (e && atoi(e) > 0)
        rounds = (size_t)atoi(e) < MAX_ROUNDS ? (size_t)atoi(e) : MAX_ROUNDS;
    if ((e = getenv("NT_BENCH_SECONDS")) && atof(e) > 0)
        seconds = atof(e);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/nt-bench-p11.XXXXXX");
    if (!mkdtemp(tmpdir))
        die("mkdtemp", 0);
    atexit(cleanup);

    if (argc > 1) {
        for (int i = 1; i < argc && n_mods < 2; i++)
            mods[n_mods++] = (Module){.label = argv[i], .path = argv[i]};
        for (size_t i = 0; i < n_mods; i++) {
            module_load(&mods[i]);
            module_open(&mods[i], true);
        }
    } else {
        char sock[128], sock_b[128], socks[260], conf[128], tokens[128], text[512];
        const char *b_args = getenv("NT_BENCH_B"), *b_bin = getenv("NT_BENCH_B_VHSMD");
        snprintf(sock, sizeof(sock), "%s/vhsm.sock", tmpdir);
        vhsmd_pid = start_vhsmd_at(sock, "", VHSMD_PATH, NULL);
        snprintf(socks, sizeof(socks), "%s", sock);
        if (b_args || b_bin) {
            snprintf(sock_b, sizeof(sock_b), "%s/vhsm-b.sock", tmpdir);
            vhsmd_b_pid =
                start_vhsmd_at(sock_b, "-b", b_bin ? b_bin : VHSMD_PATH, b_args ? b_args : "");
            snprintf(socks, sizeof(socks), "%s:%s", sock, sock_b);
        }
        setenv("VHSM_PKCS11_SOCKETS", socks, 1);
        mods[0] = (Module){.label = "vhsm", .path = PKCS11_MODULE_PATH, .daemon = vhsmd_pid};
        module_load(&mods[0]);
        module_open(&mods[0], true);
        if (vhsmd_b_pid > 0) {
            /* the same module (one C_Initialize), its second slot */
            CK_SLOT_ID slots[4];
            CK_ULONG n = 4;
            CK_RV rv = mods[0].f->C_GetSlotList(CK_TRUE, slots, &n);
            if (rv != CKR_OK || n < 2)
                die("C_GetSlotList (the B slot)", rv);
            mods[1] = (Module){
                .label = "vhsm-B", .f = mods[0].f, .slot = slots[1], .daemon = vhsmd_b_pid};
            module_open(&mods[1], false);
            n_mods = 2;
            partial = true; /* no targets against SoftHSM2 judged */
            goto keys;
        }
        snprintf(tokens, sizeof(tokens), "%s/softhsm-tokens", tmpdir);
        snprintf(conf, sizeof(conf), "%s/softhsm2.conf", tmpdir);
        mkdir(tokens, 0700);
        snprintf(text, sizeof(text),
                 "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
                 tokens);
        FILE *f = fopen(conf, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
            die("writing softhsm2.conf", 0);
        setenv("SOFTHSM2_CONF", conf, 1);
        mods[1] = (Module){.label = "SoftHSM2", .path = SOFTHSM_PATH};
        if (getenv("NT_BENCH_NO_PEER")) {
            mods[1] = (Module){.label = "(none)"};
            n_mods = 1;
            partial = true;
            goto keys;
        }
        if (access(SOFTHSM_PATH, R_OK) != 0) {
            fprintf(stderr, "bench-pkcs11: %s missing (apt-get install softhsm2)\n", SOFTHSM_PATH);
            return 2;
        }
        module_load(&mods[1]);
        softhsm_init_token(&mods[1]);
        module_open(&mods[1], false);
        n_mods = 2;
    }
keys:
    for (size_t i = 0; i < n_mods; i++)
        for (int op = 0; op < N_OPS; op++)
            mods[i].has[op] = gen_key(&mods[i], op);

    double load[3] = {0};
    (void)!getloadavg(load, 3);
    printf("bench-pkcs11: synchronous PKCS#11 calls, one session per thread; %zu rounds of %.1f s "
           "per measurement, medians shown; load average %.2f %.2f %.2f, %ld CPUs\n",
           rounds, seconds, load[0], load[1], load[2], sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-27s %3s %14s %14s %8s\n", "operation", "thr", mods[0].label,
           n_mods > 1 ? mods[1].label : "", n_mods > 1 ? "ratio" : "");
    bool missed = false;
    const char *only_ops = getenv("NT_BENCH_OPS"), *only_thr = getenv("NT_BENCH_THREADS");
    for (int op = 0; op < N_OPS; op++)
        for (int threads = 1; threads <= 2; threads++) {
            if ((only_ops && !list_has(only_ops, op_keys[op])) ||
                (only_thr && atoi(only_thr) != threads)) {
                partial = true;
                continue;
            }
            double rate[2][MAX_ROUNDS], ratio[MAX_ROUNDS], cpu_c[MAX_ROUNDS], cpu_v[MAX_ROUNDS];
            double cpu_c_b[MAX_ROUNDS], cpu_v_b[MAX_ROUNDS];
            size_t ok = 0;
            bool any[2] = {mods[0].has[op], n_mods > 1 && mods[1].has[op]};
            for (size_t r = 0; r < rounds; r++) {
                double a = any[0] ? measure(&mods[0], op, threads) : -1;
                cpu_c[r] = cpu_client_us;
                cpu_v[r] = cpu_vhsmd_us;
                double b = any[1] ? measure(&mods[1], op, threads) : -1;
                cpu_c_b[r] = cpu_client_us;
                cpu_v_b[r] = cpu_vhsmd_us;
                rate[0][r] = a;
                rate[1][r] = b;
                if (a > 0 && b > 0)
                    ratio[ok++] = a / b;
            }
            char col[2][32];
            for (int i = 0; i < 2; i++) {
                if (!any[i] || rate[i][0] < 0)
                    snprintf(col[i], sizeof(col[i]), "%s", i < (int)n_mods ? "n/a" : "");
                else
                    snprintf(col[i], sizeof(col[i]), "%.0f", median(rate[i], rounds));
            }
            char rc[32] = "";
            if (ok > 0) {
                double rm = median(ratio, ok);
                snprintf(rc, sizeof(rc), "%.2fx", rm);
                double target = (threads == 2 && (op == OP_ECDSA || op == OP_GCM)) ? 2.0 : 1.0;
                if (rm < target)
                    missed = true;
            } else if (n_mods > 1 && any[1])
                missed = true; /* a row the first module cannot run at all */
            printf("%-27s %3d %14s %14s %8s", op_names[op], threads, col[0], col[1], rc);
            for (int i = 0; i < 2 && getenv("NT_BENCH_CPU"); i++) {
                double *cc_v = i ? cpu_c_b : cpu_c, *cv_v = i ? cpu_v_b : cpu_v;
                if (!any[i] || !mods[i].daemon)
                    continue;
                double cc = median(cc_v, rounds), cv = median(cv_v, rounds);
                /* the most this CPU cost per operation allows on the machine's CPUs */
                double bound = (double)sysconf(_SC_NPROCESSORS_ONLN) / ((cc + cv) / 1e6);
                printf("  %s cpu/op: client %.1f + vhsmd %.1f us (<= %.0f/s)", i ? "B" : "A", cc,
                       cv, bound);
            }
            printf("\n");
        }
    if (partial)
        printf("partial run (NT_BENCH_OPS / NT_BENCH_THREADS): targets not judged\n");
    else if (n_mods > 1)
        printf("targets (issue 12): >= 2x on ECDSA P-256 and AES-GCM with 2 threads, no row below "
               "1x: %s\n",
               missed ? "MISSED" : "met");
    for (size_t i = 0; i < n_mods; i++)
        if (i == 0 || mods[i].f != mods[0].f)
            mods[i].f->C_Finalize(NULL);
    return missed && !partial ? 1 : 0;
}
