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
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/secret.h"
#include "luks/luks.h"
#include "snp/provider.h"

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
    {"help", no_argument, NULL, 'h'},
    {},
};

typedef struct Args {
    const char *provider, *sim_dir, *bind, *key_file;
    bool allow_debug, force, test, json;
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
           t->flow == LUKS_FLOW_SEALED ? "sealed" : "kms", t->keyslot, t->volume);
    if (t->flow == LUKS_FLOW_SEALED)
        printf("  field select 0x%02llx, guest svn >= %u, tcb >= 0x%016llx, debug %s\n",
               (unsigned long long)t->guest_field_select, t->policy.min_guest_svn,
               (unsigned long long)t->policy.min_tcb,
               t->policy.allow_debug ? "allowed" : "refused");
    else
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

static int luks_unlock_cmd(int argc, char **argv) {
    _cleanup_(luks_device_closep) struct crypt_device *cd = NULL;
    _cleanup_(snp_provider_freep) SnpProvider *prov = NULL;
    const char *dev, *name, *uuid;
    int r, tried = 0, ret = NT_EXIT_POLICY;
    Args a;

    if ((r = parse_args(argc, argv, &a)) != 0)
        return r > 0 ? NT_EXIT_OK : NT_EXIT_USAGE;
    if (optind + 2 != argc) {
        log_error("'nitride luks unlock' needs DEVICE and NAME.");
        return NT_EXIT_USAGE;
    }
    dev = argv[optind];
    name = argv[optind + 1];
    if ((r = open_device(dev, &cd)) != 0)
        return r;
    uuid = crypt_get_uuid(cd);
    if (!uuid) {
        log_error("'%s' has no LUKS UUID.", dev);
        return NT_EXIT_IO;
    }
    for (int id = 0; id < LUKS_MAX_TOKENS; id++) {
        _cleanup_(secret_freep) Secret *key = NULL;
        LuksRefusal refusal = {0};
        LuksToken t;
        if (a.token >= 0 && id != a.token)
            continue;
        r = luks_token_read(cd, id, &t);
        if (r == -ENOENT || r == -EMEDIUMTYPE)
            continue;
        tried++;
        if (r < 0) {
            log_error("Token %d of '%s' is malformed; not used.", id, dev);
            continue;
        }
        if (t.flow != LUKS_FLOW_SEALED) {
            log_error("Token %d of '%s' uses the KMS flow, not supported by this build yet.", id,
                      dev);
            luks_token_done(&t);
            continue;
        }
        if (!prov && (r = open_provider(&a, &prov)) != 0) {
            luks_token_done(&t);
            return r;
        }
        r = luks_unseal(prov, &t, uuid, &key, &refusal);
        if (r == -EPERM) {
            log_error("Unlock of '%s' denied: local policy check '%s' failed: %s. The key stays "
                      "sealed.",
                      dev, refusal.check, refusal.detail);
            luks_token_done(&t);
            continue;
        }
        if (r == -EKEYREJECTED) {
            log_error("Unlock of '%s' denied (token %d): %s. The key stays sealed.", dev, id,
                      refusal.check ? refusal.detail : "the sealed key does not open here");
            luks_token_done(&t);
            continue;
        }
        if (r < 0) {
            log_error_errno(r, "Unsealing token %d of '%s' failed: %m", id, dev);
            luks_token_done(&t);
            ret = NT_EXIT_IO;
            continue;
        }
        r = luks_activate(cd, a.test ? NULL : name, t.keyslot, key);
        if (r == 0) {
            if (a.test)
                printf("unlock test: token %d opens keyslot %d of %s (not activated)\n", id,
                       t.keyslot, dev);
            else
                printf("unlocked %s as /dev/mapper/%s (token %d, keyslot %d)\n", dev, name, id,
                       t.keyslot);
            luks_token_done(&t);
            return NT_EXIT_OK;
        }
        if (r == -EPERM)
            log_error("The unsealed key of token %d does not open keyslot %d of '%s'.", id,
                      t.keyslot, dev);
        else {
            log_error_errno(r,
                            "Activating '%s' as '%s' failed: %m (device-mapper and dm-crypt "
                            "must be available; --test checks the key without activating)",
                            dev, name);
            ret = NT_EXIT_IO;
        }
        luks_token_done(&t);
    }
    if (tried == 0) {
        log_error("No nitride token on '%s'.", dev);
        return NT_EXIT_USAGE;
    }
    return ret;
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
    if (streq(argv[1], "list"))
        return luks_list_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "remove"))
        return luks_remove_cmd(argc - 1, argv + 1);
    if (streq(argv[1], "unlock"))
        return luks_unlock_cmd(argc - 1, argv + 1);
    log_error("Unknown 'nitride luks' command '%s' (seal, list, remove, unlock).", argv[1]);
    return NT_EXIT_USAGE;
}
