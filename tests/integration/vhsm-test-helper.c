/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper for the vhsmd integration tests: the pieces a shell script cannot do itself, each
 * an independent reference (OpenSSL) or a low-level probe (keys with known bytes are imported
 * as KMS releases made by tests/unit/token/release-tool: vhsm-lib.sh's kms_import):
 *   gcm-open KEYHEX [AADFILE]        opens a vault AES-256-GCM envelope (stdin) with OpenSSL
 *   kw-open KEYHEX kw|kwp            unwraps a vault key-wrap envelope (stdin) with OpenSSL
 *   as-user UID GID [SUPP_GID] -- CMD...   fork, drop to uid/gid (setgroups/setgid/setuid), exec
 *   memscan PID HEX                  searches every readable mapping of PID via /proc/PID/mem:
 *                                    exit 0 found, 1 not found, 2 error
 *   stress SOCK THREADS ITERS AES AESHEX HMAC HMACHEX EC   mixed operations from THREADS
 *                                    connections, every result verified independently
 *   badframes SOCK                   malformed frames, each on its own connection, with a
 *                                    well-behaved client checked in between
 *   hold SOCK NAME PTHEX HOLD_MS CTFILE   encrypt, decrypt PTHEX and ping on one connection,
 *                                    write the ciphertext body to CTFILE, keep it open HOLD_MS
 *   pin SOCK burst|backlog|exact|halfclose N HOLD_MS OUTFILE   connections that streamed,
 *                                    filled their socket, filled the input buffer exactly, or
 *                                    half-closed with replies pending (cmd_pin)
 *   pipeline SOCK N                  N pipelined RANDOM requests before reading any reply
 *   stall SOCK TIMEOUT_MS            a client stalled mid-frame must not block others and must be
 *                                    disconnected after the daemon's stall timeout
 *   trickle SOCK N HOLD_MS OUTFILE   N connections each announce a VHSM_MAX_BODY frame and send
 *                                    all of it but the last byte in small chunks; writes
 *                                    "held=H busy=B closed=C" to OUTFILE, then holds the partial
 *                                    frames HOLD_MS before closing (the daemon's memory budgets)
 *   conns SOCK N OUTFILE STOPFILE    N connections held open (no request) until STOPFILE exists
 *                                    (at most 60 s); "opened=O failed=F" in OUTFILE once all
 *                                    are made (the daemon's file descriptor limits)
 *   deny SOCK MS OUTFILE             for MS ms, pipelined requests this (non-root) uid is denied
 *                                    (ATTESTATION_SET), 8 at a time, reconnecting when the
 *                                    daemon closes; "denied=D closes=C maxrun=M" in OUTFILE (M:
 *                                    most denials answered on one connection)
 *   churn SOCK N MS                  for MS ms, opens N connections and closes them again
 *                                    (connection limit hits, for the log flood test)
 * Exit status: 0 success, 1 check failed (message on stderr), 2 usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <jose/jose.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vhsm/client/proto.h"
#include "vhsm/client/vhsm-client.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/macro.h"
#include "core/openssl-util.h"

#define ENVELOPE_HEADER 12
#define ALG_AES256_GCM 1 /* VaultAlg values as carried in the envelope (docs/vault.md) */
#define ALG_AES256_KW 2
#define ALG_AES256_KWP 3

static int die(const char *msg) {
    fprintf(stderr, "vhsm-test-helper: %s\n", msg);
    return 1;
}

static int hex_key(const char *hex, uint8_t **ret, size_t *ret_len) {
    if (hex_decode_alloc(hex, ret, ret_len) < 0) {
        fprintf(stderr, "vhsm-test-helper: bad hex\n");
        return -EINVAL;
    }
    return 0;
}

/* ---- independent decryption of vault envelopes ---- */

static int gcm_open(const uint8_t *key, const uint8_t *env, size_t n, const uint8_t *aad,
                    size_t aad_len, uint8_t *out, size_t *out_len, uint32_t *ret_version) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    const uint8_t *iv, *tag, *ct;
    size_t ct_len;
    int l = 0, fl = 0;

    if (!ctx || n < ENVELOPE_HEADER + 12 + 16 || memcmp(env, "NTVE", 4) != 0 || env[4] != 1 ||
        env[5] != ALG_AES256_GCM)
        return -EBADMSG;
    iv = env + ENVELOPE_HEADER;
    tag = iv + 12;
    ct = tag + 16;
    ct_len = n - ENVELOPE_HEADER - 28;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &l, env, ENVELOPE_HEADER) != 1 ||
        (aad_len && EVP_DecryptUpdate(ctx, NULL, &l, aad, (int)aad_len) != 1) ||
        EVP_DecryptUpdate(ctx, out, &l, ct, (int)ct_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + l, &fl) != 1)
        return -EKEYREJECTED;
    *out_len = (size_t)(l + fl);
    *ret_version =
        (uint32_t)env[8] << 24 | (uint32_t)env[9] << 16 | (uint32_t)env[10] << 8 | env[11];
    return 0;
}

static int cmd_gcm_open(int argc, char **argv) {
    _cleanup_free_ uint8_t *key = NULL, *env = NULL, *aad = NULL, *out = NULL;
    size_t kl, n, aad_len = 0, out_len = 0;
    uint32_t version;
    if (argc < 1 || argc > 2)
        return 2;
    if (hex_key(argv[0], &key, &kl) < 0 || kl != 32)
        return 2;
    if (read_full_fd(STDIN_FILENO, 2 * 1024 * 1024, &env, &n) < 0)
        return 2;
    if (argc == 2 && read_full_file(argv[1], 65536, &aad, &aad_len) < 0)
        return 2;
    out = malloc(n + 1);
    if (!out)
        return 2;
    if (gcm_open(key, env, n, aad, aad_len, out, &out_len, &version) < 0)
        return die("AES-GCM envelope does not open with the known key");
    fprintf(stderr, "version %u\n", version);
    return write_all(STDOUT_FILENO, out, out_len) < 0 ? 2 : 0;
}

