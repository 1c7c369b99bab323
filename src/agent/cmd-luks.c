/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride luks seal|list|remove|unlock (docs/luks.md):
 *   seal DEVICE --bind measurement,policy,... [--allow-debug] [--key-file F]
 *        [--provider P] [--sim-dir DIR]
 *        a new random key, a PBKDF2 keyslot for it (authorised by the key file's content or a
 *        passphrase read from stdin, one trailing newline removed), sealed under the SNP derived
 *        key; the `nitride` token holds the sealed blob and the local policy. Atomic.
 *   list DEVICE [--json]             the nitride tokens and their keyslots
 *   remove DEVICE [--token ID] [--force]
 *        removes the nitride tokens (or one) and their keyslots; never the last keyslot
 *        without --force.
 *   unlock DEVICE NAME [--test] [--token ID] [--provider P] [--sim-dir DIR]
 *        unseals the key (local policy first) and opens the token's keyslot only; --test checks
 *        the key without activating (no device-mapper needed).
 * Exit codes: 0 ok, 2 refused (local policy, the sealed key does not open here, wrong
 * passphrase, last keyslot), 3 usage, 4 I/O or libcryptsetup error, 5 no evidence provider.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libcryptsetup.h>

#include "agent.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/secret.h"
#include "attest-flow.h"
#include "kmsd/store.h"
#include "luks/luks.h"
#include "snp/provider.h"
#include "snp/report.h"

#include <openssl/rand.h>

#define AUTH_MAX 8192

enum {
    ARG_SIM_DIR = 0x100,
    ARG_PROVIDER,
    ARG_BIND,
    ARG_KEY_FILE,
    ARG_ALLOW_DEBUG,
    ARG_TOKEN,
    ARG_FORCE,
    ARG_TEST,
    ARG_JSON,
    ARG_CONF,
    ARG_CA,
    ARG_VHSM_SOCKET,
    ARG_TIMEOUT,
    ARG_NO_REMOTE,
    ARG_NO_RESEAL,
    ARG_KMS,
    ARG_SECRET,
    ARG_ATTESTD,
    ARG_CREATE,
    ARG_ADMIN_TOKEN_FILE,
    ARG_EXPECT_MEASUREMENT,
    ARG_POLICY_FILE,
};

static const struct option options[] = {
    {"provider", required_argument, NULL, ARG_PROVIDER},
    {"sim-dir", required_argument, NULL, ARG_SIM_DIR},
    {"bind", required_argument, NULL, ARG_BIND},
    {"key-file", required_argument, NULL, ARG_KEY_FILE},
    {"allow-debug", no_argument, NULL, ARG_ALLOW_DEBUG},
    {"token", required_argument, NULL, ARG_TOKEN},
    {"force", no_argument, NULL, ARG_FORCE},
    {"test", no_argument, NULL, ARG_TEST},
    {"json", no_argument, NULL, ARG_JSON},
    {"conf", required_argument, NULL, ARG_CONF},
    {"ca", required_argument, NULL, ARG_CA},
    {"vhsm-socket", required_argument, NULL, ARG_VHSM_SOCKET},
    {"timeout", required_argument, NULL, ARG_TIMEOUT},
    {"no-remote", no_argument, NULL, ARG_NO_REMOTE},
    {"no-reseal", no_argument, NULL, ARG_NO_RESEAL},
    {"kms", required_argument, NULL, ARG_KMS},
    {"secret", required_argument, NULL, ARG_SECRET},
    {"attestd", required_argument, NULL, ARG_ATTESTD},
    {"create", no_argument, NULL, ARG_CREATE},
    {"admin-token-file", required_argument, NULL, ARG_ADMIN_TOKEN_FILE},
    {"expect-measurement", required_argument, NULL, ARG_EXPECT_MEASUREMENT},
    {"policy-file", required_argument, NULL, ARG_POLICY_FILE},
    {"help", no_argument, NULL, 'h'},
    {},
};

typedef struct Args {
    const char *provider, *sim_dir, *bind, *key_file, *conf, *ca_file, *vhsm_socket;
    const char *kms, *secret, *attestd, *admin_token_file, *expect_measurement, *policy_file;
    bool allow_debug, force, test, json, no_remote, no_reseal, create;
    unsigned timeout_ms;
    int token;
} Args;

