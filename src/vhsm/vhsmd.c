/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsmd: the vHSM daemon. Holds the vault (keys never leave it), persists it in the sealed
 * keystore, and serves local clients on a unix socket (server.h), deciding access per key by
 * the peer's identity (peer.h, vault_acl_check).
 *
 * Start-up order matters: harden the process (no core dumps, not ptrace-able by other users),
 * lock all memory (refuse to run with swappable secrets unless --allow-unlocked-memory),
 * vault_init() (secure heap, zeroising JSON allocator), then open the keystore: a keystore that
 * exists but does not open (tampered, other VM, corrupt) stops the daemon and is left untouched,
 * and so does one older than the freshness anchor (an old copy restored by the host: rollback,
 * docs/vault.md "Freshness and rollback") unless the operator accepts exactly its generation.
 * Only then is the socket created, so a client never talks to a half-initialised daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/secret.h"
#include "client/vhsm-client.h"
#include "dispatch.h"
#include "peer.h"
#include "server.h"
#include "snp/provider.h"
#include "token/release.h"
#include "vhsm/freshness.h"
#include "vhsm/keystore.h"
#include "vhsm/transfer.h"
#include "vhsm/vault.h"

#define DEFAULT_KEYSTORE "/var/lib/vhsm/keystore"

static Server *the_server;

static void on_stop_signal(int sig) {
    if (the_server)
        server_request_stop(the_server);
}

typedef struct Options {
    const char *socket_path;
    const char *keystore;
    const char *provider;
    const char *sim_dir;
    char *anchor; /* NULL: --freshness-anchor none */
    bool accept_rollback;
    uint64_t accept_generation;
    unsigned threads;
    mode_t socket_mode;
    gid_t socket_gid;
    unsigned stall_timeout_ms;
    unsigned agent_timeout_s;
    unsigned spin_us;
    unsigned max_connections;
    unsigned max_per_uid;
    unsigned root_connections;
    bool allow_unlocked;
    bool no_plaintext_import;
    bool foreground;
    bool debug;
    VaultQuota quota;           /* 0 fields: defaults */
    unsigned pin_max_tries;     /* 0: default (10) */
    unsigned pin_iterations;    /* 0: default (PBKDF2 iterations of new PIN hashes) */
    size_t secure_heap;         /* 0: sized from the quotas */
    const char *kms_keys;       /* pinned kmsd release keys (JWKS or PEM public keys) */
    const char *attestd_jwks;   /* pinned attestd token keys */
    const char *attestd_issuer; /* required token issuer */
    const char *transfer_curve; /* NULL: VAULT_TRANSFER_DEFAULT_CURVE (P-256) */
} Options;

