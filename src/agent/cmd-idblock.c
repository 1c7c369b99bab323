/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride idblock create: an SEV-SNP ID block and its ID_AUTH_INFO (snp/idblock.h), in the base64
 * form QEMU's sev-snp-guest object takes (id-block=, id-auth=), and the ID key and author key
 * digests the guest's reports will carry (docs/measure.md).
 *
 *   idblock create (--measurement HEX | --from-measure --ovmf FILE [measure options])
 *                  --id-key KEY.pem|vhsm:NAME [--author-key KEY.pem|vhsm:NAME] --policy 0x..
 *                  [--family-id HEX] [--image-id HEX] [--guest-svn N] [--vhsm-socket PATH]
 *                  [--json]
 *
 * A vhsm:NAME key is an EC P-384 key in vhsmd: the ID block and the ID key are signed there
 * (libvhsm, ECDSA with SHA-384) and the private key never leaves the daemon.
 * Exit codes (agent.h): usage 3 (also a key that is not EC P-384), I/O 4 (also vhsmd refusing),
 * firmware that cannot be launched as an SNP guest 1.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "measure-opts.h"
#include "snp/idblock.h"
#include "snp/report.h"
#include "vhsm/client/vhsm-client.h"

typedef struct KeyRef {
    const char *spec; /* as given */
    EVP_PKEY *pkey;   /* PEM file: the private key; vhsm: the public key */
    VhsmClient *vhsm; /* vhsm: the connection; NULL for a PEM file */
    const char *name; /* vhsm: the key name */
    SnpIdSigner signer;
} KeyRef;

static void key_ref_done(KeyRef *k) {
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
    k->vhsm = vhsm_disconnect(k->vhsm);
}

static int sign_vhsm(void *userdata, const uint8_t *msg, size_t len, uint8_t ret_rs[96]) {
    KeyRef *k = userdata;
    _cleanup_free_ uint8_t *sig = NULL;
    size_t sig_len = 0;
    int r = vhsm_sign(k->vhsm, k->name, "ecdsa", VHSM_OP_RAW_RS, msg, len, &sig, &sig_len);
    if (r < 0) {
        log_error("vhsmd refused to sign with '%s': %s (%s)", k->name, strerror(-r),
                  vhsm_last_error() ? vhsm_last_error() : "no message");
        return r;
    }
    if (sig_len != 96) {
        log_error("vhsmd key '%s' gave a %zu-byte signature; an EC P-384 key gives 96.", k->name,
                  sig_len);
        return -EOPNOTSUPP;
    }
    memcpy(ret_rs, sig, 96);
    return 0;
}