static void usage(FILE *f) {
    fprintf(f, "Usage: nitride luks seal DEVICE --bind FIELDS [--allow-debug] [--key-file F]\n"
               "                        [--provider P] [--sim-dir DIR]\n"
               "       nitride luks list DEVICE [--json]\n"
               "       nitride luks remove DEVICE [--token ID] [--force]\n"
               "       nitride luks unlock DEVICE NAME [--test] [--token ID] [--provider P]\n"
               "                        [--sim-dir DIR]\n"
               "FIELDS: comma-separated measurement, policy, image_id, family_id, guest_svn,\n"
               "tcb_version (the SNP derived key's guest field selection).\n"
               "seal reads the passphrase of an existing keyslot from stdin unless --key-file.\n");
}

static int parse_args(int argc, char **argv, Args *a) {
    int c;
    *a = (Args){.token = -1};
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
        switch (c) {
        case ARG_PROVIDER:
            a->provider = streq(optarg, "auto") ? NULL : optarg;
            break;
        case ARG_SIM_DIR:
            a->sim_dir = optarg;
            break;
        case ARG_BIND:
            a->bind = optarg;
            break;
        case ARG_KEY_FILE:
            a->key_file = optarg;
            break;
        case ARG_ALLOW_DEBUG:
            a->allow_debug = true;
            break;
        case ARG_FORCE:
            a->force = true;
            break;
        case ARG_TEST:
            a->test = true;
            break;
        case ARG_JSON:
            a->json = true;
            break;
        case ARG_CONF:
            a->conf = optarg;
            break;
        case ARG_CA:
            a->ca_file = optarg;
            break;
        case ARG_VHSM_SOCKET:
            a->vhsm_socket = optarg;
            break;
        case ARG_TIMEOUT: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 3600) {
                log_error("Invalid --timeout '%s' (seconds, 1..3600).", optarg);
                return -EINVAL;
            }
            a->timeout_ms = (unsigned)v * 1000u;
            break;
        }
        case ARG_NO_REMOTE:
            a->no_remote = true;
            break;
        case ARG_NO_RESEAL:
            a->no_reseal = true;
            break;
        case ARG_KMS:
            a->kms = optarg;
            break;
        case ARG_SECRET:
            a->secret = optarg;
            break;
        case ARG_ATTESTD:
            a->attestd = optarg;
            break;
        case ARG_CREATE:
            a->create = true;
            break;
        case ARG_ADMIN_TOKEN_FILE:
            a->admin_token_file = optarg;
            break;
        case ARG_EXPECT_MEASUREMENT:
            a->expect_measurement = optarg;
            break;
        case ARG_POLICY_FILE:
            a->policy_file = optarg;
            break;
        case ARG_TOKEN: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 0 || v >= LUKS_MAX_TOKENS) {
                log_error("Invalid --token '%s' (expected 0..%d).", optarg, LUKS_MAX_TOKENS - 1);
                return -EINVAL;
            }
            a->token = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    return 0;
}

static int open_provider(const Args *a, SnpProvider **ret) {
    const char *name = a->provider;
    int r;
    if (a->sim_dir) {
        if (name && !streq(name, "sim")) {
            log_error("--sim-dir only applies to --provider sim.");
            return NT_EXIT_USAGE;
        }
        name = "sim";
    }
    r = snp_provider_open(name, a->sim_dir, ret);
    if (r == -ENODEV || r == -ENOENT) {
        log_error("No evidence provider usable for the sealed flow. %s",
                  snp_provider_missing_message());
        return NT_EXIT_NO_PROVIDER;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to open evidence provider '%s': %m", name ? name : "auto");
        return NT_EXIT_IO;
    }
    return 0;
}

static int open_device(const char *path, struct crypt_device **ret) {
    int r = luks_device_open(path, ret);
    if (r == -EMEDIUMTYPE) {
        log_error("'%s' is not a LUKS2 volume.", path);
        return NT_EXIT_USAGE;
    }
    if (r < 0) {
        log_error_errno(r, "Cannot open the LUKS2 header of '%s': %m", path);
        return NT_EXIT_IO;
    }
    return 0;
}