static void help(void) {
    printf(
        "Usage: vhsmd [OPTIONS]\n"
        "The vHSM daemon: keeps keys inside this (confidential) VM and serves local clients.\n\n"
        "  --socket PATH             unix socket (default %s)\n"
        "  --socket-mode MODE        octal socket mode (default 0666: access is decided per key\n"
        "                            by the peer's uid, gid and cgroup)\n"
        "  --socket-group GROUP      group owning the socket (with --socket-mode 0660)\n"
        "  --keystore PATH           sealed keystore file (default %s)\n"
        "  --provider NAME           evidence provider for the sealing key: sev-guest, sim, auto\n"
        "  --sim-dir DIR             simulated chip directory (with --provider sim)\n"
        "  --freshness-anchor none|file:PATH\n"
        "                            where the last keystore generation is recorded, out of the\n"
        "                            host's reach (default file:%s)\n"
        "  --accept-rollback GEN     accept a keystore of exactly generation GEN although the\n"
        "                            anchor records a newer one (audited; rewrites the anchor)\n"
        "  --threads N               worker threads (default: one per CPU)\n"
        "  --stall-timeout MS        disconnect clients stalled mid-frame (default 10000)\n"
        "  --agent-timeout SEC       how long a request waits for the agent to provide its key\n"
        "                            (agent channel; default 30, 1..3600)\n"
        "  --spin-us US              after a reply, poll the connection this long for the next\n"
        "                            request before sleeping, while another worker is free\n"
        "                            (latency vs. idle CPU; default 50, 0 = off)\n"
        "  --max-connections N       connections in all (default 1024; lowered to fit the\n"
        "                            open-file limit, which vhsmd raises to its hard limit)\n"
        "  --max-per-uid N           connections per non-root uid (default 128)\n"
        "  --root-connections N      of --max-connections, kept for root (the agent; default 16)\n"
        "  --quota-keys N            keys per non-root uid (default 1024)\n"
        "  --quota-versions N        retained key versions per non-root uid (default 4096)\n"
        "  --quota-bytes SIZE        bytes charged per non-root uid (default 4M; docs/vault.md)\n"
        "  --quota-total SIZE        bytes charged to all non-root uids together (default 64M)\n"
        "  --quota-root SIZE         reserve beyond the total that only root may use (default "
        "32M)\n"
        "  --secure-heap SIZE        OpenSSL secure heap (default: sized from the quotas, 32M)\n"
        "  --pin-max-tries N         wrong PINs in a row that lock a token's PIN (default 10)\n"
        "  --pin-kdf-iterations N    PBKDF2-SHA256 iterations of new PIN hashes (default 100000)\n"
        "  --kms-keys FILE           kmsd's release keys to pin (a JWKS, or PEM public keys):\n"
        "                            IMPORT_RELEASE accepts only releases they signed\n"
        "  --attestd-jwks FILE       attestd's token keys to pin (a JWKS, or PEM public keys):\n"
        "                            attestation verdicts come only from tokens they signed\n"
        "  --attestd-issuer ISS      the tokens' required issuer (iss)\n"
        "  --transfer-curve P-256|P-384\n"
        "                            curve of the transfer keys releases are sealed to (default\n"
        "                            P-256; P-384 makes a release ~20x dearer in crypto)\n"
        "  --no-plaintext-import     refuse keys imported in plaintext (PKCS#11 C_CreateObject)\n"
        "  --allow-unlocked-memory   run even if memory cannot be locked (secrets may be swapped)\n"
        "  --foreground              stay in the foreground, log to stderr\n"
        "  --debug                   debug logging\n"
        "  --help, --version\n",
        VHSM_DEFAULT_SOCKET, DEFAULT_KEYSTORE, FRESHNESS_DEFAULT_ANCHOR);
}

static int parse_uint(const char *s, unsigned max, unsigned *ret) {
    char *end;
    unsigned long v;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -EINVAL;
    *ret = (unsigned)v;
    return 0;
}