static int cmd_kw_open(int argc, char **argv) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    _cleanup_free_ uint8_t *key = NULL, *env = NULL, *out = NULL;
    size_t kl, n;
    int l = 0, fl = 0;
    bool pad;
    if (argc != 2 || !ctx)
        return 2;
    pad = streq(argv[1], "kwp");
    if (hex_key(argv[0], &key, &kl) < 0 || kl != 32)
        return 2;
    if (read_full_fd(STDIN_FILENO, 2 * 1024 * 1024, &env, &n) < 0)
        return 2;
    if (n < ENVELOPE_HEADER + 16 || memcmp(env, "NTVE", 4) != 0 ||
        env[5] != (pad ? ALG_AES256_KWP : ALG_AES256_KW))
        return die("not a key-wrap envelope of the expected algorithm");
    out = malloc(n);
    if (!out)
        return 2;
    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_DecryptInit_ex(ctx, pad ? EVP_aes_256_wrap_pad() : EVP_aes_256_wrap(), NULL, key,
                           NULL) != 1 ||
        EVP_DecryptUpdate(ctx, out, &l, env + ENVELOPE_HEADER, (int)(n - ENVELOPE_HEADER)) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + l, &fl) != 1)
        return die("key-wrap envelope does not unwrap with the known key");
    return write_all(STDOUT_FILENO, out, (size_t)(l + fl)) < 0 ? 2 : 0;
}

/* ---- privilege drop ---- */

static int cmd_as_user(int argc, char **argv) {
    uid_t uid;
    gid_t gid, groups[2];
    int ngroups = 0, i = 2, status;
    pid_t pid;

    if (argc < 4)
        return 2;
    uid = (uid_t)strtoul(argv[0], NULL, 10);
    gid = (gid_t)strtoul(argv[1], NULL, 10);
    groups[ngroups++] = gid;
    if (!streq(argv[2], "--")) {
        groups[ngroups++] = (gid_t)strtoul(argv[2], NULL, 10);
        i = 3;
    }
    if (i >= argc || !streq(argv[i], "--") || i + 1 >= argc)
        return 2;
    pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        if (setgroups((size_t)ngroups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
            perror("drop privileges");
            _exit(126);
        }
        if (getuid() != uid || geteuid() != uid || getgid() != gid)
            _exit(126);
        execvp(argv[i + 1], argv + i + 1);
        perror("exec");
        _exit(127);
    }
    if (waitpid(pid, &status, 0) < 0)
        return 2;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- memory scan ---- */

static int cmd_memscan(int argc, char **argv) {
    _cleanup_free_ uint8_t *needle = NULL;
    _cleanup_fclose_ FILE *maps = NULL;
    _cleanup_close_ int mem = -EBADF;
    char path[64], line[512];
    size_t nl, regions = 0, bytes = 0;
    bool found = false;

    if (argc != 2)
        return 2;
    if (hex_key(argv[1], &needle, &nl) < 0 || nl < 8)
        return 2;
    (void)snprintf(path, sizeof path, "/proc/%s/maps", argv[0]);
    maps = fopen(path, "re");
    (void)snprintf(path, sizeof path, "/proc/%s/mem", argv[0]);
    mem = open(path, O_RDONLY | O_CLOEXEC);
    if (!maps || mem < 0) {
        perror("open /proc/PID/{maps,mem}");
        return 2;
    }
    while (!found && fgets(line, sizeof line, maps)) {
        unsigned long long start, end;
        char perms[8];
        uint8_t *buf;
        size_t len, got = 0;
        if (sscanf(line, "%llx-%llx %7s", &start, &end, perms) != 3 || perms[0] != 'r')
            continue;
        if (strstr(line, "[vvar") || strstr(line, "[vsyscall]"))
            continue;
        len = (size_t)(end - start);
        if (len > (1ull << 31))
            continue; /* sanitizer shadow / huge reservations: nothing of ours lives there */
        buf = malloc(len);
        if (!buf)
            return 2;
        while (got < len) {
            ssize_t n = pread(mem, buf + got, len - got, (off_t)(start + got));
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got >= nl && memmem(buf, got, needle, nl))
            found = true;
        regions++;
        bytes += got;
        explicit_bzero(buf, len);
        free(buf);
    }
    fprintf(stderr, "memscan: %zu regions, %zu bytes scanned: %s\n", regions, bytes,
            found ? "FOUND" : "not found");
    if (regions == 0)
        return 2;
    return found ? 0 : 1;
}

/* ---- concurrency ---- */

typedef struct Stress {
    const char *sock;
    unsigned iters;
    const char *aes, *hmac, *ec;
    uint8_t aes_key[32], hmac_key[32];
    EVP_PKEY *ec_pub;
    atomic_uint ops, failures;
} Stress;

static void stress_fail(Stress *s, const char *what, int r) {
    fprintf(stderr, "stress: %s failed: %s (%s)\n", what, strerror(r < 0 ? -r : EIO),
            vhsm_last_error());
    atomic_fetch_add(&s->failures, 1);
}

static void *stress_thread(void *userdata) {
    Stress *s = userdata;
    VhsmClient *c = NULL;
    int r = vhsm_connect(s->sock, &c);
    if (r < 0) {
        stress_fail(s, "connect", r);
        return NULL;
    }
    for (unsigned i = 0; i < s->iters; i++) {
        uint8_t msg[512], aad[16], pt2[600], mac[EVP_MAX_MD_SIZE], rnd[32], zero[32] = {0};
        uint8_t *out = NULL, *back = NULL;
        size_t mlen, out_len = 0, back_len = 0, pt2_len = 0, mac_len = 0;
        uint32_t ver;

        mlen = 1 + (size_t)(i * 37 % (sizeof msg - 1));
        (void)RAND_bytes(msg, (int)mlen);
        (void)RAND_bytes(aad, sizeof aad);
        switch (i % 4) {
        case 0: /* AES-GCM: daemon round trip and an independent open with the known key */
            r = vhsm_encrypt(c, s->aes, "aes256-gcm", 0, msg, mlen, aad, sizeof aad, &out,
                             &out_len);
            if (r < 0) {
                stress_fail(s, "encrypt", r);
                break;
            }
            if (gcm_open(s->aes_key, out, out_len, aad, sizeof aad, pt2, &pt2_len, &ver) < 0 ||
                pt2_len != mlen || memcmp(pt2, msg, mlen) != 0) {
                stress_fail(s, "independent GCM open", -EKEYREJECTED);
                break;
            }
            r = vhsm_decrypt(c, s->aes, "aes256-gcm", 0, 0, out, out_len, aad, sizeof aad, &back,
                             &back_len);
            if (r < 0 || back_len != mlen || memcmp(back, msg, mlen) != 0)
                stress_fail(s, "decrypt round trip", r < 0 ? r : -EBADMSG);
            break;
        case 1: /* HMAC against EVP_Q_mac with the known key */
            r = vhsm_mac(c, s->hmac, msg, mlen, &out, &out_len);
            if (r < 0) {
                stress_fail(s, "mac", r);
                break;
            }
            if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, s->hmac_key, 32, msg, mlen, mac,
                           sizeof mac, &mac_len) ||
                out_len != ENVELOPE_HEADER + mac_len ||
                memcmp(out + ENVELOPE_HEADER, mac, mac_len) != 0)
                stress_fail(s, "HMAC comparison", -EKEYREJECTED);
            break;
        case 2: { /* ECDSA: raw DER signature verified by OpenSSL */
            _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
            r = vhsm_sign(c, s->ec, "ecdsa", VHSM_SIGN_RAW, msg, mlen, &out, &out_len);
            if (r < 0) {
                stress_fail(s, "sign", r);
                break;
            }
            if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, s->ec_pub) != 1 ||
                EVP_DigestVerify(md, out, out_len, msg, mlen) != 1)
                stress_fail(s, "OpenSSL ECDSA verification", -EKEYREJECTED);
            break;
        }
        case 3:
            r = vhsm_random(c, rnd, sizeof rnd);
            if (r < 0 || memcmp(rnd, zero, sizeof rnd) == 0)
                stress_fail(s, "random", r < 0 ? r : -EIO);
            break;
        }
        free(out);
        vhsm_free_secret(back, back_len);
        atomic_fetch_add(&s->ops, 1);
    }
    (void)vhsm_disconnect(c);
    return NULL;
}

