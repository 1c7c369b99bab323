/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kds-server: a small AMD-KDS-compatible HTTP server for tests, on 127.0.0.1.
 *
 *   kds-server --chip DIR [--chip DIR...] [--crl FILE] [--port-file FILE]
 *
 * Serves simulated chips (snp/sim.h) by AMD's URL scheme:
 *   GET /vcek/v1/{Product}/{hwid hex}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..  (Turin: fmcSPL
 *       first, 16 hex digits of hwID) -> the chip's vcek.pem as DER. The parameters must come in
 *       AMD's order, decimal; a hwID or TCB that no loaded chip has (another TCB than the chip's
 *       current one included: this server does not re-issue) -> 404. A malformed query -> 400.
 *   GET /vcek/v1/{Product}/cert_chain -> ask.pem + ark.pem;  /vlek/v1/{Product}/cert_chain ->
 *       asvk.pem + ark.pem (404 without a VLEK chip);  /vcek/v1/{Product}/crl -> the --crl FILE
 *       (the same file for every product; 404 without one).
 * Fault injection, for the requests above (not for /control and /stats):
 *   POST /control?mode=ok|429|404|500|slow|garbage[&count=N][&retry_after=S][&delay_ms=M]
 *       the next N requests (0 or absent: all until the next /control) get the mode: 429 (with
 *       Retry-After: S when given), 404, 500, "slow" (the normal answer after delay_ms, default
 *       3000), "garbage" (200 with an HTML error page as body). Then "ok" again.
 *   GET /stats -> {"total":N,"vcek":N,"chain":N,"crl":N,"other":N,"modes":{"ok":N,...},
 *       "last_uri":"..."} (requests by path kind, answers by mode, the last KDS request's URI with
 *       its query); POST /stats/reset zeroes the counters.
 * Prints the port on stdout ("port N") and writes it to --port-file (atomically) when given.
 * Runs until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <microhttpd.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/macro.h"
#include "snp/report.h"
#include "snp/sim.h"
#include "verify/chain.h"

#define MAX_CHIPS 16

typedef struct Chip {
    SnpProduct product;
    uint8_t hwid[64];
    size_t hwid_len;
    SnpTcb tcb;
    uint8_t *vcek_der;
    size_t vcek_len;
    char *chain; /* ask + ark PEM */
    char *vlek_chain;
} Chip;

static Chip chips[MAX_CHIPS];
static size_t n_chips;
static uint8_t *crl;
static size_t crl_len;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char mode[16] = "ok";
static long mode_left; /* 0: unlimited */
static long retry_after = -1, delay_ms = 3000;
static json_t *stats_modes;
static long n_total, n_vcek, n_chain, n_crl, n_other;
static char last_uri[1024];

static char *read_text(const char *dir, const char *name) {
    char path[4096];
    uint8_t *d = NULL;
    size_t n;
    (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (read_full_file(path, 1 << 20, &d, &n) < 0)
        return NULL;
    return (char *)d; /* NUL-terminated by read_full_file */
}

static char *concat(const char *a, const char *b) {
    char *s = NULL;
    if (!a || !b || asprintf(&s, "%s%s", a, b) < 0)
        return NULL;
    return s;
}

static int load_chip(const char *dir) {
    _cleanup_(sim_chip_freep) SimChip *sc = NULL;
    _cleanup_free_ char *vcek = NULL, *ask = NULL, *ark = NULL, *asvk = NULL;
    Chip *c = &chips[n_chips];
    X509 *x;
    BIO *b;
    NtAmdExt e;
    unsigned char *der = NULL;
    int r, len;

    if (n_chips >= MAX_CHIPS)
        return -E2BIG;
    r = sim_chip_load(dir, &sc);
    if (r < 0)
        return r;
    c->product = sim_chip_product(sc);
    vcek = read_text(dir, "vcek.pem");
    ask = read_text(dir, "ask.pem");
    ark = read_text(dir, "ark.pem");
    asvk = read_text(dir, "asvk.pem");
    if (!vcek || !ask || !ark)
        return -ENOENT;
    b = BIO_new_mem_buf(vcek, -1);
    x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x)
        return -EBADMSG;
    r = nt_cert_amd_ext(x, &e);
    len = i2d_X509(x, &der);
    X509_free(x);
    if (r < 0 || len <= 0)
        return -EBADMSG;
    memcpy(c->hwid, e.hwid, e.hwid_len);
    c->hwid_len = e.hwid_len;
    c->tcb = e.spl;
    c->vcek_der = der;
    c->vcek_len = (size_t)len;
    c->chain = concat(ask, ark);
    c->vlek_chain = asvk ? concat(asvk, ark) : NULL;
    n_chips++;
    return 0;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const void *body,
                               size_t len, const char *ctype) {
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (ctype)
        (void)MHD_add_response_header(resp, "Content-Type", ctype);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status, const char *s) {
    return respond(conn, status, s, strlen(s), "text/plain");
}