/* The passphrase or key file that authorises a new keyslot, into a Secret. */
static int read_auth(const char *key_file, Secret **ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    int r;
    if (key_file)
        r = read_full_file(key_file, AUTH_MAX, &buf, &len);
    else
        r = read_full_fd(STDIN_FILENO, AUTH_MAX, &buf, &len);
    if (r < 0) {
        log_error_errno(r, "Cannot read the %s: %m", key_file ? "key file" : "passphrase (stdin)");
        return r;
    }
    if (!key_file && len > 0 && buf[len - 1] == '\n')
        len--;
    if (len == 0) {
        log_error("The %s is empty.", key_file ? "key file" : "passphrase");
        r = -EINVAL;
    } else
        r = secret_new_copy(buf, len, ret);
    explicit_bzero(buf, len);
    return r;
}

static int unlock_options(const Args *a, LuksUnlockOptions *o);
static int unlock_failed(const char *dev, int r, const LuksRefusal *ref);

static int luks_expect_cmd(const Args *a, const char *dev) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(luks_unlock_options_done) LuksUnlockOptions o = {0};
    LuksRefusal refusal = {0};
    uint8_t m[48];
    int r, tok = -1;

    if (strlen(a->expect_measurement) != 96 || hex_decode_exact(a->expect_measurement, m, 48) < 0) {
        log_error("Invalid --expect-measurement '%.100s': 96 hex characters (48 bytes, as "
                  "'nitride measure' prints).",
                  a->expect_measurement);
        return NT_EXIT_USAGE;
    }
    if ((r = unlock_options(a, &o)) != 0)
        return r;
    if ((r = open_device(dev, &cd)) != 0)
        return r;
    r = luks_preauthorise(cd, a->token, &o, m, &tok, &refusal);
    if (r == -ENOENT) {
        log_error("'%s' has no nitride token with a sealed slot: seal it first (--bind).", dev);
        return NT_EXIT_USAGE;
    }
    if (r < 0)
        return unlock_failed(dev, r, &refusal);
    printf("pre-authorised measurement %.16s... on token %d: the next unlock in that image "
           "re-seals to it\n",
           a->expect_measurement, tok);
    return NT_EXIT_OK;
}

static int luks_seal_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    _cleanup_(secret_freep) Secret *auth = NULL;
    LuksRefusal refusal = {0};
    uint64_t gfs;
    int tok = -1, slot = -1, r;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 1 != argc) {
        log_error("'nitride luks seal' needs exactly one DEVICE.");
        return NT_EXIT_USAGE;
    }
    if (a.expect_measurement) {
        if (a.bind) {
            log_error("--expect-measurement adds to an existing sealed slot; it takes no --bind.");
            return NT_EXIT_USAGE;
        }
        return luks_expect_cmd(&a, argv[optind]);
    }
    if (!a.bind || luks_bind_parse(a.bind, &gfs) < 0) {
        log_error("'nitride luks seal' needs --bind with one or more of measurement, policy, "
                  "image_id, family_id, guest_svn, tcb_version (comma-separated, no repeats).");
        return NT_EXIT_USAGE;
    }
    if ((r = open_device(argv[optind], &cd)) != 0)
        return r;
    if ((r = open_provider(&a, &prov)) != 0)
        return r;
    if (read_auth(a.key_file, &auth) < 0)
        return NT_EXIT_USAGE;
    r = luks_enroll_sealed(cd, prov, auth, gfs, a.allow_debug, &tok, &slot, &refusal);
    if (r == -EPERM && refusal.check) {
        log_error("Refusing to seal on '%s': local policy check '%s' failed: %s.", argv[optind],
                  refusal.check, refusal.detail);
        return NT_EXIT_POLICY;
    }
    if (r == -EPERM) {
        log_error("No keyslot of '%s' opens with the given %s.", argv[optind],
                  a.key_file ? "key file" : "passphrase");
        return NT_EXIT_POLICY;
    }
    if (r < 0) {
        log_error_errno(r, "Sealing a key on '%s' failed (nothing was added): %m", argv[optind]);
        return NT_EXIT_IO;
    }
    printf("sealed: token %d, keyslot %d (bind %s)\n", tok, slot, a.bind);
    return NT_EXIT_OK;
}