/* "123", "64K", "4M", "1G" -> bytes (at most 1 TiB). */
static int parse_size(const char *s, uint64_t *ret) {
    char *end;
    unsigned long long v;
    unsigned shift = 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -EINVAL;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*end || v > (1ULL << 40) >> shift)
        return -EINVAL;
    *ret = (uint64_t)v << shift;
    return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
    enum {
        ARG_SOCKET = 0x100,
        ARG_SOCKET_MODE,
        ARG_SOCKET_GROUP,
        ARG_KEYSTORE,
        ARG_PROVIDER,
        ARG_SIM_DIR,
        ARG_ANCHOR,
        ARG_ACCEPT_ROLLBACK,
        ARG_THREADS,
        ARG_STALL,
        ARG_SPIN,
        ARG_MAX_CONNECTIONS,
        ARG_MAX_PER_UID,
        ARG_ROOT_CONNECTIONS,
        ARG_ALLOW_UNLOCKED,
        ARG_NO_PLAINTEXT_IMPORT,
        ARG_QUOTA_KEYS,
        ARG_QUOTA_VERSIONS,
        ARG_QUOTA_BYTES,
        ARG_QUOTA_TOTAL,
        ARG_QUOTA_ROOT,
        ARG_SECURE_HEAP,
        ARG_KMS_KEYS,
        ARG_AGENT_TIMEOUT,
        ARG_ATTESTD_JWKS,
        ARG_ATTESTD_ISSUER,
        ARG_TRANSFER_CURVE,
        ARG_PIN_MAX_TRIES,
        ARG_PIN_ITERATIONS,
        ARG_FOREGROUND,
        ARG_DEBUG,
        ARG_VERSION,
    };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, ARG_SOCKET},
        {"socket-mode", required_argument, NULL, ARG_SOCKET_MODE},
        {"socket-group", required_argument, NULL, ARG_SOCKET_GROUP},
        {"keystore", required_argument, NULL, ARG_KEYSTORE},
        {"provider", required_argument, NULL, ARG_PROVIDER},
        {"sim-dir", required_argument, NULL, ARG_SIM_DIR},
        {"freshness-anchor", required_argument, NULL, ARG_ANCHOR},
        {"accept-rollback", required_argument, NULL, ARG_ACCEPT_ROLLBACK},
        {"threads", required_argument, NULL, ARG_THREADS},
        {"stall-timeout", required_argument, NULL, ARG_STALL},
        {"agent-timeout", required_argument, NULL, ARG_AGENT_TIMEOUT},
        {"spin-us", required_argument, NULL, ARG_SPIN},
        {"max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS},
        {"max-per-uid", required_argument, NULL, ARG_MAX_PER_UID},
        {"root-connections", required_argument, NULL, ARG_ROOT_CONNECTIONS},
        {"allow-unlocked-memory", no_argument, NULL, ARG_ALLOW_UNLOCKED},
        {"no-plaintext-import", no_argument, NULL, ARG_NO_PLAINTEXT_IMPORT},
        {"quota-keys", required_argument, NULL, ARG_QUOTA_KEYS},
        {"quota-versions", required_argument, NULL, ARG_QUOTA_VERSIONS},
        {"quota-bytes", required_argument, NULL, ARG_QUOTA_BYTES},
        {"quota-total", required_argument, NULL, ARG_QUOTA_TOTAL},
        {"quota-root", required_argument, NULL, ARG_QUOTA_ROOT},
        {"secure-heap", required_argument, NULL, ARG_SECURE_HEAP},
        {"kms-keys", required_argument, NULL, ARG_KMS_KEYS},
        {"attestd-jwks", required_argument, NULL, ARG_ATTESTD_JWKS},
        {"attestd-issuer", required_argument, NULL, ARG_ATTESTD_ISSUER},
        {"transfer-curve", required_argument, NULL, ARG_TRANSFER_CURVE},
        {"pin-max-tries", required_argument, NULL, ARG_PIN_MAX_TRIES},
        {"pin-kdf-iterations", required_argument, NULL, ARG_PIN_ITERATIONS},
        {"foreground", no_argument, NULL, ARG_FOREGROUND},
        {"debug", no_argument, NULL, ARG_DEBUG},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, ARG_VERSION},
        {},
    };
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
        switch (c) {
        case ARG_SOCKET:
            o->socket_path = optarg;
            break;
        case ARG_SOCKET_MODE: {
            char *end;
            unsigned long m;
            errno = 0;
            m = strtoul(optarg, &end, 8);
            if (errno || end == optarg || *end || m > 0777)
                return log_error_errno(-EINVAL, "Invalid --socket-mode '%s'.", optarg);
            o->socket_mode = (mode_t)m;
            break;
        }
        case ARG_SOCKET_GROUP: {
            struct group *g = getgrnam(optarg);
            unsigned gid;
            if (g)
                o->socket_gid = g->gr_gid;
            else if (parse_uint(optarg, 0x7fffffff, &gid) == 0)
                o->socket_gid = (gid_t)gid;
            else
                return log_error_errno(-EINVAL, "Unknown group '%s'.", optarg);
            break;
        }
        case ARG_KEYSTORE:
            o->keystore = optarg;
            break;
        case ARG_PROVIDER:
            if (!streq(optarg, "sim") && !streq(optarg, "sev-guest") && !streq(optarg, "auto"))
                return log_error_errno(-EINVAL, "Unknown provider '%s' (sev-guest, sim or auto).",
                                       optarg);
            o->provider = optarg;
            break;
        case ARG_SIM_DIR:
            o->sim_dir = optarg;
            break;
        case ARG_ANCHOR: {
            char *path = NULL;
            int r = freshness_anchor_spec_parse(optarg, &path);
            if (r == -ENOMEM)
                return log_oom();
            if (r < 0)
                return log_error_errno(r, "Invalid --freshness-anchor '%s' (none or file:/PATH).",
                                       optarg);
            free(o->anchor);
            o->anchor = path;
            break;
        }
        case ARG_ACCEPT_ROLLBACK: {
            char *end;
            unsigned long long g;
            errno = 0;
            g = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] < '0' || optarg[0] > '9')
                return log_error_errno(-EINVAL, "Invalid --accept-rollback '%s' (a generation).",
                                       optarg);
            o->accept_rollback = true;
            o->accept_generation = g;
            break;
        }
        case ARG_THREADS:
            if (parse_uint(optarg, 256, &o->threads) < 0 || o->threads == 0)
                return log_error_errno(-EINVAL, "Invalid --threads '%s' (1..256).", optarg);
            break;
        case ARG_STALL:
            if (parse_uint(optarg, 3600000, &o->stall_timeout_ms) < 0 || o->stall_timeout_ms < 100)
                return log_error_errno(-EINVAL, "Invalid --stall-timeout '%s' (100..3600000).",
                                       optarg);
            break;
        case ARG_AGENT_TIMEOUT:
            if (parse_uint(optarg, 3600, &o->agent_timeout_s) < 0 || o->agent_timeout_s == 0)
                return log_error_errno(-EINVAL, "Invalid --agent-timeout '%s' (1..3600 seconds).",
                                       optarg);
            break;
        case ARG_SPIN:
            if (parse_uint(optarg, 10000, &o->spin_us) < 0)
                return log_error_errno(-EINVAL, "Invalid --spin-us '%s' (0..10000).", optarg);
            break;
        case ARG_MAX_CONNECTIONS:
            if (parse_uint(optarg, 1000000, &o->max_connections) < 0 || o->max_connections < 2)
                return log_error_errno(-EINVAL, "Invalid --max-connections '%s' (2..1000000).",
                                       optarg);
            break;
        case ARG_MAX_PER_UID:
            if (parse_uint(optarg, 1000000, &o->max_per_uid) < 0 || o->max_per_uid == 0)
                return log_error_errno(-EINVAL, "Invalid --max-per-uid '%s' (1..1000000).", optarg);
            break;
        case ARG_ROOT_CONNECTIONS:
            if (parse_uint(optarg, 1000000, &o->root_connections) < 0 || o->root_connections == 0)
                return log_error_errno(-EINVAL, "Invalid --root-connections '%s' (1..1000000).",
                                       optarg);
            break;
        case ARG_NO_PLAINTEXT_IMPORT:
            o->no_plaintext_import = true;
            break;
        case ARG_ALLOW_UNLOCKED:
            o->allow_unlocked = true;
            break;
        case ARG_PIN_MAX_TRIES:
            if (parse_uint(optarg, 100, &o->pin_max_tries) < 0 || o->pin_max_tries == 0)
                return log_error_errno(-EINVAL, "Invalid --pin-max-tries '%s' (1..100).", optarg);
            break;
        case ARG_PIN_ITERATIONS:
            if (parse_uint(optarg, 100000000, &o->pin_iterations) < 0 || o->pin_iterations < 1000)
                return log_error_errno(
                    -EINVAL, "Invalid --pin-kdf-iterations '%s' (1000..100000000).", optarg);
            break;
        case ARG_QUOTA_KEYS:
        case ARG_QUOTA_VERSIONS: {
            unsigned n;
            if (parse_uint(optarg, 1000000, &n) < 0 || n == 0)
                return log_error_errno(-EINVAL, "Invalid %s '%s' (1..1000000).",
                                       c == ARG_QUOTA_KEYS ? "--quota-keys" : "--quota-versions",
                                       optarg);
            if (c == ARG_QUOTA_KEYS)
                o->quota.max_keys = n;
            else
                o->quota.max_versions = n;
            break;
        }
        case ARG_QUOTA_BYTES:
        case ARG_QUOTA_TOTAL:
        case ARG_QUOTA_ROOT: {
            uint64_t n;
            if (parse_size(optarg, &n) < 0 || n == 0)
                return log_error_errno(-EINVAL, "Invalid size '%s' (bytes, or with K, M, G).",
                                       optarg);
            if (c == ARG_QUOTA_BYTES)
                o->quota.max_bytes = n;
            else if (c == ARG_QUOTA_TOTAL)
                o->quota.total_bytes = n;
            else
                o->quota.root_reserve = n;
            break;
        }
        case ARG_SECURE_HEAP: {
            uint64_t n;
            if (parse_size(optarg, &n) < 0 || n < 16384 || n > ((uint64_t)1 << 32))
                return log_error_errno(-EINVAL, "Invalid --secure-heap '%s' (16K..4G).", optarg);
            o->secure_heap = (size_t)n;
            while (o->secure_heap & (o->secure_heap - 1)) /* OpenSSL needs a power of two */
                o->secure_heap += o->secure_heap & -o->secure_heap;
            break;
        }
        case ARG_KMS_KEYS:
            o->kms_keys = optarg;
            break;
        case ARG_ATTESTD_JWKS:
            o->attestd_jwks = optarg;
            break;
        case ARG_ATTESTD_ISSUER:
            if (!optarg[0] || strlen(optarg) > 1024)
                return log_error_errno(-EINVAL, "Invalid --attestd-issuer (1..1024 characters).");
            o->attestd_issuer = optarg;
            break;
        case ARG_TRANSFER_CURVE:
            if (!streq(optarg, "P-384") && !streq(optarg, "P-256"))
                return log_error_errno(
                    -EINVAL, "Invalid --transfer-curve '%.32s' (P-256 or P-384).", optarg);
            o->transfer_curve = optarg;
            break;
        case ARG_FOREGROUND:
            o->foreground = true;
            break;
        case ARG_DEBUG:
            o->debug = true;
            break;
        case 'h':
            help();
            return 0;
        case ARG_VERSION:
            printf("vhsmd %s\n", NT_VERSION);
            return 0;
        default:
            return -EINVAL;
        }
    }
    if (optind < argc)
        return log_error_errno(-EINVAL, "Unexpected argument '%s'.", argv[optind]);
    if (o->sim_dir && o->provider && !streq(o->provider, "sim"))
        return log_error_errno(-EINVAL, "--sim-dir needs --provider sim.");
    if (o->root_connections >= (o->max_connections ?: 1024))
        return log_error_errno(-EINVAL, "--root-connections must be below --max-connections.");
    if (o->accept_rollback && !o->anchor)
        return log_error_errno(-EINVAL, "--accept-rollback needs a freshness anchor.");
    if (o->attestd_issuer && !o->attestd_jwks)
        return log_error_errno(-EINVAL, "--attestd-issuer needs --attestd-jwks.");
    return 1;
}