static int cmd_stress(int argc, char **argv) {
    _cleanup_free_ uint8_t *ak = NULL, *hk = NULL;
    _cleanup_free_ char *pem = NULL;
    _cleanup_free_ pthread_t *th = NULL;
    Stress s = {0};
    VhsmClient *c = NULL;
    size_t akl, hkl;
    unsigned n;
    BIO *bio;

    if (argc != 8)
        return 2;
    s.sock = argv[0];
    n = (unsigned)strtoul(argv[1], NULL, 10);
    s.iters = (unsigned)strtoul(argv[2], NULL, 10);
    s.aes = argv[3];
    s.hmac = argv[5];
    s.ec = argv[7];
    if (n == 0 || hex_key(argv[4], &ak, &akl) < 0 || akl != 32 || hex_key(argv[6], &hk, &hkl) < 0 ||
        hkl != 32)
        return 2;
    memcpy(s.aes_key, ak, 32);
    memcpy(s.hmac_key, hk, 32);
    if (vhsm_connect(s.sock, &c) < 0 || vhsm_pubkey(c, s.ec, "pem", 0, &pem) < 0)
        return die("cannot fetch the EC public key");
    (void)vhsm_disconnect(c);
    bio = BIO_new_mem_buf(pem, -1);
    s.ec_pub = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!s.ec_pub)
        return die("bad EC public key");
    th = calloc(n, sizeof *th);
    if (!th)
        return 2;
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, stress_thread, &s) != 0)
            return die("pthread_create");
    for (unsigned i = 0; i < n; i++)
        (void)pthread_join(th[i], NULL);
    EVP_PKEY_free(s.ec_pub);
    fprintf(stderr, "stress: %u threads, %u operations verified, %u failures\n", n,
            atomic_load(&s.ops), atomic_load(&s.failures));
    return atomic_load(&s.failures) == 0 && atomic_load(&s.ops) == n * s.iters ? 0 : 1;
}

/* ---- malformed frames ---- */

static int raw_connect(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    return fd;
}

/* Waits for the daemon's answer to a bad frame: returns the status of an error reply, -1 if the
 * connection was closed without one, -2 on timeout, -3 on a success reply (a failure). */
static int await_verdict(int fd, int timeout_ms) {
    uint8_t buf[4096];
    size_t have = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        int k = poll(&p, 1, timeout_ms);
        if (k == 0)
            return -2;
        n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n <= 0)
            return have >= VHSM_HEADER_SIZE ? buf[6] << 8 | buf[7] : -1;
        have += (size_t)n;
        if (have >= VHSM_HEADER_SIZE) {
            VhsmHeader h;
            if (vhsm_header_decode(buf, &h) < 0 || h.kind != VHSM_KIND_RESPONSE)
                return -3;
            if (have >= VHSM_HEADER_SIZE + h.body_len)
                return h.code == VHSM_STATUS_OK ? -3 : h.code;
        }
    }
}