static void print_token(int id, const LuksToken *t) {
    printf("token %d: nitride %s, keyslot %d, volume %s\n", id,
           t->flow == LUKS_FLOW_SEALED ? "sealed"
           : t->flow == LUKS_FLOW_KMS  ? "kms"
                                       : "sealed+kms",
           t->keyslot, t->volume);
    if (luks_flow_has_sealed(t->flow))
        printf("  field select 0x%02llx, guest svn >= %u, tcb >= 0x%016llx, debug %s\n",
               (unsigned long long)t->guest_field_select, t->policy.min_guest_svn,
               (unsigned long long)t->policy.min_tcb,
               t->policy.allow_debug ? "allowed" : "refused");
    if (t->has_expect) {
        char m[97];
        hex_encode(t->expect_measurement, 48, m);
        m[96] = 0;
        printf("  pre-authorised next measurement %s\n", m);
    }
    if (luks_flow_has_kms(t->flow))
        printf("  kms %s, secret %s%s%s\n", t->kms_url, t->secret_id,
               t->attestd_url ? ", attestd " : "", t->attestd_url ? t->attestd_url : "");
}

static int luks_list_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    int r, n = 0;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 1 != argc) {
        log_error("'nitride luks list' needs exactly one DEVICE.");
        return NT_EXIT_USAGE;
    }
    if ((r = open_device(argv[optind], &cd)) != 0)
        return r;
    for (int id = 0; id < LUKS_MAX_TOKENS; id++) {
        LuksToken t;
        r = luks_token_read(cd, id, &t);
        if (r == -ENOENT || r == -EMEDIUMTYPE)
            continue;
        n++;
        if (r < 0) {
            printf("token %d: nitride, malformed (ignored by unlock)\n", id);
            continue;
        }
        if (a.json) {
            const char *json = NULL;
            if (crypt_token_json_get(cd, id, &json) >= 0)
                printf("%s\n", json);
        } else
            print_token(id, &t);
        luks_token_done(&t);
    }
    if (n == 0 && !a.json)
        printf("no nitride token on %s\n", argv[optind]);
    return NT_EXIT_OK;
}

