/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The daemon skeleton shared by Nitride's HTTP services (nitride-attestd, nitride-kmsd): the
 * command-line options they all take, the serve loop (HTTP/TLS server from the SvcConfig, signals
 * taken by sigwait(), --port-file, the "ready" line), `keys rotate`, the throttled signing-key
 * refresh and the /metrics reply. A service keeps its own commands, routes and messages; what it
 * shares here behaves the same in every service, so that a third one cannot drift.
 */
#pragma once

#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "token/keys.h"
#include "web/metrics.h"
#include "web/server.h"
#include "web/svc-conf.h"

/* Exit codes of every service (documented in their --help). */
enum { SVC_EXIT_USAGE = 3, SVC_EXIT_CONFIG = 4, SVC_EXIT_RUNTIME = 5 };

/* The options every service takes (getopt_long values; a service numbers its own from
 * _SVC_ARG_MAX). */
enum {
    SVC_ARG_CONFIG = 0x100,
    SVC_ARG_LISTEN,
    SVC_ARG_PLAIN,
    SVC_ARG_PORT_FILE,
    SVC_ARG_THREADS,
    _SVC_ARG_MAX,
};

#define SVC_OPTIONS                                                                                \
    {"help", no_argument, NULL, 'h'}, {"verbose", no_argument, NULL, 'v'},                         \
        {"config", required_argument, NULL, SVC_ARG_CONFIG},                                       \
        {"listen", required_argument, NULL, SVC_ARG_LISTEN},                                       \
        {"plain-http", no_argument, NULL, SVC_ARG_PLAIN},                                          \
        {"port-file", required_argument, NULL, SVC_ARG_PORT_FILE}, {                               \
        "threads", required_argument, NULL, SVC_ARG_THREADS                                        \
    }

typedef struct SvcArgs {
    const char *cmd; /* "serve" unless argv[1] names a command */
    const char *sub; /* the subcommand of a command that has them ("keys rotate"), or NULL */
    const char *config, *listen, *port_file;
    bool plain, verbose;
    unsigned threads; /* 0: not given */
} SvcArgs;

/* Takes "COMMAND [SUBCOMMAND]" off the front of argv (a subcommand only after a command named in
 * the NULL-terminated with_sub). Sets args->cmd ("serve" by default) and args->sub. */
void svc_args_command(SvcArgs *args, int *argc, char ***argv, const char *const *with_sub);
/* Takes option c (a getopt_long value) if it is one of SVC_OPTIONS but -h. Returns 1 if taken, 0
 * if it is not one of them, or -EINVAL (logged) for a bad value. */
int svc_args_option(SvcArgs *args, int c, const char *arg);
/* After getopt (argv[optind] on): nothing left over, --config given. Returns 0 or SVC_EXIT_USAGE
 * (logged). */
int svc_args_check(const SvcArgs *args, int argc, char **argv);
/* Applies --listen, --plain-http (refused when the file has tls) and --threads to c. Returns 0,
 * SVC_EXIT_USAGE or SVC_EXIT_RUNTIME (logged). */
int svc_args_apply(const SvcArgs *args, SvcConfig *c);

/* A service's own option c (one that is not in SVC_OPTIONS): returns 0 when taken, < 0 to refuse
 * it (logged by the callee when it says more than getopt did). */
typedef int SvcOptionFn(int c, const char *arg, void *userdata);
/* The whole command line: COMMAND [SUBCOMMAND] (svc_args_command()), getopt_long() over options
 * (SVC_OPTIONS taken by svc_args_option(), -h prints help to stdout, the rest go to option; NULL:
 * the service has none), then svc_args_check(). Returns -1 to go on, or the exit code to return
 * now (0 after --help, SVC_EXIT_USAGE). */
int svc_args_parse(SvcArgs *args, int argc, char **argv, const struct option *options,
                   const char *const *with_sub, void (*help)(FILE *f), SvcOptionFn *option,
                   void *userdata);

/* Before serving: nt_harden_process() (no core dumps, not dumpable); a failure is logged only. */
void svc_harden(void);

/* Logs err (or strerror(-r) without it) and returns exit_code. */
int svc_fail(int r, const char *err, int exit_code);

typedef struct SvcServe {
    const char *metrics_prefix;    /* "nitride_attestd" */
    const char *tls_client_ca;     /* client certificates requested with this CA, or NULL */
    NtMetrics *metrics;            /* the server counts requests here */
    NtWebServer **web;             /* the server is stored here before routes() runs */
    int (*routes)(void *userdata); /* adds the routes: 0 or -errno */
    void (*ready)(void *userdata, unsigned port); /* logs the "ready" line */
    void (*reload)(void *userdata);               /* SIGHUP */
    void *userdata;
} SvcServe;

/* Runs the service until SIGTERM/SIGINT: creates the server from c, adds the routes, blocks
 * SIGHUP/SIGTERM/SIGINT (taken here by sigwait(), inherited by the server's threads), ignores
 * SIGPIPE, starts, writes the bound port to port_file (when set), calls ready(), then reload() on
 * each SIGHUP. Stops the server after the requests in flight. Returns 0 or an exit code (logged).
 */
int svc_serve(const SvcConfig *c, const SvcServe *s, const char *port_file);

/* `NAME keys rotate`: adds a key to dir (created 0700 when mkdir is set) for alg ("ES256" or
 * "ES384"), published now and signing after lead. what ("signing", "release") and dir_key
 * ("token.keys_dir") name them in messages. Returns 0 or an exit code (logged). */
int svc_keys_rotate(const char *name, const SvcArgs *args, const char *dir, const char *dir_key,
                    const char *what, bool mkdir, const char *alg, int64_t lead, int64_t lifetime);

/* Keys rotated by another process (`keys rotate`) show up within 10 seconds: the service calls
 * svc_keys_refresh_maybe() before it uses its keys. */
typedef struct SvcKeysRefresh {
    pthread_mutex_t lock;
    time_t last;
} SvcKeysRefresh;
void svc_keys_refresh_init(SvcKeysRefresh *k, time_t now);
void svc_keys_refresh_done(SvcKeysRefresh *k);
/* Refreshes keys from dir (NULL: keys from files, nothing to do) when 10 s have passed since the
 * last time (or the clock went back). A failure is logged ("what keys") and the keys stay.
 * Returns true when it refreshed. */
bool svc_keys_refresh_maybe(SvcKeysRefresh *k, NtSigningKeys *keys, const char *dir,
                            const char *what, time_t now);

typedef struct SvcMetricFamily {
    const char *name, *type, *help;
} SvcMetricFamily;
/* Declares the n families (no labels declared up front). Returns 0 or -errno. */
int svc_metrics_declare(NtMetrics *m, const SvcMetricFamily *fams, size_t n);
/* GET /metrics: m rendered in Prometheus text format. */
int svc_reply_metrics(NtMetrics *m, NtWebReply *reply);