static void frame_header(uint8_t *p, uint32_t magic, uint8_t version, uint8_t kind, uint16_t code,
                         uint32_t id, uint32_t len) {
    p[0] = (uint8_t)(magic >> 24);
    p[1] = (uint8_t)(magic >> 16);
    p[2] = (uint8_t)(magic >> 8);
    p[3] = (uint8_t)magic;
    p[4] = version;
    p[5] = kind;
    p[6] = (uint8_t)(code >> 8);
    p[7] = (uint8_t)code;
    p[8] = (uint8_t)(id >> 24);
    p[9] = (uint8_t)(id >> 16);
    p[10] = (uint8_t)(id >> 8);
    p[11] = (uint8_t)id;
    p[12] = (uint8_t)(len >> 24);
    p[13] = (uint8_t)(len >> 16);
    p[14] = (uint8_t)(len >> 8);
    p[15] = (uint8_t)len;
}

static int good_client_ok(VhsmClient *good) {
    uint8_t r1[16];
    return vhsm_ping(good) == 0 && vhsm_random(good, r1, sizeof r1) == 0;
}

static int cmd_badframes(int argc, char **argv) {
    struct Case {
        const char *name;
        uint8_t data[64];
        size_t len;
        bool half_close; /* the frame is incomplete: close our side so EOF ends it */
        int expect;      /* status expected, or -1 "close" allowed too */
    } cases[16];
    size_t nc = 0;
    VhsmClient *good = NULL;
    int failures = 0;

    if (argc != 1)
        return 2;
    memset(cases, 0, sizeof cases);
#define CASE(n, hc, ex) (cases[nc].name = (n), cases[nc].half_close = (hc), cases[nc].expect = (ex))
    CASE("truncated header", true, -1);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 1, 0);
    cases[nc++].len = 7;
    CASE("truncated body", true, -1);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 2, 40);
    cases[nc++].len = 16 + 10;
    CASE("oversized length", false, VHSM_STATUS_TOO_LARGE);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 3, 0xFFFFFFF0u);
    cases[nc++].len = 16;
    CASE("bad magic", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, 0x47455420u /* "GET " */, 1, 1, VHSM_OP_PING, 4, 0);
    cases[nc++].len = 16;
    CASE("bad version", false, VHSM_STATUS_UNSUPPORTED_VERSION);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 9, 1, VHSM_OP_PING, 5, 0);
    cases[nc++].len = 16;
    CASE("response kind in a request", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 2, VHSM_OP_PING, 6, 0);
    cases[nc++].len = 16;
    CASE("garbage", false, VHSM_STATUS_BAD_REQUEST);
    memcpy(cases[nc].data, "\xde\xad\xbe\xef garbage garbage garbage \x01\x02\x03", 32);
    cases[nc++].len = 32;
    CASE("unknown opcode", false, VHSM_STATUS_UNKNOWN_OPCODE);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, 0x7777, 8, 0);
    cases[nc++].len = 16;
    CASE("TLV length overrun", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 9, 10);
    memcpy(cases[nc].data + 16, "\x00\x01\x00\x00\x01\x00xyzw", 10); /* claims 256 bytes */
    cases[nc++].len = 26;
    CASE("truncated TLV header", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 10, 3);
    memcpy(cases[nc].data + 16, "\x00\x01\x00", 3);
    cases[nc++].len = 19;
    CASE("missing key name", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_SIGN, 11, 0);
    cases[nc++].len = 16;
    CASE("u32 field of wrong size", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_RANDOM, 12, 8);
    memcpy(cases[nc].data + 16, "\x00\x13\x00\x00\x00\x02\x00\x10", 8);
    cases[nc++].len = 24;
    CASE("NUL inside a key name", false, VHSM_STATUS_BAD_REQUEST);
    frame_header(cases[nc].data, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_KEY_INFO, 13, 9);
    memcpy(cases[nc].data + 16,
           "\x00\x01\x00\x00\x00\x03"
           "a\0b",
           9);
    cases[nc++].len = 25;
#undef CASE

    if (vhsm_connect(argv[0], &good) < 0)
        return die("cannot connect the good client");
    for (size_t i = 0; i < nc; i++) {
        int fd = raw_connect(argv[0]), v;
        if (fd < 0)
            return die("cannot connect");
        if (write_all(fd, cases[i].data, cases[i].len) < 0)
            return die("write");
        if (cases[i].half_close)
            (void)shutdown(fd, SHUT_WR);
        /* The good client is served while the bad connection is open. */
        if (!good_client_ok(good)) {
            fprintf(stderr, "badframes: good client not served during '%s'\n", cases[i].name);
            failures++;
        }
        v = await_verdict(fd, 5000);
        if (v == -2 || v == -3 || (v == -1 && cases[i].expect != -1) ||
            (v >= 0 && cases[i].expect != -1 && v != cases[i].expect)) {
            fprintf(stderr, "badframes: '%s': got %d, expected %d\n", cases[i].name, v,
                    cases[i].expect);
            failures++;
        } else
            fprintf(stderr, "badframes: '%s': %s (%d)\n", cases[i].name,
                    v == -1 ? "closed" : vhsm_status_to_string((uint16_t)v), v);
        close(fd);
        if (!good_client_ok(good)) {
            fprintf(stderr, "badframes: good client not served after '%s'\n", cases[i].name);
            failures++;
        }
    }
    (void)vhsm_disconnect(good);
    return failures == 0 ? 0 : 1;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmd_stall(int argc, char **argv) {
    uint8_t hdr[16];
    VhsmClient *good = NULL;
    int fd, timeout, v, served = 0;
    int64_t t0;

    if (argc != 2)
        return 2;
    timeout = atoi(argv[1]);
    fd = raw_connect(argv[0]);
    if (fd < 0 || vhsm_connect(argv[0], &good) < 0)
        return die("cannot connect");
    frame_header(hdr, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, 1, 100);
    t0 = mono_ms();
    if (write_all(fd, hdr, sizeof hdr) < 0 || write_all(fd, "abc", 3) < 0)
        return die("write");
    /* While the stalled client holds its partial frame, others are served promptly. */
    while (mono_ms() - t0 < timeout / 2) {
        int64_t a = mono_ms();
        if (!good_client_ok(good) || mono_ms() - a > 1000)
            return die("good client not served promptly while another stalls");
        served++;
    }
    v = await_verdict(fd, timeout + 3000);
    if (v != -1)
        return die("stalled client was not disconnected after the stall timeout");
    if (mono_ms() - t0 < timeout)
        return die("stalled client disconnected before the stall timeout");
    if (!good_client_ok(good))
        return die("good client not served after the stall");
    fprintf(stderr,
            "stall: stalled client dropped after %" PRId64 " ms; %d requests served "
            "meanwhile\n",
            mono_ms() - t0, served);
    close(fd);
    (void)vhsm_disconnect(good);
    return 0;
}