static int luks_remove_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    int r, removed = 0;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 1 != argc) {
        log_error("'nitride luks remove' needs exactly one DEVICE.");
        return NT_EXIT_USAGE;
    }
    if ((r = open_device(argv[optind], &cd)) != 0)
        return r;
    for (int id = 0; id < LUKS_MAX_TOKENS; id++) {
        if (a.token >= 0 && id != a.token)
            continue;
        r = luks_remove(cd, id, a.force);
        if (r == -ENOENT || r == -EMEDIUMTYPE) {
            if (a.token >= 0) {
                log_error("Token %d of '%s' is not a nitride token.", id, argv[optind]);
                return NT_EXIT_USAGE;
            }
            continue;
        }
        if (r == -EBUSY) {
            log_error("Token %d's keyslot is the last keyslot of '%s': removing it would make the "
                      "volume unopenable. Add another keyslot first, or use --force.",
                      id, argv[optind]);
            return NT_EXIT_POLICY;
        }
        if (r < 0) {
            log_error_errno(r, "Removing token %d of '%s' failed (left as it was): %m", id,
                            argv[optind]);
            return NT_EXIT_IO;
        }
        printf("removed token %d and its keyslot\n", id);
        removed++;
    }
    if (removed == 0) {
        log_error("No nitride token on '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    return NT_EXIT_OK;
}

/* The unlock options: the configuration file (--conf, else $NITRIDE_LUKS_CONF or
 * /etc/nitride/luks.conf), then the command line. */
static int unlock_options(const Args *a, LuksUnlockOptions *o) {
    int r = luks_unlock_options_load(a->conf, o);
    if (r < 0) {
        log_error_errno(r, "Cannot load the unlock options%s%s: %m", a->conf ? " from " : "",
                        a->conf ? a->conf : "");
        return NT_EXIT_USAGE;
    }
    if (a->sim_dir && a->provider && !streq(a->provider, "sim")) {
        log_error("--sim-dir only applies to --provider sim.");
        return NT_EXIT_USAGE;
    }
    if (a->sim_dir || a->provider) {
        free(o->provider);
        if (a->sim_dir)
            r = asprintf(&o->provider, "sim:%s", a->sim_dir);
        else
            r = (o->provider = strdup(a->provider)) ? 0 : -1;
        if (r < 0) {
            o->provider = NULL;
            return NT_EXIT_IO;
        }
    }
    if (a->ca_file && !(free(o->ca_file), o->ca_file = strdup(a->ca_file)))
        return NT_EXIT_IO;
    if (a->vhsm_socket && !(free(o->vhsm_socket), o->vhsm_socket = strdup(a->vhsm_socket)))
        return NT_EXIT_IO;
    if (a->timeout_ms)
        o->timeout_ms = a->timeout_ms;
    if (a->no_remote)
        o->allow_remote = false;
    if (a->no_reseal)
        o->reseal = false;
    return 0;
}

/* Exit code and message for a failed luks_unlock(). */
static int unlock_failed(const char *dev, int r, const LuksRefusal *ref) {
    const char *check = ref->check ? ref->check : "";
    switch (r) {
    case -ENOENT:
        log_error("No nitride token on '%s'.", dev);
        return NT_EXIT_USAGE;
    case -EBADMSG:
        log_error("The nitride token of '%s' is malformed (%s); not used.", dev,
                  ref->check ? ref->detail : "unreadable");
        return NT_EXIT_POLICY;
    case -EPERM:
        log_error("Unlock of '%s' denied: check '%s' failed: %s. The key stays sealed.", dev, check,
                  ref->detail);
        return NT_EXIT_POLICY;
    case -EKEYREJECTED:
        log_error("Unlock of '%s' denied (%s): %s. The key stays sealed.", dev,
                  ref->check ? check : "seal",
                  ref->check ? ref->detail : "the sealed key does not open here");
        return NT_EXIT_POLICY;
    case -EAGAIN:
        if (streq(check, "provider")) {
            log_error("No evidence provider usable to unlock '%s'. %s", dev,
                      snp_provider_missing_message());
            return NT_EXIT_NO_PROVIDER;
        }
        log_error("Unlock of '%s' not possible now (%s): %s.", dev, ref->check ? check : "remote",
                  ref->check ? ref->detail : "a service is unavailable");
        return NT_EXIT_UNAVAILABLE;
    case -ECONNREFUSED:
        log_error("Unlock of '%s' not possible now (%s): %s.", dev, ref->check ? check : "connect",
                  ref->check ? ref->detail : "a service refuses connections");
        return NT_EXIT_UNAVAILABLE;
    default:
        log_error_errno(r, "Unlock of '%s' failed: %m", dev);
        return NT_EXIT_IO;
    }
}

static int luks_unlock_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(luks_unlock_options_done) LuksUnlockOptions o = {0};
    _cleanup_(secret_freep) Secret *key = NULL;
    LuksRefusal refusal = {0};
    const char *dev, *name;
    int r, keyslot = -1;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 2 != argc) {
        log_error("'nitride luks unlock' needs DEVICE and NAME.");
        return NT_EXIT_USAGE;
    }
    dev = argv[optind];
    name = argv[optind + 1];
    if ((r = unlock_options(&a, &o)) != 0)
        return r;
    if ((r = open_device(dev, &cd)) != 0)
        return r;
    r = luks_unlock(cd, a.token, &o, &key, &keyslot, &refusal);
    if (r < 0)
        return unlock_failed(dev, r, &refusal);
    r = luks_activate(cd, a.test ? NULL : name, keyslot, key);
    if (r == 0) {
        if (a.test)
            printf("unlock test: the token opens keyslot %d of %s (not activated)\n", keyslot, dev);
        else
            printf("unlocked %s as /dev/mapper/%s (keyslot %d)\n", dev, name, keyslot);
        return NT_EXIT_OK;
    }
    log_error_errno(r,
                    "Activating '%s' as '%s' failed: %m (device-mapper and dm-crypt must be "
                    "available; --test checks the key without activating)",
                    dev, name);
    return NT_EXIT_IO;
}