/* Query parameters in the order received. */
typedef struct Query {
    char keys[8][32];
    char vals[8][32];
    int n;
    bool overflow;
} Query;

static enum MHD_Result query_it(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value) {
    Query *q = cls;
    if (q->n >= 8 || strlen(key) >= 32 || !value || strlen(value) >= 32) {
        q->overflow = true;
        return MHD_NO;
    }
    (void)snprintf(q->keys[q->n], 32, "%s", key);
    (void)snprintf(q->vals[q->n], 32, "%s", value);
    q->n++;
    return MHD_YES;
}

static int parse_spl(const char *s) {
    char *end;
    long v;
    if (!*s || strlen(s) > 3)
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 255)
        return -1;
    return (int)v;
}

/* The VCEK request: returns the HTTP status and sets *ret_chip. */
static unsigned vcek_lookup(struct MHD_Connection *conn, SnpProduct p, const char *hex,
                            const Chip **ret_chip) {
    static const char *const order_mg[] = {"blSPL", "teeSPL", "snpSPL", "ucodeSPL"};
    static const char *const order_t[] = {"fmcSPL", "blSPL", "teeSPL", "snpSPL", "ucodeSPL"};
    const char *const *order = p == SNP_PRODUCT_TURIN ? order_t : order_mg;
    int n_order = p == SNP_PRODUCT_TURIN ? 5 : 4;
    size_t hl = p == SNP_PRODUCT_TURIN ? 8 : 64;
    uint8_t hwid[64];
    int v[5];
    Query q = {.n = 0};
    SnpTcb t = {0};

    if (strlen(hex) != hl * 2 || hex_decode_exact(hex, hwid, hl) < 0)
        return 400;
    (void)MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_it, &q);
    if (q.overflow || q.n != n_order)
        return 400;
    for (int i = 0; i < n_order; i++) {
        if (!streq(q.keys[i], order[i]))
            return 400;
        v[i] = parse_spl(q.vals[i]);
        if (v[i] < 0)
            return 400;
    }
    if (p == SNP_PRODUCT_TURIN)
        t = (SnpTcb){.fmc = (uint8_t)v[0],
                     .bootloader = (uint8_t)v[1],
                     .tee = (uint8_t)v[2],
                     .snp = (uint8_t)v[3],
                     .microcode = (uint8_t)v[4]};
    else
        t = (SnpTcb){.bootloader = (uint8_t)v[0],
                     .tee = (uint8_t)v[1],
                     .snp = (uint8_t)v[2],
                     .microcode = (uint8_t)v[3]};
    for (size_t i = 0; i < n_chips; i++) {
        const Chip *c = &chips[i];
        if (c->product != p || c->hwid_len < hl || memcmp(c->hwid, hwid, hl) != 0)
            continue;
        if (c->tcb.bootloader != t.bootloader || c->tcb.tee != t.tee || c->tcb.snp != t.snp ||
            c->tcb.microcode != t.microcode || (p == SNP_PRODUCT_TURIN && c->tcb.fmc != t.fmc))
            continue;
        *ret_chip = c;
        return 200;
    }
    return 404;
}

static const Chip *chip_for_product(SnpProduct p, bool vlek) {
    for (size_t i = 0; i < n_chips; i++)
        if (chips[i].product == p && (!vlek || chips[i].vlek_chain))
            return &chips[i];
    return NULL;
}