/* hold SOCK NAME PTHEX HOLD_MS CTFILE: on one connection, encrypts PTHEX with key NAME, decrypts
 * the result, pings, then keeps the connection open HOLD_MS (the daemon keeps its buffers) while
 * the test scans the daemon's memory for the plaintext. Writes the envelope's ciphertext body
 * (hex) to CTFILE when the replies are in. */
static int cmd_hold(int argc, char **argv) {
    _cleanup_free_ uint8_t *pt = NULL, *ct = NULL;
    _cleanup_free_ char *hex = NULL;
    uint8_t *back = NULL;
    VhsmClient *c = NULL;
    size_t pl = 0, cl = 0, bl = 0;
    FILE *f;
    bool same;

    if (argc != 5 || hex_key(argv[2], &pt, &pl) < 0)
        return 2;
    if (vhsm_connect(argv[0], &c) < 0)
        return die("hold: cannot connect");
    if (vhsm_encrypt(c, argv[1], "aes256-gcm", 0, pt, pl, NULL, 0, &ct, &cl) < 0 || cl != 40 + pl)
        return die("hold: encrypt failed");
    if (vhsm_decrypt(c, argv[1], "aes256-gcm", 0, 0, ct, cl, NULL, 0, &back, &bl) < 0)
        return die("hold: decrypt failed");
    same = bl == pl && memcmp(back, pt, pl) == 0;
    vhsm_free_secret(back, bl);
    if (!same)
        return die("hold: decrypt gave something else");
    /* A ping's reply (a bare header) reuses the buffer without covering the plaintext. */
    if (vhsm_ping(c) < 0)
        return die("hold: ping failed");
    hex = hex_encode_alloc(ct + 40, cl - 40);
    f = fopen(argv[4], "we");
    if (!hex || !f || fprintf(f, "%s\n", hex) < 0 || fclose(f) != 0)
        return die("hold: cannot write the ciphertext file");
    usleep((useconds_t)strtoul(argv[3], NULL, 10) * 1000);
    (void)vhsm_disconnect(c);
    return 0;
}

/* Pipelining: n RANDOM(65536) requests written at once (replies 3000x larger than requests,
 * beyond the daemon's output high-water mark and the socket buffer) before reading anything;
 * every reply must arrive, in order, complete. */
static int cmd_pipeline(int argc, char **argv) {
    _cleanup_free_ uint8_t *req = NULL, *buf = NULL;
    const size_t one = 16 + 10, want = 16 + 6 + 65536;
    size_t n, have = 0;
    uint32_t next = 1;
    int fd;

    if (argc != 2)
        return 2;
    n = strtoul(argv[1], NULL, 10);
    req = malloc(n * one);
    buf = malloc(want * 4);
    if (!req || !buf || n == 0)
        return 2;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = req + i * one;
        frame_header(p, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_RANDOM, (uint32_t)(i + 1), 10);
        memcpy(p + 16, "\x00\x13\x00\x00\x00\x04\x00\x01\x00\x00", 10); /* LENGTH 65536 */
    }
    fd = raw_connect(argv[0]);
    if (fd < 0 || write_all(fd, req, n * one) < 0)
        return die("cannot send the pipelined requests");
    sleep(1); /* let the daemon hit its high-water mark and a full socket */
    while (next <= n) {
        VhsmHeader h;
        ssize_t k = recv(fd, buf + have, want * 4 - have, 0);
        if (k <= 0)
            return die("connection closed before every pipelined reply arrived");
        have += (size_t)k;
        while (have >= want) {
            if (vhsm_header_decode(buf, &h) < 0 || h.id != next || h.code != VHSM_STATUS_OK ||
                h.body_len != 6 + 65536)
                return die("pipelined reply out of order or malformed");
            memmove(buf, buf + want, have - want);
            have -= want;
            next++;
        }
    }
    close(fd);
    fprintf(stderr, "pipeline: %zu replies of 64 KiB in order\n", n);
    return 0;
}