/* ---- enroll (the remote KMS flow) ---- */

/* This VM's measurement (hex), from a report with random REPORT_DATA. */
static int own_measurement(SnpProvider *p, char out[97]) {
    _cleanup_free_ uint8_t *raw = NULL;
    uint8_t rd[64];
    size_t len = 0;
    SnpReport rep;
    int r;
    if (RAND_bytes(rd, sizeof rd) != 1)
        return -EIO;
    if ((r = snp_provider_get_report(p, rd, 0, &raw, &len)) < 0)
        return r;
    if ((r = snp_report_parse(raw, len, &rep, NULL)) < 0)
        return r;
    hex_encode(rep.measurement, sizeof rep.measurement, out);
    out[96] = 0;
    return 0;
}

/* The release policy of a created secret: --policy-file's document (else measurement_in this
 * VM's measurement), with volume_uuid_eq this volume added: kmsd then releases the secret only
 * for this volume. */
static int enroll_policy(const Args *a, SnpProvider *p, const char *uuid, json_t **ret) {
    json_auto_t *pol = NULL;
    json_t *rules, *vu;
    if (a->policy_file) {
        json_error_t e;
        pol = json_load_file(a->policy_file, JSON_REJECT_DUPLICATES, &e);
        if (!json_is_object(pol) || !json_is_object(json_object_get(pol, "rules"))) {
            log_error("--policy-file '%s': not a kmsd release policy ({\"version\":1,\"rules\":"
                      "{...}}): %s",
                      a->policy_file, pol ? "no \"rules\" object" : e.text);
            return NT_EXIT_USAGE;
        }
    } else {
        char m[97];
        int r = own_measurement(p, m);
        if (r < 0) {
            log_error_errno(r, "Cannot read this VM's measurement for the release policy: %m");
            return NT_EXIT_IO;
        }
        pol = json_pack("{s:i, s:{s:[s]}}", "version", 1, "rules", "measurement_in", m);
        if (!pol)
            return NT_EXIT_IO;
    }
    rules = json_object_get(pol, "rules");
    vu = json_object_get(rules, "volume_uuid_eq");
    if (vu && (!json_is_string(vu) || strcasecmp(json_string_value(vu), uuid) != 0)) {
        log_error("--policy-file '%s' binds another volume (volume_uuid_eq) than '%s'.",
                  a->policy_file, uuid);
        return NT_EXIT_USAGE;
    }
    if (json_object_set_new(rules, "volume_uuid_eq", json_string(uuid)) < 0)
        return NT_EXIT_IO;
    *ret = TAKE_PTR(pol);
    return 0;
}

static int read_admin_token(const char *path, char **ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    int r = read_full_file(path, 1024 + 2, &buf, &len);
    if (r < 0)
        return log_error_errno(r, "Cannot read the kmsd admin token '%s': %m", path);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = 0;
    if (len == 0 || strlen((char *)buf) != len) {
        explicit_bzero(buf, len);
        log_error("The kmsd admin token '%s' is empty or not text.", path);
        return -EINVAL;
    }
    *ret = (char *)TAKE_PTR(buf);
    return 0;
}

/* One admin request to kmsd (bearer token); NT_EXIT_OK with status and reply. */
static int kms_admin(AttestRun *run, const char *base, const char *bearer, const char *method,
                     const char *path, const json_t *req, long *status, json_t **reply) {
    int r;
    do
        r = attest_exchange_at(run, base, bearer, "kmsd admin", method, path, req, status, reply);
    while (attest_again(run, &r, false));
    return r == STEP_OK ? NT_EXIT_OK : r < 0 ? NT_EXIT_IO : r;
}

