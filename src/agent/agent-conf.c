/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `nitride agent` configuration (agent-conf.h). Every member is checked for its type and
 * range here; URLs are checked again (scheme, loopback-only plain http) when the agent starts.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent-conf.h"
#include "core/macro.h"
#include "kmsd/store.h"

_printf_(2, 3) static int conf_error(char err[static 512], const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, 512, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Fails on a member of o not in known (NULL-terminated). */
static int check_members(const json_t *o, const char *where, const char *const *known,
                         char err[static 512]) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = streq(k, known[i]);
        if (!ok)
            return conf_error(err, "%s: unknown member \"%.64s\"", where, k);
    }
    return 0;
}

/* A string member: absent -> *ret NULL (error if required); 1..max bytes, no control chars. */
static int get_string(const json_t *o, const char *where, const char *key, bool required,
                      size_t max, char **ret, char err[static 512]) {
    const json_t *v = json_object_get(o, key);
    const char *s;
    char *copy;

    if (!v) {
        if (required)
            return conf_error(err, "%s: \"%s\" is required", where, key);
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return conf_error(err, "%s: \"%s\" must be a string", where, key);
    s = json_string_value(v);
    if (!s[0] || strlen(s) > max || strlen(s) != json_string_length(v))
        return conf_error(err, "%s: \"%s\" must be 1 to %zu characters", where, key, max);
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return conf_error(err, "%s: \"%s\" holds a control character", where, key);
    copy = strdup(s);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

static int get_uint(const json_t *o, const char *where, const char *key, unsigned min, unsigned max,
                    unsigned *ret, char err[static 512]) {
    const json_t *v = json_object_get(o, key);
    json_int_t n;
    if (!v)
        return 0; /* keeps the default in *ret */
    if (!json_is_integer(v))
        return conf_error(err, "%s: \"%s\" must be an integer", where, key);
    n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max)
        return conf_error(err, "%s: \"%s\" must be %u to %u", where, key, min, max);
    *ret = (unsigned)n;
    return 0;
}

static void service_clear(AgentService *s) {
    free(s->url);
    free(s->ca);
    *s = (AgentService){};
}

static int parse_service(const json_t *o, const char *where, AgentService *ret,
                         char err[static 512]) {
    static const char *const known[] = {"url", "ca", NULL};
    AgentService s = {};
    int r;

    if (!json_is_object(o))
        return conf_error(err, "%s must be an object {\"url\", \"ca\"}", where);
    if ((r = check_members(o, where, known, err)) < 0 ||
        (r = get_string(o, where, "url", true, 2048, &s.url, err)) < 0 ||
        (r = get_string(o, where, "ca", false, 4096, &s.ca, err)) < 0) {
        service_clear(&s);
        return r;
    }
    if (strncmp(s.url, "https://", 8) != 0 && strncmp(s.url, "http://", 7) != 0) {
        service_clear(&s);
        return conf_error(err, "%s: \"url\" must be an https:// URL", where);
    }
    *ret = s;
    return 0;
}

static int service_copy(const AgentService *from, AgentService *to) {
    to->url = from->url ? strdup(from->url) : NULL;
    to->ca = from->ca ? strdup(from->ca) : NULL;
    if ((from->url && !to->url) || (from->ca && !to->ca)) {
        service_clear(to);
        return -ENOMEM;
    }
    return 0;
}

bool agent_key_name_is_valid(const char *key) {
    const char *n;
    size_t len;
    if (!key || strncmp(key, "kms/", 4) != 0)
        return false;
    n = key + 4;
    len = strlen(n);
    if (len < 1 || len > 128 || n[0] == '.' || n[0] == '-')
        return false;
    return strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-") == len;
}

/* 8-4-4-4-12 hexadecimal digits. */
static bool uuid_is_valid(const char *s) {
    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    }
    return true;
}

static void secret_clear(AgentSecret *s) {
    free(s->key);
    free(s->secret_id);
    free(s->volume_uuid);
    service_clear(&s->attestd);
    service_clear(&s->kms);
    *s = (AgentSecret){};
}

static int parse_secret(const json_t *o, size_t idx, const AgentService *attestd,
                        const AgentService *kms, AgentSecret *ret, char err[static 512]) {
    static const char *const known[] = {"key",     "secret_id", "prefetch", "volume_uuid",
                                        "attestd", "kms",       NULL};
    _cleanup_(secret_clear) AgentSecret s = {};
    char where[64];
    const json_t *v;
    int r;

    (void)snprintf(where, sizeof where, "secrets[%zu]", idx);
    if (!json_is_object(o))
        return conf_error(err, "%s must be an object", where);
    if ((r = check_members(o, where, known, err)) < 0 ||
        (r = get_string(o, where, "key", true, AGENT_MAX_KEY_NAME, &s.key, err)) < 0 ||
        (r = get_string(o, where, "secret_id", true, 64, &s.secret_id, err)) < 0 ||
        (r = get_string(o, where, "volume_uuid", false, 36, &s.volume_uuid, err)) < 0)
        return r;
    if (!agent_key_name_is_valid(s.key))
        return conf_error(err,
                          "%s: \"key\" '%s' is not a key name in kms/ (kms/NAME, NAME 1 to 128 "
                          "of A-Z a-z 0-9 . _ : @ -, not starting with . or -)",
                          where, s.key);
    if (!kms_secret_id_is_valid(s.secret_id))
        return conf_error(err, "%s: \"secret_id\" '%s' is not a kmsd secret id", where,
                          s.secret_id);
    if (s.volume_uuid && !uuid_is_valid(s.volume_uuid))
        return conf_error(err, "%s: \"volume_uuid\" '%s' is not a UUID", where, s.volume_uuid);
    v = json_object_get(o, "prefetch");
    if (v && !json_is_boolean(v))
        return conf_error(err, "%s: \"prefetch\" must be true or false", where);
    s.prefetch = json_is_true(v);
    (void)snprintf(where, sizeof where, "secrets[%zu].attestd", idx);
    if ((v = json_object_get(o, "attestd")))
        r = parse_service(v, where, &s.attestd, err);
    else if (attestd->url)
        r = service_copy(attestd, &s.attestd);
    else
        r = conf_error(err, "secrets[%zu]: no \"attestd\" (give one here or at the top level)",
                       idx);
    if (r < 0)
        return r;
    (void)snprintf(where, sizeof where, "secrets[%zu].kms", idx);
    if ((v = json_object_get(o, "kms")))
        r = parse_service(v, where, &s.kms, err);
    else if (kms->url)
        r = service_copy(kms, &s.kms);
    else
        r = conf_error(err, "secrets[%zu]: no \"kms\" (give one here or at the top level)", idx);
    if (r < 0)
        return r;
    *ret = s;
    s = (AgentSecret){};
    return 0;
}