/* Reads k complete reply frames from fd (any status) within timeout_ms. 0, or -1. */
static int read_replies(int fd, size_t k, int timeout_ms) {
    static uint8_t buf[256 * 1024];
    size_t have = 0;
    int64_t deadline = mono_ms() + timeout_ms;
    while (k > 0) {
        VhsmHeader h;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        while (k > 0 && have >= VHSM_HEADER_SIZE && vhsm_header_decode(buf, &h) == 0 &&
               have >= VHSM_HEADER_SIZE + h.body_len) {
            size_t f = VHSM_HEADER_SIZE + h.body_len;
            memmove(buf, buf + f, have - f);
            have -= f;
            k--;
        }
        if (k == 0)
            break;
        if (have >= VHSM_HEADER_SIZE && vhsm_header_decode(buf, &h) < 0)
            return -1;
        if (mono_ms() > deadline || poll(&p, 1, 200) < 0)
            return -1;
        n = recv(fd, buf + have, sizeof buf - have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return -1;
        if (n > 0)
            have += (size_t)n;
    }
    return 0;
}

/* pin SOCK burst|backlog|exact|halfclose N HOLD_MS OUTFILE: N connections that could pin
 * the daemon's input memory or a worker after they go quiet, held open HOLD_MS after "ready" is
 * written to OUTFILE:
 *   burst    40 KiB of PINGs at once (filling the daemon's buffer: a streaming client), every
 *            reply read, then idle;
 *   halfclose  (N = 1) RANDOM requests with more reply bytes than the socket holds, then
 *            shutdown(SHUT_WR), HOLD_MS without reading (written "ready" first), then every
 *            reply must arrive;
 *   backlog  RANDOM(65536) requests written until the socket is full, never reading a reply;
 *   exact    exactly 16384 bytes (the default input buffer) of slow signatures (key b-p256) and
 *            pings in one write: every reply must arrive (no connection left asleep with
 *            replies queued). */
static int cmd_pin(int argc, char **argv) {
    static uint8_t req[40 * 1024];
    const char *mode;
    _cleanup_free_ int *fd = NULL;
    unsigned n, hold_ms;
    FILE *f;

    if (argc != 5)
        return 2;
    mode = argv[1];
    n = (unsigned)strtoul(argv[2], NULL, 10);
    hold_ms = (unsigned)strtoul(argv[3], NULL, 10);
    fd = calloc(n, sizeof *fd);
    if (n == 0 || !fd)
        return 2;
    for (unsigned i = 0; i < n; i++) {
        fd[i] = raw_connect(argv[0]);
        if (fd[i] < 0)
            return die("pin: cannot connect");
        if (streq(mode, "burst")) {
            size_t k = sizeof req / VHSM_HEADER_SIZE;
            for (size_t j = 0; j < k; j++)
                frame_header(req + j * VHSM_HEADER_SIZE, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING,
                             (uint32_t)j + 1, 0);
            if (write_all(fd[i], req, k * VHSM_HEADER_SIZE) < 0 ||
                read_replies(fd[i], k, 30000) < 0)
                return die("pin: burst not answered");
        } else if (streq(mode, "halfclose")) {
            /* Replies larger than the socket holds, then a half-close, then HOLD_MS without
             * reading (the daemon must wait, not spin), then every reply is read. */
            const size_t one = VHSM_HEADER_SIZE + 10, k = 20;
            FILE *rf;
            for (size_t j = 0; j < k; j++) {
                frame_header(req + j * one, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_RANDOM, (uint32_t)j + 1,
                             10);
                memcpy(req + j * one + 16, "\x00\x13\x00\x00\x00\x04\x00\x01\x00\x00", 10);
            }
            if (write_all(fd[i], req, k * one) < 0 || shutdown(fd[i], SHUT_WR) < 0)
                return die("pin: halfclose send failed");
            rf = fopen(argv[4], "we");
            if (!rf || fprintf(rf, "ready\n") < 0 || fclose(rf) != 0)
                return die("pin: cannot write the result file");
            usleep(hold_ms * 1000);
            if (read_replies(fd[i], k, 10000) < 0)
                return die("pin: replies lost after a half-close");
            close(fd[i]);
            return 0;
        } else if (streq(mode, "backlog")) {
            /* Large writes (small ones would fill the socket with per-message overhead). */
            static uint8_t big[300 * 1024];
            const size_t one = VHSM_HEADER_SIZE + 10, k = sizeof big / one;
            uint8_t *req_b = big;
            for (size_t j = 0; j < k; j++) {
                frame_header(req_b + j * one, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_RANDOM,
                             (uint32_t)j + 1, 10);
                memcpy(req_b + j * one + 16, "\x00\x13\x00\x00\x00\x04\x00\x01\x00\x00",
                       10); /* 65536 bytes */
            }
            (void)fcntl(fd[i], F_SETFL, O_NONBLOCK);
            for (size_t sent = 0, tries = 0; sent < k * one && tries < 3;) {
                ssize_t w = send(fd[i], req_b + sent, k * one - sent, MSG_NOSIGNAL);
                if (w > 0) {
                    sent += (size_t)w;
                    continue;
                }
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    break; /* closed by the daemon (busy): counted by the check after */
                tries++;   /* full: let the daemon take what it will, then try again */
                usleep(100 * 1000);
            }
        } else if (streq(mode, "exact")) {
            VhsmBuf b = VHSM_BUF_INIT;
            size_t k = 0, sign_len = 0, pings, mlen = 64;
            uint8_t msg[96] = {0};
            /* Signature frames padded to a multiple of 16 bytes (the message length), as many
             * as fit, then pings (16 bytes each) to end at exactly 16384. */
            for (int pass = 0; pass < 2; pass++) {
                vhsm_buf_reset(&b);
                k = 0;
                while (b.len + 160 < 16384 - 16 * 8) {
                    vhsm_buf_begin(&b, VHSM_KIND_REQUEST, VHSM_OP_SIGN, (uint32_t)++k);
                    vhsm_buf_put_str(&b, VHSM_TAG_KEY_NAME, "b-p256");
                    vhsm_buf_put_str(&b, VHSM_TAG_ALGORITHM, "ecdsa");
                    vhsm_buf_put(&b, VHSM_TAG_DATA, msg, mlen);
                    if (vhsm_buf_end(&b) < 0)
                        return die("pin: cannot build a request");
                    if (pass == 0)
                        break;
                }
                if (pass == 0)
                    mlen += (VHSM_HEADER_SIZE - b.len % VHSM_HEADER_SIZE) % VHSM_HEADER_SIZE;
                sign_len = b.len;
            }
            if ((16384 - sign_len) % VHSM_HEADER_SIZE != 0)
                return die("pin: frame sizes do not add up to 16384");
            pings = (16384 - sign_len) / VHSM_HEADER_SIZE;
            for (size_t j = 0; j < pings; j++) {
                vhsm_buf_begin(&b, VHSM_KIND_REQUEST, VHSM_OP_PING, (uint32_t)++k);
                if (vhsm_buf_end(&b) < 0)
                    return die("pin: cannot build a ping");
            }
            if (b.len != 16384 || write_all(fd[i], b.data, b.len) < 0)
                return die("pin: exact write failed");
            vhsm_buf_done(&b);
            if (read_replies(fd[i], k, 10000) < 0)
                return die("pin: replies to an exactly full buffer never came");
        } else
            return 2;
    }
    f = fopen(argv[4], "we");
    if (!f || fprintf(f, "ready\n") < 0 || fclose(f) != 0)
        return die("pin: cannot write the result file");
    usleep(hold_ms * 1000);
    for (unsigned i = 0; i < n; i++)
        close(fd[i]);
    return 0;
}

/* Many connections announcing the largest frame and trickling it in, one byte short of complete.
 * Each ends "held" (everything sent, no reply: the daemon holds the partial frame), "busy"
 * (refused with status busy: a memory budget is exhausted) or "closed" (closed without a reply,
 * e.g. over the connection limit). Any other reply is a failure. */
static int cmd_trickle(int argc, char **argv) {
    enum { SENDING, HELD, BUSY, CLOSED, OTHER };
    static uint8_t chunk[32 * 1024];
    const size_t target = VHSM_MAX_BODY - 1;
    _cleanup_free_ int *fd = NULL, *state = NULL;
    _cleanup_free_ size_t *sent = NULL;
    _cleanup_free_ struct pollfd *pfd = NULL;
    unsigned n, count[OTHER + 1] = {0}, hold_ms;
    int64_t deadline;
    FILE *f;

    if (argc != 4)
        return 2;
    n = (unsigned)strtoul(argv[1], NULL, 10);
    hold_ms = (unsigned)strtoul(argv[2], NULL, 10);
    fd = calloc(n, sizeof *fd);
    state = calloc(n, sizeof *state);
    sent = calloc(n, sizeof *sent);
    pfd = calloc(n, sizeof *pfd);
    if (n == 0 || !fd || !state || !sent || !pfd)
        return 2;
    memset(chunk, 'x', sizeof chunk);
    for (unsigned i = 0; i < n; i++) {
        uint8_t hdr[VHSM_HEADER_SIZE];
        fd[i] = raw_connect(argv[0]);
        if (fd[i] < 0)
            return die("cannot connect");
        frame_header(hdr, VHSM_PROTO_MAGIC, 1, 1, VHSM_OP_PING, i + 1, VHSM_MAX_BODY);
        if (write_all(fd[i], hdr, sizeof hdr) < 0) {
            state[i] = CLOSED; /* refused at the connection limit */
            continue;
        }
    }

    /* Round robin: a chunk to every writable connection per round, until each is done. */
    deadline = mono_ms() + 60000;
    for (;;) {
        unsigned np = 0;
        for (unsigned i = 0; i < n; i++)
            if (state[i] == SENDING)
                pfd[np++] = (struct pollfd){.fd = fd[i], .events = POLLIN | POLLOUT};
        if (np == 0)
            break;
        if (mono_ms() > deadline)
            return die("trickle: connections still sending after 60 s");
        if (poll(pfd, np, 1000) < 0)
            return die("poll");
        for (unsigned i = 0, k = 0; i < n; i++) {
            if (state[i] != SENDING)
                continue;
            short re = pfd[k++].revents;
            bool answered = re & (POLLIN | POLLHUP | POLLERR);
            if (!answered && (re & POLLOUT)) {
                size_t len = MIN(sizeof chunk, target - sent[i]);
                ssize_t w = send(fd[i], chunk, len, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    answered = true; /* closed by the daemon: its reply may be queued */
                else if (w > 0 && (sent[i] += (size_t)w) == target)
                    state[i] = HELD;
            }
            if (answered) {
                int v = await_verdict(fd[i], 5000);
                state[i] = v == VHSM_STATUS_BUSY ? BUSY : v == -1 ? CLOSED : OTHER;
                if (state[i] == OTHER)
                    fprintf(stderr, "trickle: connection %u: unexpected answer %d\n", i, v);
            }
        }
    }
    /* Give the daemon time to read what is still queued, then a refusal shows up as a reply. */
    usleep(500 * 1000);
    for (unsigned i = 0; i < n; i++) {
        struct pollfd p = {.fd = fd[i], .events = POLLIN};
        if (state[i] == HELD && poll(&p, 1, 0) > 0) {
            int v = await_verdict(fd[i], 5000);
            state[i] = v == VHSM_STATUS_BUSY ? BUSY : v == -1 ? CLOSED : OTHER;
        }
        count[state[i]]++;
    }
    f = fopen(argv[3], "we");
    if (!f)
        return die("cannot write the result file");
    fprintf(f, "held=%u busy=%u closed=%u\n", count[HELD], count[BUSY], count[CLOSED]);
    if (fclose(f) != 0)
        return die("cannot write the result file");
    fprintf(stderr, "trickle: %u connections: held=%u busy=%u closed=%u other=%u\n", n, count[HELD],
            count[BUSY], count[CLOSED], count[OTHER]);
    usleep(hold_ms * 1000u);
    /* The held partial frames must still be pending: no reply, no close. */
    for (unsigned i = 0; i < n; i++) {
        struct pollfd p = {.fd = fd[i], .events = POLLIN};
        if (state[i] == HELD && poll(&p, 1, 0) != 0)
            count[OTHER]++;
        (void)close(fd[i]);
    }
    return count[OTHER] == 0 ? 0 : 1;
}

/* Lifts the soft open-file limit to the hard one (many connections per process). */
static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmd_conns(int argc, char **argv) {
    _cleanup_free_ int *fd = NULL;
    _cleanup_free_ char *dir = NULL;
    unsigned n, opened = 0, failed = 0;
    char *slash;
    struct stat st;
    int64_t deadline;
    FILE *f;

    if (argc != 4)
        return 2;
    raise_nofile();
    n = (unsigned)strtoul(argv[1], NULL, 10);
    fd = calloc(n, sizeof *fd);
    if (n == 0 || !fd)
        return 2;
    for (unsigned i = 0; i < n; i++) {
        /* connect() succeeds once the connection is queued, accepted or not. */
        fd[i] = raw_connect(argv[0]);
        if (fd[i] < 0)
            failed++;
        else
            opened++;
    }
    f = fopen(argv[2], "we");
    if (!f || fprintf(f, "opened=%u failed=%u\n", opened, failed) < 0 || fclose(f) != 0)
        return die("conns: cannot write the result file");
    /* Until STOPFILE exists, or its directory is gone (the test ended), or 60 s passed. */
    dir = strdup(argv[3]);
    if (!dir)
        return 2;
    slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    deadline = mono_ms() + 60000;
    while (stat(argv[3], &st) < 0 && stat(slash ? dir : ".", &st) == 0 && mono_ms() < deadline)
        usleep(50 * 1000);
    for (unsigned i = 0; i < n; i++)
        if (fd[i] >= 0)
            (void)close(fd[i]);
    return 0;
}

/* Reads replies on fd until want have arrived; returns how many did (fewer if the daemon closed
 * the connection), or -1 on a timeout or a reply that is not "permission denied". */
static int read_denials(int fd, unsigned want) {
    uint8_t buf[4096];
    size_t have = 0;
    unsigned got = 0;
    while (got < want) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        VhsmHeader h;
        ssize_t n;
        while (got < want && have >= VHSM_HEADER_SIZE && vhsm_header_decode(buf, &h) == 0 &&
               have >= VHSM_HEADER_SIZE + h.body_len) {
            size_t len = VHSM_HEADER_SIZE + h.body_len;
            if (h.code != VHSM_STATUS_PERMISSION_DENIED) {
                fprintf(stderr, "deny: unexpected status %u\n", h.code);
                return -1;
            }
            memmove(buf, buf + len, have - len);
            have -= len;
            got++;
        }
        if (got == want)
            break;
        if (have == sizeof buf || poll(&p, 1, 5000) <= 0)
            return -1;
        n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n <= 0)
            return (int)got; /* closed by the daemon */
        have += (size_t)n;
    }
    return (int)got;
}