/* Classic daemonisation with a readiness pipe: the parent exits 0 only once the child listens,
 * or with the child's failure. Returns the pipe's write end in the child (-EBADF when staying
 * in the foreground), or exits. */
static int daemonize(void) {
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0)
        return negative_errno();
    pid = fork();
    if (pid < 0)
        return negative_errno();
    if (pid > 0) {
        char status = 1;
        (void)close(p[1]);
        if (read(p[0], &status, 1) != 1)
            status = 1;
        _exit(status == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    (void)close(p[0]);
    if (setsid() < 0)
        return negative_errno();
    pid = fork();
    if (pid < 0)
        return negative_errno();
    if (pid > 0)
        _exit(EXIT_SUCCESS); /* the grandchild keeps the pipe */
    {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            (void)dup2(null, STDIN_FILENO);
            (void)dup2(null, STDOUT_FILENO);
            (void)dup2(null, STDERR_FILENO);
            if (null > STDERR_FILENO)
                (void)close(null);
        }
    }
    if (chdir("/") < 0)
        return negative_errno();
    return p[1];
}

static void notify_ready(int ready_fd) {
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ready_fd >= 0) {
        char ok = 0;
        (void)!write(ready_fd, &ok, 1);
        (void)close(ready_fd);
    }
    if (ns && (ns[0] == '/' || ns[0] == '@') &&
        strlen(ns) < sizeof(((struct sockaddr_un){0}).sun_path)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        socklen_t len;
        strcpy(sa.sun_path, ns);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ns));
        if (ns[0] == '@')
            sa.sun_path[0] = 0;
        if (fd >= 0)
            (void)sendto(fd, "READY=1", 7, MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    }
}