int agent_conf_parse(const json_t *doc, AgentConf *ret, char err[static 512]) {
    static const char *const known[] = {"attestd",          "kms",     "vhsm_socket", "retry",
                                        "refresh_before_s", "secrets", NULL};
    static const char *const retry_known[] = {"deadline_s", "initial_ms", "max_ms", NULL};
    _cleanup_(service_clear) AgentService attestd = {}, kms = {};
    _cleanup_(agent_conf_clear) AgentConf c = {
        .deadline_s = AGENT_DEFAULT_DEADLINE_S,
        .initial_ms = AGENT_DEFAULT_INITIAL_MS,
        .max_ms = AGENT_DEFAULT_MAX_MS,
        .refresh_before_s = AGENT_DEFAULT_REFRESH_BEFORE_S,
    };
    const json_t *v, *secrets;
    int r;

    err[0] = '\0';
    if (!json_is_object(doc))
        return conf_error(err, "the configuration must be a JSON object");
    if ((r = check_members(doc, "configuration", known, err)) < 0)
        return r;
    if ((v = json_object_get(doc, "attestd")) &&
        (r = parse_service(v, "attestd", &attestd, err)) < 0)
        return r;
    if ((v = json_object_get(doc, "kms")) && (r = parse_service(v, "kms", &kms, err)) < 0)
        return r;
    if ((r = get_string(doc, "configuration", "vhsm_socket", false, 107, &c.vhsm_socket, err)) < 0)
        return r;
    if ((v = json_object_get(doc, "retry"))) {
        if (!json_is_object(v))
            return conf_error(err, "\"retry\" must be an object");
        if ((r = check_members(v, "retry", retry_known, err)) < 0 ||
            (r = get_uint(v, "retry", "deadline_s", 1, 3600, &c.deadline_s, err)) < 0 ||
            (r = get_uint(v, "retry", "initial_ms", 1, 60000, &c.initial_ms, err)) < 0 ||
            (r = get_uint(v, "retry", "max_ms", 1, 600000, &c.max_ms, err)) < 0)
            return r;
        if (c.max_ms < c.initial_ms)
            return conf_error(err, "retry: \"max_ms\" (%u) is below \"initial_ms\" (%u)", c.max_ms,
                              c.initial_ms);
    }
    if ((r = get_uint(doc, "configuration", "refresh_before_s", 0, 86400, &c.refresh_before_s,
                      err)) < 0)
        return r;
    secrets = json_object_get(doc, "secrets");
    if (!json_is_array(secrets) || json_array_size(secrets) == 0)
        return conf_error(err, "\"secrets\" must be a non-empty array");
    if (json_array_size(secrets) > AGENT_MAX_SECRETS)
        return conf_error(err, "\"secrets\": at most %d entries", AGENT_MAX_SECRETS);
    c.secrets = calloc(json_array_size(secrets), sizeof *c.secrets);
    if (!c.secrets)
        return -ENOMEM;
    for (size_t i = 0; i < json_array_size(secrets); i++) {
        r = parse_secret(json_array_get(secrets, i), i, &attestd, &kms, &c.secrets[i], err);
        if (r < 0)
            return r;
        c.n_secrets++;
        for (size_t j = 0; j < i; j++)
            if (streq(c.secrets[j].key, c.secrets[i].key))
                return conf_error(err,
                                  "secrets[%zu]: key '%s' is configured twice (also "
                                  "secrets[%zu])",
                                  i, c.secrets[i].key, j);
    }
    *ret = c;
    c = (AgentConf){};
    return 0;
}

int agent_conf_load(const char *path, AgentConf *ret, char err[static 512]) {
    json_auto_t *doc = NULL;
    json_error_t je;

    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        (void)snprintf(err, 512, "%s:%d: %s", path, je.line, je.text);
        return -EINVAL;
    }
    return agent_conf_parse(doc, ret, err);
}

void agent_conf_clear(AgentConf *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->n_secrets; i++)
        secret_clear(&c->secrets[i]);
    free(c->secrets);
    free(c->vhsm_socket);
    *c = (AgentConf){};
}