static enum MHD_Result handle_control(struct MHD_Connection *conn) {
    const char *m = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "mode");
    const char *cnt = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "count");
    const char *ra = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "retry_after");
    const char *dl = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "delay_ms");

    if (!m || !(streq(m, "ok") || streq(m, "429") || streq(m, "404") || streq(m, "500") ||
                streq(m, "slow") || streq(m, "garbage")))
        return respond_text(conn, 400, "bad mode\n");
    pthread_mutex_lock(&lock);
    (void)snprintf(mode, sizeof(mode), "%s", m);
    mode_left = cnt ? atol(cnt) : 0;
    retry_after = ra ? atol(ra) : -1;
    delay_ms = dl ? atol(dl) : 3000;
    pthread_mutex_unlock(&lock);
    return respond_text(conn, 200, "ok\n");
}

static enum MHD_Result handle_stats(struct MHD_Connection *conn) {
    json_auto_t *j = NULL;
    char *s;
    enum MHD_Result ret;

    pthread_mutex_lock(&lock);
    j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:O,s:s}", "total", (json_int_t)n_total, "vcek",
                  (json_int_t)n_vcek, "chain", (json_int_t)n_chain, "crl", (json_int_t)n_crl,
                  "other", (json_int_t)n_other, "modes", stats_modes, "last_uri", last_uri);
    pthread_mutex_unlock(&lock);
    s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!s)
        return respond_text(conn, 500, "oom\n");
    ret = respond(conn, 200, s, strlen(s), "application/json");
    free(s);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls) {
    static int first;
    char product[16], rest[200], cur[16];
    long ra, dly;
    bool vlek;
    SnpProduct p;
    const Chip *c = NULL;
    unsigned status;
    json_t *cntv;

    if (*req_cls != &first) { /* headers only: wait for the body (if any) */
        *req_cls = &first;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (streq(url, "/control"))
        return streq(method, "POST") ? handle_control(conn) : respond_text(conn, 405, "POST\n");
    if (streq(url, "/stats"))
        return handle_stats(conn);
    if (streq(url, "/stats/reset") && streq(method, "POST")) {
        pthread_mutex_lock(&lock);
        n_total = n_vcek = n_chain = n_crl = n_other = 0;
        (void)json_object_clear(stats_modes);
        pthread_mutex_unlock(&lock);
        return respond_text(conn, 200, "ok\n");
    }
    if (!streq(method, "GET"))
        return respond_text(conn, 405, "GET\n");

    /* Count and pick the mode for this request. */
    pthread_mutex_lock(&lock);
    n_total++;
    if (strstr(url, "/cert_chain"))
        n_chain++;
    else if (strstr(url, "/crl"))
        n_crl++;
    else if (strncmp(url, "/vcek/v1/", 9) == 0)
        n_vcek++;
    else
        n_other++;
    (void)snprintf(cur, sizeof(cur), "%s", mode);
    ra = retry_after;
    dly = delay_ms;
    if (mode_left > 0 && --mode_left == 0)
        (void)snprintf(mode, sizeof(mode), "ok");
    cntv = json_object_get(stats_modes, cur);
    (void)json_object_set_new(stats_modes, cur,
                              json_integer(cntv ? json_integer_value(cntv) + 1 : 1));
    pthread_mutex_unlock(&lock);

    if (streq(cur, "429")) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            strlen("slow down\n"), (void *)"slow down\n", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret;
        char v[32];
        if (!resp)
            return MHD_NO;
        if (ra >= 0) {
            (void)snprintf(v, sizeof(v), "%ld", ra);
            (void)MHD_add_response_header(resp, "Retry-After", v);
        }
        ret = MHD_queue_response(conn, 429, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (streq(cur, "404"))
        return respond_text(conn, 404, "Not Found\n");
    if (streq(cur, "500"))
        return respond_text(conn, 500, "Internal Server Error\n");
    if (streq(cur, "garbage"))
        return respond_text(conn, 200,
                            "<html><body><h1>Service Unavailable</h1>Try again later.</body>"
                            "</html>\n");
    if (streq(cur, "slow"))
        (void)usleep((useconds_t)dly * 1000u);

    vlek = strncmp(url, "/vlek/v1/", 9) == 0;
    if (!vlek && strncmp(url, "/vcek/v1/", 9) != 0)
        return respond_text(conn, 404, "Not Found\n");
    if (sscanf(url + 9, "%15[^/]/%199s", product, rest) != 2)
        return respond_text(conn, 404, "Not Found\n");
    p = snp_product_from_string(product);
    if (p < 0 || !streq(product, snp_product_to_string(p)))
        return respond_text(conn, 404, "Not Found\n");
    if (streq(rest, "cert_chain")) {
        c = chip_for_product(p, vlek);
        if (!c)
            return respond_text(conn, 404, "Not Found\n");
        return respond_text(conn, 200, vlek ? c->vlek_chain : c->chain);
    }
    if (vlek)
        return respond_text(conn, 404, "Not Found\n");
    if (streq(rest, "crl")) {
        if (!crl)
            return respond_text(conn, 404, "Not Found\n");
        return respond(conn, 200, crl, crl_len, "application/pkix-crl");
    }
    status = vcek_lookup(conn, p, rest, &c);
    if (status != 200)
        return respond_text(conn, status, status == 400 ? "Bad Request\n" : "Not Found\n");
    return respond(conn, 200, c->vcek_der, c->vcek_len, "application/x-x509-ca-cert");
}

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *con) {
    /* last_uri is the last KDS request, not the /stats call that reads it. */
    if (strncmp(uri, "/stats", 6) != 0 && strncmp(uri, "/control", 8) != 0) {
        pthread_mutex_lock(&lock);
        (void)snprintf(last_uri, sizeof(last_uri), "%s", uri);
        pthread_mutex_unlock(&lock);
    }
    fprintf(stderr, "kds-server: %s\n", uri);
    return NULL;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"chip", required_argument, NULL, 'c'},
        {"crl", required_argument, NULL, 'r'},
        {"port-file", required_argument, NULL, 'p'},
        {},
    };
    const char *port_file = NULL;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    sigset_t ss;
    int c, r, sig;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        switch (c) {
        case 'c':
            r = load_chip(optarg);
            if (r < 0) {
                fprintf(stderr, "kds-server: cannot load chip '%s': %s\n", optarg, strerror(-r));
                return 1;
            }
            break;
        case 'r':
            r = read_full_file(optarg, 1 << 20, &crl, &crl_len);
            if (r < 0) {
                fprintf(stderr, "kds-server: cannot read CRL '%s': %s\n", optarg, strerror(-r));
                return 1;
            }
            break;
        case 'p':
            port_file = optarg;
            break;
        default:
            fprintf(stderr, "usage: kds-server --chip DIR... [--crl FILE] [--port-file FILE]\n");
            return 2;
        }
    }
    stats_modes = json_object();
    if (!stats_modes)
        return 1;

    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    pthread_sigmask(SIG_BLOCK, &ss, NULL); /* before MHD starts its threads */

    {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        d = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
            NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_URI_LOG_CALLBACK,
            uri_log, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    }
    if (!d) {
        fprintf(stderr, "kds-server: cannot start\n");
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info) {
        MHD_stop_daemon(d);
        return 1;
    }
    printf("port %u\n", (unsigned)info->port);
    fflush(stdout);
    if (port_file) {
        char buf[16];
        int m = snprintf(buf, sizeof(buf), "%u\n", (unsigned)info->port);
        r = write_file_atomic(port_file, buf, (size_t)m, 0644);
        if (r < 0) {
            fprintf(stderr, "kds-server: cannot write '%s': %s\n", port_file, strerror(-r));
            MHD_stop_daemon(d);
            return 1;
        }
    }
    (void)sigwait(&ss, &sig);
    MHD_stop_daemon(d);
    for (size_t i = 0; i < n_chips; i++) {
        OPENSSL_free(chips[i].vcek_der);
        free(chips[i].chain);
        free(chips[i].vlek_chain);
    }
    free(crl);
    json_decref(stats_modes);
    return 0;
}