static int lock_memory(bool allow_unlocked) {
    /* MCL_ONFAULT: lock pages as they are touched, so reserved but unused address space (thread
     * stacks, sanitizer shadow) is not committed. */
    if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0 && nt_check_mlock() >= 0)
        return 0;
    if (!allow_unlocked)
        return log_error_errno(negative_errno(),
                               "Cannot lock memory (mlockall: %m): keys could be swapped to disk. "
                               "Raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity) or grant "
                               "CAP_IPC_LOCK; --allow-unlocked-memory overrides this.");
    log_warning("WARNING: memory is NOT locked: key material may be written to swap. Running "
                "anyway because --allow-unlocked-memory was given.");
    secret_set_allow_unlocked(true);
    /* Cipher contexts hold key schedules in OpenSSL's ordinary heap: with swappable memory, keep
     * them only for the duration of an operation. */
    vault_set_context_cache(false);
    return 0;
}

/* Every client connection is a file descriptor, and the default soft limit (1024) is below what
 * the connection limits allow: raise it to the hard limit (the unit sets LimitNOFILE=65536). The
 * server then keeps its connection limit below what is left (server.c, clamp_to_fd_limit). vhsmd
 * uses epoll only, never select(), so descriptors above 1023 are fine. */
static void raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_warning_errno(negative_errno(),
                          "Cannot raise the open-file limit to %llu, ignoring: %m",
                          (unsigned long long)rl.rlim_max);
    else
        log_debug("Open-file limit raised to %llu.", (unsigned long long)rl.rlim_max);
}