/* Loads KEY.pem (a private key) or vhsm:NAME (connects, fetches the public key). Logs. */
static int key_ref_load(KeyRef *k, const char *spec, const char *socket, const char *what) {
    *k = (KeyRef){.spec = spec};
    if (strncmp(spec, "vhsm:", 5) == 0) {
        _cleanup_free_ char *pem = NULL;
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        int r;

        k->name = spec + 5;
        if (!*k->name) {
            log_error("%s: 'vhsm:' needs a key name.", what);
            return NT_EXIT_USAGE;
        }
        r = vhsm_connect(socket, &k->vhsm);
        if (r < 0) {
            log_error("%s: cannot reach vhsmd at '%s': %s", what,
                      socket ? socket : (getenv("VHSM_SOCKET") ?: VHSM_DEFAULT_SOCKET),
                      strerror(-r));
            return NT_EXIT_IO;
        }
        r = vhsm_pubkey(k->vhsm, k->name, "pem", 0, &pem);
        if (r < 0) {
            log_error("%s: vhsmd key '%s': %s (%s)", what, k->name, strerror(-r),
                      vhsm_last_error() ? vhsm_last_error() : "no message");
            return r == -ENOKEY || r == -EOPNOTSUPP ? NT_EXIT_USAGE : NT_EXIT_IO;
        }
        bio = BIO_new_mem_buf(pem, -1);
        k->pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        if (!k->pkey) {
            (void)nt_openssl_error(-EIO, "vhsmd public key");
            log_error("%s: vhsmd key '%s' has no public key OpenSSL reads.", what, k->name);
            return NT_EXIT_IO;
        }
        k->signer = (SnpIdSigner){.sign = sign_vhsm, .userdata = k, .pub = k->pkey};
    } else {
        _cleanup_(BIO_free_allp) BIO *bio = BIO_new_file(spec, "r");
        if (!bio) {
            int e = errno;
            (void)nt_openssl_error(-EIO, "open key");
            log_error("%s: cannot open '%s': %s", what, spec, strerror(e ? e : EIO));
            return NT_EXIT_IO;
        }
        k->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        if (!k->pkey) {
            (void)nt_openssl_error(-EBADMSG, "PEM private key");
            log_error("%s: '%s' is not a PEM private key.", what, spec);
            return NT_EXIT_USAGE;
        }
        k->signer = (SnpIdSigner){.sign = snp_id_sign_pkey, .userdata = k->pkey, .pub = k->pkey};
    }
    uint8_t probe[SNP_ID_PUBKEY_SIZE];
    if (snp_id_pubkey_encode(k->pkey, probe) < 0) {
        log_error("%s '%s' is not an EC P-384 key (the SNP firmware takes only ECDSA P-384).", what,
                  spec);
        return NT_EXIT_USAGE;
    }
    return NT_EXIT_OK;
}

static void idblock_usage(FILE *f) {
    fprintf(f,
            "Usage: nitride idblock create (--measurement HEX | --from-measure --ovmf FILE\n"
            "                                [--kernel F --initrd F --append S] [--vcpus N]\n"
            "                                [--vcpu-type T] [--vmm V] [--guest-features X])\n"
            "                              --id-key KEY.pem|vhsm:NAME\n"
            "                              [--author-key KEY.pem|vhsm:NAME] --policy 0x..\n"
            "                              [--family-id HEX] [--image-id HEX] [--guest-svn N]\n"
            "                              [--vhsm-socket PATH] [--json]\n"
            "\n"
            "Writes an SEV-SNP ID block and ID_AUTH_INFO (ECDSA P-384 with SHA-384) as base64,\n"
            "the form of QEMU's sev-snp-guest id-block= and id-auth=, and the ID key and author\n"
            "key digests that the guest's reports will carry. vhsm:NAME signs inside vhsmd.\n");
}

