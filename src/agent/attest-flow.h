/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attestation flow shared by `nitride attest` and `nitride fetch` (attest-flow.c): challenge
 * from nitride-attestd, transfer key (vhsmd, or an ephemeral one with --no-vhsm), report with the
 * binding REPORT_DATA, attestation, and the token checked against attestd's JWKS; plus the HTTP
 * exchange, backoff and deadline helpers both commands use. The flow is described in
 * cmd-attest.c; exit codes are agent.h's.
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "snp/provider.h"
#include "vhsm/client/vhsm-client.h"
#include "web/backoff.h"

#define ATTEST_PROTO_VERSION "1.0"
#define ATTEST_DEFAULT_TIMEOUT_S 30
#define ATTEST_MAX_TIMEOUT_S 3600
#define ATTEST_BACKOFF_BASE_MS 250
#define ATTEST_BACKOFF_MAX_MS 5000
#define ATTEST_CONNECT_TIMEOUT_MS 5000
#define ATTEST_MAX_RESPONSE (256u * 1024u)
#define ATTEST_MAX_NONCE_RENEWALS 5
#define ATTEST_LAST_TRY_MS 250          /* the least time worth a last attempt */
#define ATTEST_JWKS_TTL_MS (300 * 1000) /* how long a process keeps attestd's JWKS */
#define ATTEST_JWKS_CACHE_SLOTS 8       /* attestd URLs whose JWKS a process keeps */

typedef struct AttestArgs {
    const char *attestd_url; /* as given */
    char *base;              /* the service URL without a trailing '/' */
    const char *policy_id;
    const char *provider;
    const char *sim_dir;
    const char *vhsm_socket;
    const char *ca_file;
    const char *token_out;
    bool no_vhsm, json, quiet;
    unsigned timeout_s;
} AttestArgs;

/* The state of one run: deadline, backoff, key, provider, and the last retryable failure. */
typedef struct AttestRun {
    const AttestArgs *args;
    int64_t deadline_ms; /* CLOCK_MONOTONIC */
    NtBackoff backoff;
    unsigned attempts;
    SnpProvider *provider;
    json_t *tee_pubkey; /* public JWK */
    VhsmClient *vhsm;   /* see attest_vhsm() */
    long retry_after_s; /* of the last answer, -1 if none */
    bool gave_up;       /* the deadline ran out on transient failures (service unavailable) */
    /* > 0: a service that refuses the connection (nothing listening: it is down) this many times
     * in a row ends the run at once with NT_EXIT_UNAVAILABLE and refused_out set, instead of
     * being retried until the deadline (not logged: the caller reports last_error); 0 (the
     * commands' default): retried like the other transient failures. */
    unsigned max_refused;
    unsigned refused; /* connection refusals in a row */
    bool refused_out; /* the run ended on max_refused; last_error names the service and URL */
    char last_error[512];
} AttestRun;

/* What a step tells the main loop. */
enum {
    STEP_OK = 0,
    STEP_RETRY = -1,      /* transient: back off, start again from a new challenge */
    STEP_RENONCE = -2,    /* the nonce expired: a new challenge at once */
    STEP_RETRY_SAME = -3, /* 429: the request was not handled; back off and send it again */
    /* > 0: final, the value is the exit code (NT_EXIT_*) */
};

/* The options `nitride attest` and `nitride fetch` share (--attestd, --token-out, -q, --socket,
 * --provider, --sim, --ca, --timeout): put ATTEST_COMMON_OPTIONS in the
 * getopt table and read the command line with attest_getopt(). */
enum {
    ATTEST_ARG_ATTESTD = 0x200,
    ATTEST_ARG_TOKEN_OUT,
    ATTEST_ARG_VHSM_SOCKET,
    ATTEST_ARG_PROVIDER,
    ATTEST_ARG_SIM,
    ATTEST_ARG_CA,
    ATTEST_ARG_TIMEOUT,
};
/* clang-format off */
#define ATTEST_COMMON_OPTIONS                                                                      \
    {"attestd", required_argument, NULL, ATTEST_ARG_ATTESTD},                                      \
    {"token-out", required_argument, NULL, ATTEST_ARG_TOKEN_OUT},                                  \
    {"quiet", no_argument, NULL, 'q'},                                                             \
    {"socket", required_argument, NULL, ATTEST_ARG_VHSM_SOCKET},                                   \
    {"vhsm-socket", required_argument, NULL, ATTEST_ARG_VHSM_SOCKET},                              \
    {"provider", required_argument, NULL, ATTEST_ARG_PROVIDER},                                    \
    {"sim", required_argument, NULL, ATTEST_ARG_SIM},                                              \
    {"sim-dir", required_argument, NULL, ATTEST_ARG_SIM},                                          \
    {"ca", required_argument, NULL, ATTEST_ARG_CA},                                                \
    {"timeout", required_argument, NULL, ATTEST_ARG_TIMEOUT}