/* Messages about the keystore's freshness (docs/vault.md "Freshness and rollback"): the refusal
 * naming both generations, the operator's override as an audit line. Returns r, the load's
 * result, or -ECANCELED when the refusal was logged here already. */
static int check_freshness(const Options *o, Keystore *ks, int r) {
    KeystoreFreshness f;
    bool missing;
    keystore_get_freshness(ks, &f);
    if (!f.anchored)
        return r;
    if (r == -EKEYREVOKED) {
        if (o->accept_rollback)
            log_error("--accept-rollback %" PRIu64 " does not match the keystore's generation "
                      "%" PRIu64 ": nothing accepted.",
                      o->accept_generation, f.generation);
        missing = access(o->keystore, F_OK) < 0;
        log_error_errno(
            r,
            "Keystore '%s' is generation %" PRIu64 "%s, older than generation %" PRIu64
            " recorded in the freshness anchor '%s': %s (rollback). Refusing to "
            "start; %s. To accept this state on purpose, start once with "
            "--accept-rollback %" PRIu64 ".",
            o->keystore, f.generation, missing ? " (missing)" : "", f.anchor_generation, o->anchor,
            missing ? "the keystore was deleted or moved, starting empty would lose "
                      "every key"
                    : "an older copy of the keystore was put back, deleted keys and "
                      "retired versions would return",
            missing ? "nothing is created" : "the file is left untouched", f.generation);
        return -ECANCELED;
    }
    if (r < 0 && r != -ENOENT && f.anchor_read == r) {
        log_error_errno(r,
                        "Freshness anchor '%s' is not valid (%m): forged, tampered with, or "
                        "written by another VM. Refusing to start with keystore '%s' (generation "
                        "%" PRIu64 "). To accept this keystore on purpose and rewrite the anchor, "
                        "start once with --accept-rollback %" PRIu64 ".",
                        o->anchor, o->keystore, f.generation, f.generation);
        return -ECANCELED;
    }
    if (r < 0 && r != -ENOENT && f.anchor_write == r) {
        log_error_errno(r,
                        "Cannot write the freshness anchor '%s': %m. Refusing to start without "
                        "rollback protection (--freshness-anchor none would run without it).",
                        o->anchor);
        return -ECANCELED;
    }
    if (r < 0 && r != -ENOENT)
        return r;
    if (f.rollback_accepted)
        log_notice("AUDIT: keystore rollback accepted by the operator (--accept-rollback "
                   "%" PRIu64 "): keystore '%s' generation %" PRIu64 ", freshness anchor '%s' %s "
                   "%" PRIu64 "; %s generation %" PRIu64 ", anchor rewritten.",
                   o->accept_generation, o->keystore, o->accept_generation, o->anchor,
                   f.anchor_read == 0 ? "generation" : "invalid, generation unknown",
                   f.anchor_generation, f.resealed_generation ? "resealed as" : "next write is",
                   f.resealed_generation ? f.resealed_generation : f.anchor_generation + 1);
    else if (o->accept_rollback)
        log_warning("--accept-rollback %" PRIu64 " not needed: keystore generation %" PRIu64
                    " is not older than the anchor, ignoring.",
                    o->accept_generation, f.generation);
    else
        log_info("Keystore generation %" PRIu64 ", freshness anchor '%s'.", f.generation,
                 o->anchor);
    return r;
}

/* The pinned keys: read before the socket exists, so a daemon that runs always trusts what its
 * command line says (a file that does not load stops the start). */
static int load_pinned(const char *what, const char *opt, const char *path, json_t **ret) {
    _cleanup_free_ char *error = NULL;
    int r = nt_jwks_load_public_file(path, ret, &error);
    if (r == -ENOMEM)
        return log_oom();
    if (r < 0)
        return log_error_errno(r, "Cannot pin %s (%s): %s", what, opt, error ?: strerror(-r));
    log_info("Pinned %zu %s from '%s'.", json_array_size(json_object_get(*ret, "keys")), what,
             path);
    return 0;
}

static int load_trust(const Options *o, Dispatch *d) {
    json_auto_t *kms = NULL, *attestd = NULL;
    int r;
    if (o->kms_keys && (r = load_pinned("KMS release keys", "--kms-keys", o->kms_keys, &kms)) < 0)
        return r;
    if (o->attestd_jwks && (r = load_pinned("attestation service keys", "--attestd-jwks",
                                            o->attestd_jwks, &attestd)) < 0)
        return r;
    if (!kms)
        log_info("No --kms-keys: releases from a KMS (IMPORT_RELEASE) are refused.");
    if (!attestd)
        log_info("No --attestd-jwks: attestation verdicts (ATTESTATION_SET) are refused, so keys "
                 "with the attested policy stay unusable.");
    r = dispatch_set_trust(d, kms, attestd, o->attestd_issuer);
    return r < 0 ? log_oom() : 0;
}

