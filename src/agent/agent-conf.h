/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `nitride agent` configuration file (docs/agent.md "Configuration"): JSON, read strictly
 * (an unknown member, a wrong type or a value out of range is an error naming it; nothing is
 * defaulted silently except the documented defaults).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define AGENT_MAX_SECRETS 256  /* vhsmd's limit of patterns per agent connection */
#define AGENT_MAX_KEY_NAME 132 /* "kms/" + 128 */

typedef struct AgentService {
    char *url; /* https:// (http:// for loopback only, checked at start) */
    char *ca;  /* CA certificates (PEM) to verify its TLS certificate; NULL: system store */
} AgentService;

typedef struct AgentSecret {
    char *key;                 /* kms/NAME */
    char *secret_id;           /* kmsd's id */
    bool prefetch;             /* fetch at start */
    char *volume_uuid;         /* NULL or sent with the release request */
    AgentService attestd, kms; /* the secret's own, or copies of the top-level ones */
} AgentSecret;

typedef struct AgentConf {
    char *vhsm_socket; /* NULL: $VHSM_SOCKET or the default */
    unsigned deadline_s, initial_ms, max_ms;
    unsigned refresh_before_s;
    AgentSecret *secrets;
    size_t n_secrets;
} AgentConf;

#define AGENT_DEFAULT_DEADLINE_S 30
#define AGENT_DEFAULT_INITIAL_MS 100
#define AGENT_DEFAULT_MAX_MS 5000
#define AGENT_DEFAULT_REFRESH_BEFORE_S 60

/* Parses doc into *ret. 0, or -EINVAL / -ENOMEM with err naming the member and the problem. */
int agent_conf_parse(const json_t *doc, AgentConf *ret, char err[static 512]);
/* Reads and parses path (at most 1 MiB). 0, or a negative errno with err set. */
int agent_conf_load(const char *path, AgentConf *ret, char err[static 512]);
void agent_conf_clear(AgentConf *c);
/* kms/NAME with NAME 1..128 of [A-Za-z0-9._:@-], not starting with '.' or '-'. */
bool agent_key_name_is_valid(const char *key);