static int luks_enroll_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(luks_unlock_options_done) LuksUnlockOptions o = {0};
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    _cleanup_(secret_freep) Secret *auth = NULL, *key = NULL;
    _cleanup_free_ char *admin = NULL, *kms_base = NULL, *created_path = NULL;
    LuksToken t = {0};
    LuksRefusal refusal = {0};
    AttestArgs aa = {.quiet = true};
    AttestRun run = ATTEST_RUN_INIT(&aa);
    const char *dev, *uuid, *attestd;
    uint64_t gfs = 0;
    bool created = false;
    int tok = -1, slot = -1, r, ret;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 1 != argc) {
        log_error("'nitride luks enroll' needs exactly one DEVICE.");
        return NT_EXIT_USAGE;
    }
    dev = argv[optind];
    attestd = a.attestd ? a.attestd : getenv("NITRIDE_ATTESTD_URL");
    if (!a.kms || !a.secret || !attestd) {
        log_error("'nitride luks enroll' needs --kms URL, --secret ID and --attestd URL (or "
                  "$NITRIDE_ATTESTD_URL).");
        return NT_EXIT_USAGE;
    }
    if (!kms_secret_id_is_valid(a.secret)) {
        log_error("Invalid --secret '%.128s': not a kmsd secret id.", a.secret);
        return NT_EXIT_USAGE;
    }
    if (a.bind && luks_bind_parse(a.bind, &gfs) < 0) {
        log_error("Invalid --bind '%s' (measurement, policy, image_id, family_id, guest_svn, "
                  "tcb_version; comma-separated, no repeats).",
                  a.bind);
        return NT_EXIT_USAGE;
    }
    if (a.create && !a.admin_token_file && !getenv("NITRIDE_KMS_TOKEN_FILE")) {
        log_error("--create needs kmsd's admin token: --admin-token-file F (or "
                  "$NITRIDE_KMS_TOKEN_FILE).");
        return NT_EXIT_USAGE;
    }
    if (a.policy_file && !a.create) {
        log_error("--policy-file applies to --create only.");
        return NT_EXIT_USAGE;
    }
    if ((r = unlock_options(&a, &o)) != 0)
        return r;
    if (attest_check_url(a.kms, "--kms", &kms_base) != NT_EXIT_OK ||
        attest_check_url(attestd, "--attestd", &aa.base) != NT_EXIT_OK)
        return NT_EXIT_USAGE;
    if ((r = open_device(dev, &cd)) != 0)
        goto out_usage;
    uuid = crypt_get_uuid(cd);
    if (!uuid || strlen(uuid) != 36) {
        log_error("'%s' has no LUKS UUID.", dev);
        ret = NT_EXIT_IO;
        goto out;
    }
    if (read_auth(a.key_file, &auth) < 0) {
        ret = NT_EXIT_USAGE;
        goto out;
    }
    /* The authorisation first: a wrong passphrase changes nothing, here or in kmsd. */
    r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT,
                                     (const char *)secret_const_data(auth), secret_size(auth), 0);
    if (r < 0) {
        log_error("No keyslot of '%s' opens with the given %s.", dev,
                  a.key_file ? "key file" : "passphrase");
        ret = NT_EXIT_POLICY;
        goto out;
    }
    r = luks_provider_open(o.provider, &prov);
    if (r < 0) {
        log_error("No evidence provider usable for the attestation. %s",
                  snp_provider_missing_message());
        ret = NT_EXIT_NO_PROVIDER;
        goto out;
    }
    aa.ca_file = o.ca_file;
    run.deadline_ms = attest_now_ms() + o.timeout_ms;
    if (a.create) {
        json_auto_t *pol = NULL, *req = NULL, *reply = NULL;
        long status = 0;
        if (read_admin_token(a.admin_token_file ? a.admin_token_file
                                                : getenv("NITRIDE_KMS_TOKEN_FILE"),
                             &admin) < 0) {
            ret = NT_EXIT_USAGE;
            goto out;
        }
        if ((ret = enroll_policy(&a, prov, uuid, &pol)) != 0)
            goto out;
        req = json_pack("{s:s, s:s, s:b, s:i, s:O}", "id", a.secret, "type", "raw", "generate", 1,
                        "length", (int)LUKS_KEY_SIZE, "policy", pol);
        if (!req) {
            ret = NT_EXIT_IO;
            goto out;
        }
        ret = kms_admin(&run, kms_base, admin, "POST", "/v1/secrets", req, &status, &reply);
        if (ret != NT_EXIT_OK)
            goto out;
        if (status == 409) {
            log_error("kmsd already has a secret '%s': enroll without --create to use it.",
                      a.secret);
            ret = NT_EXIT_USAGE;
            goto out;
        }
        if (status != 201) {
            attest_print_refusal("kmsd", "Creating the secret", status, reply);
            ret = status == 401 || status == 403 ? NT_EXIT_REFUSED : NT_EXIT_INVALID;
            goto out;
        }
        created = true;
        printf("created kmsd secret %s (raw, %u bytes, released only for volume %s)\n", a.secret,
               LUKS_KEY_SIZE, uuid);
    }
    {
        LuksRemoteRequest rq = {.kms_url = a.kms,
                                .attestd_url = attestd,
                                .secret_id = a.secret,
                                .volume_uuid = uuid,
                                .purpose = "luks-enroll"};
        r = luks_remote_fetch(&rq, &o, run.deadline_ms, &prov, &key, &refusal);
    }
    if (r < 0) {
        ret = unlock_failed(dev, r, &refusal);
        goto out;
    }
    t.kms_url = strdup(a.kms);
    t.attestd_url = strdup(attestd);
    t.secret_id = strdup(a.secret);
    if (!t.kms_url || !t.attestd_url || !t.secret_id) {
        ret = NT_EXIT_IO;
        goto out;
    }
    r = luks_enroll_kms(cd, auth, key, &t, prov, gfs, a.allow_debug, &tok, &slot, &refusal);
    if (r == -EPERM && refusal.check) {
        log_error("Refusing to seal on '%s': local policy check '%s' failed: %s.", dev,
                  refusal.check, refusal.detail);
        ret = NT_EXIT_POLICY;
        goto out;
    }
    if (r == -EPERM) {
        log_error("No keyslot of '%s' opens with the given %s.", dev,
                  a.key_file ? "key file" : "passphrase");
        ret = NT_EXIT_POLICY;
        goto out;
    }
    if (r < 0) {
        log_error_errno(r, "Enrolling '%s' failed (nothing was added): %m", dev);
        ret = NT_EXIT_IO;
        goto out;
    }
    created = false; /* in use now */
    printf("enrolled: token %d, keyslot %d (kms %s, secret %s%s)\n", tok, slot, a.kms, a.secret,
           gfs ? ", with a sealed slot" : "");
    ret = NT_EXIT_OK;