static unsigned default_threads(void) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return (unsigned)MIN(ncpu > 0 ? ncpu : 1, 256);
}

static int run(const Options *o, int ready_fd) {
    _cleanup_(snp_provider_freep) SnpProvider *provider = NULL;
    _cleanup_(freshness_anchor_freep) FreshnessAnchor *anchor = NULL;
    _cleanup_(keystore_freep) Keystore *ks = NULL;
    _cleanup_(vault_freep) Vault *vault = NULL;
    _cleanup_(dispatch_freep) Dispatch *dispatch = NULL;
    _cleanup_(server_freep) Server *server = NULL;
    _cleanup_free_ char *ks_dir = NULL;
    struct sigaction sa = {.sa_handler = on_stop_signal};
    ServerConfig cfg = {
        .socket_path = o->socket_path,
        .socket_mode = o->socket_mode,
        .socket_gid = o->socket_gid,
        .threads = o->threads ? o->threads : default_threads(),
        .stall_timeout_ms = o->stall_timeout_ms,
        .agent_timeout_s = o->agent_timeout_s,
        .spin_us = o->spin_us,
        /* test only: simulates a kernel without SO_PEERPIDFD (tests/integration/vhsm-cgroup.sh) */
        .no_peer_pidfd =
            streq_ptr(getenv("VHSMD_TEST_NO_PEERPIDFD"), "1") || !peer_pidfd_supported(),
        .max_connections = o->max_connections,
        .max_per_uid = o->max_per_uid,
        .root_connections = o->root_connections,
    };
    char *slash;
    int r;

    r = nt_harden_process();
    if (r < 0)
        return log_error_errno(r, "Failed to harden the process (no core dumps): %m");
    raise_nofile_limit();
    r = lock_memory(o->allow_unlocked);
    if (r < 0)
        return r;
    VaultQuota quota = o->quota;
    size_t secure_heap = o->secure_heap;
    r = vault_quota_normalize(&quota);
    if (r < 0)
        return log_error_errno(r,
                               "Inconsistent quotas: --quota-bytes must not exceed --quota-total, "
                               "and --quota-total plus --quota-root must stay under %u MiB "
                               "(the keystore's bound).",
                               (unsigned)(2 * (KEYSTORE_MAX_FILE >> 20) - 2));
    if (secure_heap == 0)
        secure_heap = vault_quota_secure_heap_size(&quota);
    r = vault_init(secure_heap);
    if (r < 0)
        return log_error_errno(r, "Failed to initialise the vault (secure heap of %zu bytes): %m",
                               secure_heap);
    log_info("Quotas per uid: %u keys, %u versions, %" PRIu64 " bytes; all uids %" PRIu64
             " bytes, root's reserve %" PRIu64 " bytes; secure heap %zu bytes.",
             quota.max_keys, quota.max_versions, quota.max_bytes, quota.total_bytes,
             quota.root_reserve, secure_heap);

    r = snp_provider_open(o->provider, o->sim_dir, &provider);
    if (r == -ENODEV)
        return log_error_errno(r, "No evidence provider for the keystore sealing key: %s",
                               snp_provider_missing_message());
    if (r < 0)
        return log_error_errno(r, "Failed to open the evidence provider '%s': %m",
                               o->provider ?: "auto");

    ks_dir = strdup(o->keystore);
    if (!ks_dir)
        return log_oom();
    slash = strrchr(ks_dir, '/');
    if (slash && slash != ks_dir) {
        *slash = 0;
        r = mkdir_p(ks_dir, 0700);
        if (r < 0)
            return log_error_errno(r, "Failed to create the keystore directory '%s': %m", ks_dir);
    }
    r = keystore_new(provider, o->keystore, NULL, &ks);
    if (r < 0)
        return log_error_errno(r, "Failed to set up the keystore '%s': %m", o->keystore);
    if (o->anchor) {
        r = freshness_anchor_new(o->anchor, &anchor);
        if (r < 0)
            return log_oom();
        keystore_set_anchor(ks, anchor);
        if (o->accept_rollback)
            keystore_accept_rollback(ks, o->accept_generation);
    } else
        log_warning("WARNING: no freshness anchor (--freshness-anchor none): an older keystore "
                    "file restored by the host (deleted keys, retired versions) is not detected.");
    r = vault_new(&vault);
    if (r < 0)
        return log_oom();
    r = vault_set_quota(vault, &quota);
    if (r < 0)
        return log_error_errno(r, "Invalid quotas: %m");
    r = vault_set_pin_policy(vault, o->pin_max_tries, o->pin_iterations);
    if (r < 0)
        return log_error_errno(r, "Invalid PIN policy: %m");
    if (o->transfer_curve && (r = vault_set_transfer_curve(vault, o->transfer_curve)) < 0)
        return log_error_errno(r, "Invalid transfer curve: %m");
    r = keystore_load(ks, vault);
    r = check_freshness(o, ks, r);
    if (r == -ENOENT)
        log_info("No keystore at '%s' yet: starting empty; it is created with the first key.",
                 o->keystore);
    else if (r == -ECANCELED)
        return r;
    else if (r < 0)
        return log_error_errno(r,
                               "Keystore '%s' exists but cannot be opened: %m. Refusing to start; "
                               "the file is left untouched.",
                               o->keystore);
    else
        log_info("Keystore '%s' opened: %zu keys.", o->keystore, vault_key_count(vault));
    if (vault_dormant_count(vault) > 0)
        log_warning("%zu key versions do not fit in the secure heap (%zu bytes) and were not "
                    "loaded: they stay in the keystore unchanged, and operations on them fail "
                    "until vhsmd restarts with a larger --secure-heap.",
                    vault_dormant_count(vault), secure_heap);
    vault_set_keystore(vault, ks);
    if (cfg.no_peer_pidfd)
        log_notice("No SO_PEERPIDFD (Linux < 6.5, or VHSMD_TEST_NO_PEERPIDFD=1): peers' cgroups "
                   "are unknown, so cgroup ACL entries match nobody; uid and gid entries do.");

    r = dispatch_new(vault, &dispatch);
    if (r < 0)
        return log_oom();
    dispatch_set_workers(dispatch, cfg.threads);
    dispatch_set_no_plaintext_import(dispatch, o->no_plaintext_import);
    if (o->no_plaintext_import)
        log_info("Plaintext key import refused (--no-plaintext-import).");
    r = load_trust(o, dispatch);
    if (r < 0)
        return r;
    r = server_new(&cfg, dispatch, &server);
    if (r == -EADDRINUSE)
        return log_error_errno(r, "Another vhsmd already listens on '%s'.", o->socket_path);
    if (r < 0)
        return log_error_errno(r, "Failed to listen on '%s': %m", o->socket_path);

    the_server = server;
    (void)sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);

    notify_ready(ready_fd);
    r = server_run(server);
    the_server = NULL;
    if (r < 0)
        return log_error_errno(r, "Server failed: %m");

    server = server_free(server); /* socket gone before the final save */
    r = keystore_save(ks, vault);
    if (r < 0)
        return log_error_errno(r, "Failed to persist the keystore '%s' at shutdown: %m",
                               o->keystore);
    vault_set_keystore(vault, NULL);
    log_info("Stopped cleanly; keystore '%s' persisted.", o->keystore);
    return 0;
}