static int cmd_deny(int argc, char **argv) {
    enum { BATCH = 8 };
    uint8_t req[BATCH * VHSM_HEADER_SIZE];
    unsigned denied = 0, closes = 0, run = 0, maxrun = 0;
    int64_t end;
    int fd = -1;
    FILE *f;

    if (argc != 3)
        return 2;
    if (getuid() == 0)
        return die("deny: run me as a non-root uid");
    (void)signal(SIGPIPE, SIG_IGN); /* a write to a connection the daemon closed */
    end = mono_ms() + strtol(argv[1], NULL, 10);
    for (uint32_t id = 1; mono_ms() < end;) {
        int got;
        if (fd < 0) {
            fd = raw_connect(argv[0]);
            if (fd < 0)
                return die("deny: cannot connect");
            run = 0;
        }
        for (unsigned j = 0; j < BATCH; j++)
            frame_header(req + j * VHSM_HEADER_SIZE, VHSM_PROTO_MAGIC, 1, 1,
                         VHSM_OP_ATTESTATION_SET, id++, 0);
        got = write_all(fd, req, sizeof req) < 0 ? 0 : read_denials(fd, BATCH);
        if (got < 0)
            return die("deny: no answer");
        denied += (unsigned)got;
        run += (unsigned)got;
        maxrun = MAX(maxrun, run);
        if (got < BATCH) {
            closes++;
            (void)close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        (void)close(fd);
    f = fopen(argv[2], "we");
    if (!f || fprintf(f, "denied=%u closes=%u maxrun=%u\n", denied, closes, maxrun) < 0 ||
        fclose(f) != 0)
        return die("deny: cannot write the result file");
    return 0;
}

static int cmd_churn(int argc, char **argv) {
    _cleanup_free_ int *fd = NULL;
    unsigned n;
    int64_t end;

    if (argc != 3)
        return 2;
    n = (unsigned)strtoul(argv[1], NULL, 10);
    fd = calloc(n, sizeof *fd);
    if (n == 0 || !fd)
        return 2;
    end = mono_ms() + strtol(argv[2], NULL, 10);
    while (mono_ms() < end) {
        for (unsigned i = 0; i < n; i++)
            fd[i] = raw_connect(argv[0]);
        usleep(50000); /* let the daemon accept (and refuse) them, even when loaded */
        for (unsigned i = 0; i < n; i++)
            if (fd[i] >= 0)
                (void)close(fd[i]);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: vhsm-test-helper COMMAND ARGS...\n");
        return 2;
    }
    if (streq(argv[1], "gcm-open"))
        return cmd_gcm_open(argc - 2, argv + 2);
    if (streq(argv[1], "kw-open"))
        return cmd_kw_open(argc - 2, argv + 2);
    if (streq(argv[1], "as-user"))
        return cmd_as_user(argc - 2, argv + 2);
    if (streq(argv[1], "memscan"))
        return cmd_memscan(argc - 2, argv + 2);
    if (streq(argv[1], "stress"))
        return cmd_stress(argc - 2, argv + 2);
    if (streq(argv[1], "badframes"))
        return cmd_badframes(argc - 2, argv + 2);
    if (streq(argv[1], "pin"))
        return cmd_pin(argc - 2, argv + 2);
    if (streq(argv[1], "hold"))
        return cmd_hold(argc - 2, argv + 2);
    if (streq(argv[1], "pipeline"))
        return cmd_pipeline(argc - 2, argv + 2);
    if (streq(argv[1], "stall"))
        return cmd_stall(argc - 2, argv + 2);
    if (streq(argv[1], "trickle"))
        return cmd_trickle(argc - 2, argv + 2);
    if (streq(argv[1], "conns"))
        return cmd_conns(argc - 2, argv + 2);
    if (streq(argv[1], "deny"))
        return cmd_deny(argc - 2, argv + 2);
    if (streq(argv[1], "churn"))
        return cmd_churn(argc - 2, argv + 2);
    fprintf(stderr, "vhsm-test-helper: unknown command '%s'\n", argv[1]);
    return 2;
}