out:
    if (created) {
        /* The secret this enrolment created is of no use without the keyslot: delete it. */
        json_t *reply = NULL;
        long status = 0;
        if (asprintf(&created_path, "/v1/secrets/%s", a.secret) >= 0) {
            run.deadline_ms = MAX(run.deadline_ms, attest_now_ms() + 5000);
            if (kms_admin(&run, kms_base, admin, "DELETE", created_path, NULL, &status, &reply) !=
                    NT_EXIT_OK ||
                status != 200)
                log_error("Could not delete the kmsd secret '%s' this failed enrolment created.",
                          a.secret);
            else
                log_info("Deleted the kmsd secret '%s' this failed enrolment created.", a.secret);
        } else
            created_path = NULL;
        json_decref(reply);
    }
    if (admin)
        explicit_bzero(admin, strlen(admin));
    luks_token_done(&t);
    json_decref(run.tee_pubkey);
    free(aa.base);
    return ret;
out_usage:
    free(aa.base);
    return r;
}

int cmd_luks(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return NT_EXIT_USAGE;
    }
    if (streq(argv[1], "--help") || streq(argv[1], "-h")) {
        usage(stdout);
        return NT_EXIT_OK;
    }
    if (streq(argv[1], "seal"))
        return luks_seal_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "enroll"))
        return luks_enroll_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "list"))
        return luks_list_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "remove"))
        return luks_remove_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "unlock"))
        return luks_unlock_cmd(argc - 1, argv + 1);
    log_error("Unknown 'nitride luks' command '%s' (seal, list, remove, unlock).", argv[1]);
    return NT_EXIT_USAGE;
}