static void options_done(Options *o) {
    free(o->anchor);
}

int main(int argc, char **argv) {
    _cleanup_(options_done) Options o = {
        .socket_path = VHSM_DEFAULT_SOCKET,
        .keystore = DEFAULT_KEYSTORE,
        .socket_mode = 0666,
        .socket_gid = (gid_t)-1,
        .anchor = strdup(FRESHNESS_DEFAULT_ANCHOR),
        /* synchronous clients (PKCS#11) get their next request served without a sleep/wake-up
         * pair; bounded by conn_spin (another worker stays free; yields the CPU) */
        .spin_us = 50,
    };
    int ready_fd = -EBADF, r;

    log_set_prefix("vhsmd");
    if (!o.anchor)
        return log_oom(), EXIT_FAILURE;
    r = parse_args(argc, argv, &o);
    if (r <= 0)
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    if (o.debug)
        log_set_max_level(LOG_DEBUG);
    if (!o.foreground) {
        ready_fd = daemonize();
        if (ready_fd < 0)
            return log_error_errno(ready_fd, "Failed to daemonize: %m"), EXIT_FAILURE;
        log_open_syslog("vhsmd");
    }
    r = run(&o, ready_fd);
    /* Free this thread's OpenSSL state (DRBGs) now: the main thread is not covered by the
     * thread-exit destructor, and leak checkers would flag it. */
    OPENSSL_thread_stop();
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