static int print_result(const SnpIdBlock *b, const char *blk64, const char *auth64,
                        const uint8_t id_digest[48], const uint8_t *author_digest, bool json) {
    char ld[97], idd[97], aud[97], fam[33], img[33], pol[24];
    hex_encode(b->ld, 48, ld);
    hex_encode(id_digest, 48, idd);
    hex_encode(b->family_id, 16, fam);
    hex_encode(b->image_id, 16, img);
    if (author_digest)
        hex_encode(author_digest, 48, aud);
    snprintf(pol, sizeof pol, "0x%" PRIx64, b->policy);
    if (json) {
        json_auto_t *j = json_object();
        int r = 0;
        if (!j)
            return log_oom(), NT_EXIT_IO;
        r |= json_object_set_new(j, "id_block", json_string(blk64));
        r |= json_object_set_new(j, "id_auth", json_string(auth64));
        r |= json_object_set_new(j, "author_key_enabled", json_boolean(author_digest != NULL));
        r |= json_object_set_new(j, "id_key_digest", json_string(idd));
        r |= json_object_set_new(j, "author_key_digest",
                                 author_digest ? json_string(aud) : json_null());
        r |= json_object_set_new(j, "measurement", json_string(ld));
        r |= json_object_set_new(j, "policy", json_string(pol));
        r |= json_object_set_new(j, "family_id", json_string(fam));
        r |= json_object_set_new(j, "image_id", json_string(img));
        r |= json_object_set_new(j, "guest_svn", json_integer(b->guest_svn));
        if (r != 0 || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
            return log_oom(), NT_EXIT_IO;
        fputc('\n', stdout);
    } else {
        printf("id-block: %s\n", blk64);
        printf("id-auth: %s\n", auth64);
        printf("id-key-digest: %s\n", idd);
        printf("author-key-digest: %s\n", author_digest ? aud : "(none)");
        printf("measurement: %s\npolicy: %s\nfamily-id: %s\nimage-id: %s\nguest-svn: %" PRIu32 "\n",
               ld, pol, fam, img, b->guest_svn);
        printf("qemu: -object sev-snp-guest,id=sev0,policy=%s,id-block=%s,id-auth=%s%s\n", pol,
               blk64, auth64, author_digest ? ",author-key-enabled=on" : "");
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("Failed to write to standard output.");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

static int idblock_create(int argc, char **argv) {
    enum {
        ARG_MEASUREMENT = 0x100,
        ARG_FROM_MEASURE,
        ARG_ID_KEY,
        ARG_AUTHOR_KEY,
        ARG_POLICY,
        ARG_FAMILY_ID,
        ARG_IMAGE_ID,
        ARG_GUEST_SVN,
        ARG_VHSM_SOCKET,
        ARG_JSON,
    };
    static const struct option own[] = {
        {"help", no_argument, NULL, 'h'},
        {"measurement", required_argument, NULL, ARG_MEASUREMENT},
        {"from-measure", no_argument, NULL, ARG_FROM_MEASURE},
        {"id-key", required_argument, NULL, ARG_ID_KEY},
        {"author-key", required_argument, NULL, ARG_AUTHOR_KEY},
        {"policy", required_argument, NULL, ARG_POLICY},
        {"family-id", required_argument, NULL, ARG_FAMILY_ID},
        {"image-id", required_argument, NULL, ARG_IMAGE_ID},
        {"guest-svn", required_argument, NULL, ARG_GUEST_SVN},
        {"vhsm-socket", required_argument, NULL, ARG_VHSM_SOCKET},
        {"json", no_argument, NULL, ARG_JSON},
        {},
    };
    _cleanup_free_ struct option *options = measure_opts_merge(own);
    const char *measurement = NULL, *id_spec = NULL, *author_spec = NULL, *socket = NULL;
    bool from_measure = false, json = false, have_policy = false;
    SnpIdBlock b = {.version = SNP_ID_BLOCK_VERSION};
    MeasureOpts mo;
    uint64_t v;
    int c, r;

    if (!options)
        return log_oom(), NT_EXIT_IO;
    measure_opts_init(&mo);
    while ((c = measure_getopt(argc, argv, options, &mo)) >= 0) {
        switch (c) {
        case MEASURE_OPT_INVALID:
            return mo.exit_code;
        case 'h':
            idblock_usage(stdout);
            return NT_EXIT_OK;
        case ARG_MEASUREMENT:
            measurement = optarg;
            break;
        case ARG_FROM_MEASURE:
            from_measure = true;
            break;
        case ARG_ID_KEY:
            id_spec = optarg;
            break;
        case ARG_AUTHOR_KEY:
            author_spec = optarg;
            break;
        case ARG_POLICY:
            if (measure_parse_u64(optarg, UINT64_MAX, &b.policy) < 0) {
                log_error("--policy: expected a 64-bit number, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            have_policy = true;
            break;
        case ARG_FAMILY_ID:
        case ARG_IMAGE_ID:
            if (hex_decode_exact(optarg, c == ARG_FAMILY_ID ? b.family_id : b.image_id, 16) < 0) {
                log_error("--%s needs exactly 16 hex bytes (32 hex digits), got '%s'.",
                          c == ARG_FAMILY_ID ? "family-id" : "image-id", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_GUEST_SVN:
            if (measure_parse_u64(optarg, UINT32_MAX, &v) < 0) {
                log_error("--guest-svn: expected 0..4294967295, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            b.guest_svn = (uint32_t)v;
            break;
        case ARG_VHSM_SOCKET:
            socket = optarg;
            break;
        case ARG_JSON:
            json = true;
            break;
        default:
            idblock_usage(stderr);
            return NT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("Unexpected argument '%s'.", argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (mo.any && !from_measure) {
        log_error("Measure options (--ovmf ...) need --from-measure.");
        return NT_EXIT_USAGE;
    }
    if (!!measurement == from_measure) {
        log_error("Give the launch digest as one of --measurement HEX or --from-measure with "
                  "the measure options.");
        return NT_EXIT_USAGE;
    }
    if (!id_spec || !have_policy) {
        log_error("--id-key and --policy are required.");
        return NT_EXIT_USAGE;
    }
    if (!(b.policy & SNP_POLICY_RESERVED_1)) {
        log_error("--policy 0x%" PRIx64 " lacks bit 17, which the SNP ABI requires to be one "
                  "(the firmware refuses such a launch).",
                  b.policy);
        return NT_EXIT_USAGE;
    }
    if (measurement && hex_decode_exact(measurement, b.ld, sizeof b.ld) < 0) {
        log_error("--measurement needs exactly 48 hex bytes (96 hex digits).");
        return NT_EXIT_USAGE;
    }
    if (from_measure) {
        SnpMeasureResult res;
        r = measure_opts_run(&mo, &res);
        if (r != NT_EXIT_OK)
            return r;
        memcpy(b.ld, res.measurement, sizeof b.ld);
    }

    KeyRef id_key = {0}, author_key = {0};
    r = key_ref_load(&id_key, id_spec, socket, "--id-key");
    if (r == NT_EXIT_OK && author_spec)
        r = key_ref_load(&author_key, author_spec, socket, "--author-key");

    uint8_t blk[SNP_ID_BLOCK_SIZE], id_digest[48], author_digest[48];
    _cleanup_free_ uint8_t *auth = malloc(SNP_ID_AUTH_SIZE);
    _cleanup_free_ char *blk64 = NULL, *auth64 = NULL;
    if (r == NT_EXIT_OK && !auth)
        r = (log_oom(), NT_EXIT_IO);
    if (r == NT_EXIT_OK) {
        snp_id_block_serialize(&b, blk);
        int e =
            snp_id_auth_create(blk, &id_key.signer, author_spec ? &author_key.signer : NULL, auth);
        if (e < 0) {
            log_error("Failed to sign the ID block: %s", strerror(-e));
            r = e == -EOPNOTSUPP ? NT_EXIT_USAGE : NT_EXIT_IO;
        }
    }
    key_ref_done(&id_key);
    key_ref_done(&author_key);
    if (r != NT_EXIT_OK)
        return r;
    if (snp_id_key_digest(auth + SNP_ID_AUTH_OFF_ID_KEY, id_digest) < 0 ||
        (author_spec && snp_id_key_digest(auth + SNP_ID_AUTH_OFF_AUTHOR_KEY, author_digest) < 0) ||
        base64_encode_alloc(blk, sizeof blk, &blk64) < 0 ||
        base64_encode_alloc(auth, SNP_ID_AUTH_SIZE, &auth64) < 0)
        return log_oom(), NT_EXIT_IO;
    return print_result(&b, blk64, auth64, id_digest, author_spec ? author_digest : NULL, json);
}

int cmd_idblock(int argc, char **argv) {
    if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
        idblock_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? NT_EXIT_USAGE : NT_EXIT_OK;
    }
    optind = 0;
    if (streq(argv[1], "create"))
        return idblock_create(argc - 1, argv + 1);
    log_error("Unknown 'nitride idblock' command '%s' (create).", argv[1]);
    return NT_EXIT_USAGE;
}