/* clang-format on */

#define ATTEST_RUN_INIT(a)                                                                         \
    {                                                                                              \
        .args = (a),                                                                               \
        .backoff = {.base_ms = ATTEST_BACKOFF_BASE_MS, .max_ms = ATTEST_BACKOFF_MAX_MS},           \
        .retry_after_s = -1,                                                                       \
    }

#define ATTEST_OPT_INVALID 0x2ff
/* getopt_long(argc, argv, "qh", options) that applies the common options to a itself: returns
 * the next other option, -1 at the end, or ATTEST_OPT_INVALID after logging a common option's
 * invalid value. */
int attest_getopt(int argc, char **argv, const struct option *options, AttestArgs *a);
/* An option's text value: 1 to max characters. false after logging otherwise. */
bool attest_text_option_ok(const char *option, const char *arg, size_t max);
/* After the command line: checks the common options together, checks --attestd (required) into
 * a->base, starts the deadline and opens the evidence provider. NT_EXIT_OK or an exit code. */
int attest_run_start(AttestRun *run, AttestArgs *a);
/* Frees what attest_run_start() and the flow allocated. */
void attest_run_done(AttestRun *run, AttestArgs *a);

int64_t attest_now_ms(void); /* CLOCK_MONOTONIC */
int64_t attest_remaining_ms(const AttestRun *run);

/* Accepts https:// URLs, and http:// ones whose host is a loopback name or address (option names
 * the command-line option in messages). Returns NT_EXIT_OK with the URL without trailing '/' in
 * *ret_base, or an exit code (logged). */
int attest_check_url(const char *url, const char *option, char **ret_base);

/* One HTTP exchange with base + path and a JSON answer, with "Authorization: Bearer" when bearer
 * is given. STEP_OK with *ret_status and *ret_reply (a JSON object, or NULL if the body is not
 * one; run->retry_after_s from its Retry-After), STEP_RETRY (transient transport failure,
 * remembered in run->last_error) or an exit code (logged). */
int attest_exchange_at(AttestRun *run, const char *base, const char *bearer, const char *what,
                       const char *method, const char *path, const json_t *req, long *ret_status,
                       json_t **ret_reply);

const char *attest_jstr(const json_t *o, const char *key);
/* Prints a service's refusal: its error, and rule, check, expected and found when given; the
 * thread's last refusal (attest_last_refusal) keeps them for callers that report it otherwise. */
void attest_print_refusal(const char *service, const char *what, long status, const json_t *reply);
typedef struct AttestRefusal {
    char service[16], rule[64], check[64], error[160], expected[200], found[200];
} AttestRefusal;
const AttestRefusal *attest_last_refusal(void);
void attest_clear_refusal(void);
json_t *attest_cpu0_of(const json_t *claims);
json_t *attest_annotated_evidence_of(const json_t *claims);

/* Sleeps before the next try. NT_EXIT_OK to go on, or NT_EXIT_IO (logged) when the deadline
 * leaves no time for another one. */
int attest_wait_for_retry(AttestRun *run);
/* After a step's result *r: true to send the same request again, after a wait (see
 * attest-flow.c). When the deadline allows no further wait, *r becomes NT_EXIT_IO. */
bool attest_again(AttestRun *run, int *r, bool new_challenge_on_retry);

/* The whole attestation: challenge, transfer key (kept in run->tee_pubkey), evidence, token,
 * token verified against attestd's JWKS and bound to our key and nonce. NT_EXIT_OK with the token
 * and its claims, or an exit code (logged). */
int attest_obtain_token(AttestRun *run, char **ret_token, json_t **ret_claims);

/* attestd JWKS downloads by this process (all runs), and forgetting the kept sets. */
uint64_t attest_jwks_fetches(void);
void attest_jwks_cache_clear(void);

/* The run's vhsmd connection, opened on first use and used by all of the run's steps (transfer
 * key, import, verdict): 0 with *ret (owned by run; closed by attest_run_done() or
 * attest_vhsm_close()) or a negative errno. Its timeout is set from the run's deadline. */
int attest_vhsm(AttestRun *run, VhsmClient **ret);
void attest_vhsm_close(AttestRun *run);

/* Hands the token to vhsmd as its attestation verdict; failures are warnings. */
void attest_record_verdict_vhsm(AttestRun *run, const char *token);
