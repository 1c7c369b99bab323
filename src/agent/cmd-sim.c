/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride sim init|set|show: create and configure a simulated SNP chip (snp/sim.h).
 *   init DIR --product milan|genoa|turin [--vlek] [--report-version 2|3|5]
 *   launch DIR --ovmf FILE [--kernel F [--initrd F] [--append S]] [--vcpus N] [--vcpu-type T]
 *           [--vmm V] [--guest-features X] [--policy 0x..] [--host-data HEX]
 *           [--id-block B64 --id-auth B64 [--author-key-enabled]]
 *     launches a guest from its images: the measurement is computed as `nitride measure` does,
 *     and an ID block is checked as SNP_LAUNCH_FINISH does (refused with the firmware's status).
 *   set DIR [--measurement HEX] [--policy 0x..] [--host-data HEX] [--family-id HEX]
 *           [--image-id HEX] [--id-key-digest HEX] [--author-key-digest HEX] [--guest-svn N]
 *           [--vmpl N] [--current-tcb|--reported-tcb|--committed-tcb|--launch-tcb SPEC]
 *           [--signing-key vcek|vlek] [--mask-chip-id on|off]
 *     SPEC is "bl=N,tee=N,snp=N,ucode=N[,fmc=N]"; components not named keep their value.
 *   show DIR [--json]      the public configuration; secrets are never printed.
 *   crl DIR [--revoke vcek,vlek,ask,asvk] [--this-update T] [--next-update T] --out FILE
 *                          a CRL like AMD KDS's /vcek/v1/{product}/crl, signed by the chip's ARK.
 * Errors are logged once here, naming the chip directory and the reason.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "measure-opts.h"
#include "snp/idblock.h"
#include "snp/sim.h"
#include "verify/chain.h"

static int parse_on_off(const char *s, bool *ret) {
    if (streq(s, "on") || streq(s, "yes") || streq(s, "true") || streq(s, "1"))
        *ret = true;
    else if (streq(s, "off") || streq(s, "no") || streq(s, "false") || streq(s, "0"))
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

/* Applies "bl=..,tee=..,snp=..,ucode=..[,fmc=..]" on top of *tcb. */
static int parse_tcb(const char *spec, SnpProduct product, uint64_t *tcb) {
    _cleanup_free_ char *copy = strdup(spec);
    SnpTcb t;
    char *save = NULL, *tok;
    int r;

    if (!copy)
        return log_oom();
    r = snp_tcb_decode(*tcb, product, &t);
    if (r < 0)
        return r;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        uint64_t v;
        if (!eq || measure_parse_u64(eq + 1, 255, &v) < 0)
            return -EINVAL;
        *eq = 0;
        if (streq(tok, "bl") || streq(tok, "bootloader"))
            t.bootloader = (uint8_t)v;
        else if (streq(tok, "tee"))
            t.tee = (uint8_t)v;
        else if (streq(tok, "snp"))
            t.snp = (uint8_t)v;
        else if (streq(tok, "ucode") || streq(tok, "microcode"))
            t.microcode = (uint8_t)v;
        else if (streq(tok, "fmc") && product == SNP_PRODUCT_TURIN)
            t.fmc = (uint8_t)v;
        else
            return -EINVAL;
    }
    *tcb = snp_tcb_encode(&t, product);
    return 0;
}

static int sim_init(int argc, char **argv) {
    static const struct option options[] = {
        {"product", required_argument, NULL, 'p'},
        {"vlek", no_argument, NULL, 'v'},
        {"report-version", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    SimInitOptions opts = {.product = _SNP_PRODUCT_INVALID};
    const char *dir;
    uint64_t v;
    int c, r;

    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
        switch (c) {
        case 'p':
            opts.product = snp_product_from_string(optarg);
            if (opts.product < 0) {
                log_error("Unknown product '%s' (milan, genoa or turin).", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case 'v':
            opts.with_vlek = true;
            break;
        case 'r':
            if (measure_parse_u64(optarg, 5, &v) < 0 || (v != 2 && v != 3 && v != 5)) {
                log_error("Invalid --report-version '%s' (2, 3 or 5).", optarg);
                return NT_EXIT_USAGE;
            }
            opts.report_version = (uint32_t)v;
            break;
        case 'h':
            printf("nitride sim init DIR --product milan|genoa|turin [--vlek] "
                   "[--report-version 2|3|5]\n");
            return NT_EXIT_OK;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind + 1 != argc || opts.product < 0) {
        log_error("Usage: nitride sim init DIR --product milan|genoa|turin [--vlek] "
                  "[--report-version 2|3|5]");
        return NT_EXIT_USAGE;
    }
    dir = argv[optind];
    r = sim_chip_init(dir, &opts);
    if (r == -EEXIST) {
        log_error("'%s' already holds a chip; refusing to overwrite it.", dir);
        return NT_EXIT_USAGE;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to create a simulated chip in '%s': %m", dir);
        return NT_EXIT_IO;
    }
    printf("Created a simulated %s chip in %s%s.\n", snp_product_to_string(opts.product), dir,
           opts.with_vlek ? " (with VLEK)" : "");
    return NT_EXIT_OK;
}

static int load_chip(const char *dir, SimChip **ret) {
    int r = sim_chip_load(dir, ret);
    if (r == -ENOENT)
        log_error("No simulated chip in '%s' (create one with 'nitride sim init').", dir);
    else if (r == -EBADMSG)
        log_error("The simulated chip in '%s' is corrupt.", dir);
    else if (r < 0)
        log_error_errno(r, "Failed to load the simulated chip in '%s': %m", dir);
    return r;
}

static int hex_opt(const char *name, const char *arg, uint8_t *out, size_t n) {
    if (hex_decode_exact(arg, out, n) < 0) {
        log_error("--%s needs exactly %zu hex bytes.", name, n);
        return -EINVAL;
    }
    return 0;
}

static int sim_set(int argc, char **argv) {
    enum {
        OPT_MEASUREMENT = 0x100,
        OPT_POLICY,
        OPT_HOST_DATA,
        OPT_FAMILY_ID,
        OPT_IMAGE_ID,
        OPT_ID_KEY_DIGEST,
        OPT_AUTHOR_KEY_DIGEST,
        OPT_GUEST_SVN,
        OPT_VMPL,
        OPT_CURRENT_TCB,
        OPT_REPORTED_TCB,
        OPT_COMMITTED_TCB,
        OPT_LAUNCH_TCB,
        OPT_SIGNING_KEY,
        OPT_MASK_CHIP_ID,
    };
    static const struct option options[] = {
        {"measurement", required_argument, NULL, OPT_MEASUREMENT},
        {"policy", required_argument, NULL, OPT_POLICY},
        {"host-data", required_argument, NULL, OPT_HOST_DATA},
        {"family-id", required_argument, NULL, OPT_FAMILY_ID},
        {"image-id", required_argument, NULL, OPT_IMAGE_ID},
        {"id-key-digest", required_argument, NULL, OPT_ID_KEY_DIGEST},
        {"author-key-digest", required_argument, NULL, OPT_AUTHOR_KEY_DIGEST},
        {"guest-svn", required_argument, NULL, OPT_GUEST_SVN},
        {"vmpl", required_argument, NULL, OPT_VMPL},
        {"current-tcb", required_argument, NULL, OPT_CURRENT_TCB},
        {"reported-tcb", required_argument, NULL, OPT_REPORTED_TCB},
        {"committed-tcb", required_argument, NULL, OPT_COMMITTED_TCB},
        {"launch-tcb", required_argument, NULL, OPT_LAUNCH_TCB},
        {"signing-key", required_argument, NULL, OPT_SIGNING_KEY},
        {"mask-chip-id", required_argument, NULL, OPT_MASK_CHIP_ID},
        {},
    };
    _cleanup_(sim_chip_freep) SimChip *chip = NULL;
    const char *dir = NULL;
    SnpReport *l;
    SnpProduct product;
    uint64_t v;
    bool b;
    int c, r;

    /* The directory first: options are applied to the loaded chip as they are parsed. */
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-') {
            dir = argv[i];
            break;
        }
        if (i + 1 < argc && !strchr(argv[i], '='))
            i++; /* every set option takes a value */
    }
    if (!dir) {
        log_error("Usage: nitride sim set DIR [--measurement HEX] [--policy 0x..] ...");
        return NT_EXIT_USAGE;
    }
    if (load_chip(dir, &chip) < 0)
        return NT_EXIT_IO;
    l = sim_chip_launch(chip);
    product = sim_chip_product(chip);

    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
        r = 0;
        switch (c) {
        case OPT_MEASUREMENT:
            r = hex_opt("measurement", optarg, l->measurement, sizeof l->measurement);
            break;
        case OPT_POLICY:
            r = measure_parse_u64(optarg, UINT64_MAX, &v);
            if (r >= 0)
                l->policy = v;
            break;
        case OPT_HOST_DATA:
            r = hex_opt("host-data", optarg, l->host_data, sizeof l->host_data);
            break;
        case OPT_FAMILY_ID:
            r = hex_opt("family-id", optarg, l->family_id, sizeof l->family_id);
            break;
        case OPT_IMAGE_ID:
            r = hex_opt("image-id", optarg, l->image_id, sizeof l->image_id);
            break;
        case OPT_ID_KEY_DIGEST:
            r = hex_opt("id-key-digest", optarg, l->id_key_digest, sizeof l->id_key_digest);
            break;
        case OPT_AUTHOR_KEY_DIGEST: {
            static const uint8_t zero[48];
            r = hex_opt("author-key-digest", optarg, l->author_key_digest,
                        sizeof l->author_key_digest);
            /* author_key_en follows: an ID block signed by an author key. */
            if (r >= 0 && memcmp(l->author_key_digest, zero, sizeof zero) != 0)
                l->flags |= SNP_FLAG_AUTHOR_KEY_EN;
            else if (r >= 0)
                l->flags &= ~SNP_FLAG_AUTHOR_KEY_EN;
            break;
        }
        case OPT_GUEST_SVN:
            r = measure_parse_u64(optarg, UINT32_MAX, &v);
            if (r >= 0)
                l->guest_svn = (uint32_t)v;
            break;
        case OPT_VMPL:
            r = measure_parse_u64(optarg, 3, &v);
            if (r >= 0)
                l->vmpl = (uint32_t)v;
            break;
        case OPT_CURRENT_TCB:
            r = parse_tcb(optarg, product, &l->current_tcb);
            break;
        case OPT_REPORTED_TCB:
            r = parse_tcb(optarg, product, &l->reported_tcb);
            break;
        case OPT_COMMITTED_TCB:
            r = parse_tcb(optarg, product, &l->committed_tcb);
            break;
        case OPT_LAUNCH_TCB:
            r = parse_tcb(optarg, product, &l->launch_tcb);
            break;
        case OPT_SIGNING_KEY:
            if (streq(optarg, "vcek"))
                r = sim_chip_set_signing_key(chip, SNP_SIGNING_KEY_VCEK);
            else if (streq(optarg, "vlek")) {
                r = sim_chip_set_signing_key(chip, SNP_SIGNING_KEY_VLEK);
                if (r == -ENOKEY) {
                    log_error("The chip in '%s' has no VLEK (create it with --vlek).", dir);
                    return NT_EXIT_USAGE;
                }
            } else
                r = -EINVAL;
            break;
        case OPT_MASK_CHIP_ID:
            r = parse_on_off(optarg, &b);
            if (r >= 0)
                l->flags =
                    b ? (l->flags | SNP_FLAG_MASK_CHIP_KEY) : (l->flags & ~SNP_FLAG_MASK_CHIP_KEY);
            break;
        default:
            return NT_EXIT_USAGE;
        }
        if (r < 0) {
            log_error("Invalid value '%s' for %s.", optarg, argv[optind - 1]);
            return NT_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || !streq(argv[optind], dir)) {
        log_error("Usage: nitride sim set DIR [options]: exactly one chip directory.");
        return NT_EXIT_USAGE;
    }
    r = sim_chip_save(chip);
    if (r == -EINVAL) {
        log_error("Refusing the launch configuration for '%s': a TCB does not encode for %s, "
                  "or the policy lacks its must-be-one bit 17.",
                  dir, snp_product_to_string(product));
        return NT_EXIT_USAGE;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to save the simulated chip in '%s': %m", dir);
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

#define LAUNCH_USAGE                                                                               \
    "nitride sim launch DIR --ovmf FILE [--kernel F [--initrd F] [--append S]] [--vcpus N]\n"      \
    "           [--vcpu-type T] [--vmm qemu|ec2|gce] [--guest-features X] [--policy 0x..]\n"       \
    "           [--host-data HEX] [--id-block B64 --id-auth B64 [--author-key-enabled]]"

static int decode_b64_exact(const char *name, const char *s, size_t want, uint8_t **ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    if (base64_decode_alloc(s, strlen(s), &buf, &len) < 0 || len != want) {
        log_error("--%s must be base64 of exactly %zu bytes (as QEMU's sev-snp-guest takes it).",
                  name, want);
        return -EINVAL;
    }
    *ret = TAKE_PTR(buf);
    return 0;
}

static int sim_launch(int argc, char **argv) {
    enum {
        ARG_POLICY = 0x100,
        ARG_HOST_DATA,
        ARG_ID_BLOCK,
        ARG_ID_AUTH,
        ARG_AUTHOR_KEY_ENABLED,
    };
    static const struct option own[] = {
        {"help", no_argument, NULL, 'h'},
        {"policy", required_argument, NULL, ARG_POLICY},
        {"host-data", required_argument, NULL, ARG_HOST_DATA},
        {"id-block", required_argument, NULL, ARG_ID_BLOCK},
        {"id-auth", required_argument, NULL, ARG_ID_AUTH},
        {"author-key-enabled", no_argument, NULL, ARG_AUTHOR_KEY_ENABLED},
        {},
    };
    _cleanup_free_ struct option *options = measure_opts_merge(own);
    _cleanup_(sim_chip_freep) SimChip *chip = NULL;
    _cleanup_free_ uint8_t *id_block = NULL, *id_auth = NULL;
    const char *blk64 = NULL, *auth64 = NULL, *dir;
    SimLaunchParams p = {.policy = 0x30000}; /* QEMU's default sev-snp-guest policy */
    char err[SNP_ID_ERR_MAX];
    MeasureOpts mo;
    int c, r, fw = 0;

    if (!options)
        return log_oom(), NT_EXIT_IO;
    measure_opts_init(&mo);
    while ((c = measure_getopt(argc, argv, options, &mo)) >= 0) {
        switch (c) {
        case MEASURE_OPT_INVALID:
            return mo.exit_code;
        case 'h':
            printf("%s\n", LAUNCH_USAGE);
            return NT_EXIT_OK;
        case ARG_POLICY:
            if (measure_parse_u64(optarg, UINT64_MAX, &p.policy) < 0) {
                log_error("--policy: expected a 64-bit number, got '%s'.", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_HOST_DATA:
            if (hex_opt("host-data", optarg, p.host_data, sizeof p.host_data) < 0)
                return NT_EXIT_USAGE;
            break;
        case ARG_ID_BLOCK:
            blk64 = optarg;
            break;
        case ARG_ID_AUTH:
            auth64 = optarg;
            break;
        case ARG_AUTHOR_KEY_ENABLED:
            p.author_key_en = true;
            break;
        default:
            return NT_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        log_error("Usage: %s", LAUNCH_USAGE);
        return NT_EXIT_USAGE;
    }
    dir = argv[optind];
    if (!blk64 != !auth64) {
        log_error("--id-block and --id-auth go together.");
        return NT_EXIT_USAGE;
    }
    if (p.author_key_en && !blk64) {
        log_error("--author-key-enabled needs an ID block.");
        return NT_EXIT_USAGE;
    }
    if (blk64 && (decode_b64_exact("id-block", blk64, SNP_ID_BLOCK_SIZE, &id_block) < 0 ||
                  decode_b64_exact("id-auth", auth64, SNP_ID_AUTH_SIZE, &id_auth) < 0))
        return NT_EXIT_USAGE;
    SnpMeasureResult res;
    r = measure_opts_run(&mo, &res);
    if (r != NT_EXIT_OK)
        return r;
    memcpy(p.measurement, res.measurement, sizeof p.measurement);
    p.id_block = id_block;
    p.id_auth = id_auth;

    if (load_chip(dir, &chip) < 0)
        return NT_EXIT_IO;
    r = sim_chip_launch_finish(chip, &p, &fw, err);
    if (r == -EKEYREJECTED) {
        log_error("SNP_LAUNCH_FINISH refused the launch on the chip in '%s': %s (firmware status "
                  "0x%02x %s).",
                  dir, err, (unsigned)fw, snp_fw_status_to_string(fw));
        return NT_EXIT_POLICY;
    }
    if (r == -EINVAL) {
        log_error("Refusing the launch on '%s': the policy 0x%" PRIx64
                  " lacks its must-be-one bit 17.",
                  dir, p.policy);
        return NT_EXIT_USAGE;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to launch on the simulated chip in '%s': %m", dir);
        return NT_EXIT_IO;
    }
    char hex[97];
    hex_encode(p.measurement, sizeof p.measurement, hex);
    printf("Launched a guest on %s: measurement %s, policy 0x%" PRIx64 "%s.\n", dir, hex, p.policy,
           id_block ? ", ID block accepted" : "");
    return NT_EXIT_OK;
}

static void print_tcb(const char *name, uint64_t raw, SnpProduct p) {
    SnpTcb t;
    if (snp_tcb_decode(raw, p, &t) < 0) {
        printf("%-18s 0x%016" PRIx64 "\n", name, raw);
        return;
    }
    printf("%-18s 0x%016" PRIx64 " (", name, raw);
    if (p == SNP_PRODUCT_TURIN)
        printf("fmc=%u ", t.fmc);
    printf("bl=%u tee=%u snp=%u ucode=%u)\n", t.bootloader, t.tee, t.snp, t.microcode);
}

static int sim_show(int argc, char **argv) {
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {},
    };
    _cleanup_(sim_chip_freep) SimChip *chip = NULL;
    _cleanup_(json_decrefp) json_t *o = NULL;
    bool json = false;
    const char *key;
    json_t *v;
    int c, r;

    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case 'j':
            json = true;
            break;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind + 1 != argc) {
        log_error("Usage: nitride sim show DIR [--json]");
        return NT_EXIT_USAGE;
    }
    if (load_chip(argv[optind], &chip) < 0)
        return NT_EXIT_IO;
    r = sim_chip_to_json(chip, &o);
    if (r < 0) {
        log_error_errno(r, "Failed to describe the chip in '%s': %m", argv[optind]);
        return NT_EXIT_IO;
    }
    if (json) {
        if (json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
            return NT_EXIT_IO;
        putchar('\n');
        return NT_EXIT_OK;
    }
    json_object_foreach(o, key, v) {
        if (strstr(key, "_tcb")) {
            print_tcb(key, strtoull(json_string_value(v), NULL, 16), sim_chip_product(chip));
            continue;
        }
        if (json_is_string(v))
            printf("%-18s %s\n", key, json_string_value(v));
        else if (json_is_integer(v))
            printf("%-18s %" JSON_INTEGER_FORMAT "\n", key, json_integer_value(v));
        else if (json_is_boolean(v))
            printf("%-18s %s\n", key, json_is_true(v) ? "yes" : "no");
    }
    printf("%-18s %s/ark.pem %s/%s.pem %s/%s.pem\n", "certificates", argv[optind], argv[optind],
           sim_chip_has_vlek(chip) ? "asvk" : "ask", argv[optind],
           sim_chip_has_vlek(chip) ? "vlek" : "vcek");
    return NT_EXIT_OK;
}

#define CRL_USAGE                                                                                  \
    "nitride sim crl DIR [--revoke vcek,vlek,ask,asvk] [--this-update T] [--next-update T] "       \
    "--out FILE"

static int sim_crl(int argc, char **argv) {
    static const struct option options[] = {
        {"revoke", required_argument, NULL, 'r'},
        {"this-update", required_argument, NULL, 't'},
        {"next-update", required_argument, NULL, 'n'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    _cleanup_(sim_chip_freep) SimChip *chip = NULL;
    _cleanup_free_ uint8_t *der = NULL;
    _cleanup_free_ char *list = NULL;
    const char *names[4], *out = NULL;
    time_t this_update = time(NULL), next_update = 0;
    size_t n = 0, len = 0;
    char *save = NULL, *tok;
    int c, r;

    while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
        switch (c) {
        case 'r':
            free(list);
            list = strdup(optarg);
            if (!list)
                return log_oom(), NT_EXIT_IO;
            n = 0;
            for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (!streq(tok, "vcek") && !streq(tok, "vlek") && !streq(tok, "ask") &&
                    !streq(tok, "asvk")) {
                    log_error("Unknown certificate '%s' in --revoke (vcek, vlek, ask, asvk).", tok);
                    return NT_EXIT_USAGE;
                }
                if (n == ELEMENTSOF(names)) {
                    log_error("--revoke names at most %zu certificates.", ELEMENTSOF(names));
                    return NT_EXIT_USAGE;
                }
                names[n++] = tok;
            }
            break;
        case 't':
        case 'n':
            if (nt_parse_time(optarg, c == 't' ? &this_update : &next_update) < 0) {
                log_error("Invalid time '%s' (YYYY-MM-DDTHH:MM:SSZ or @SECONDS).", optarg);
                return NT_EXIT_USAGE;
            }
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            printf("%s\n", CRL_USAGE);
            return NT_EXIT_OK;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind + 1 != argc || !out) {
        log_error("Usage: %s", CRL_USAGE);
        return NT_EXIT_USAGE;
    }
    /* AMD's KDS CRL is re-issued about weekly; default to a week after thisUpdate. */
    if (next_update == 0)
        next_update = this_update + 7 * 24 * 3600;
    if (next_update < this_update) {
        log_error("--next-update is before --this-update.");
        return NT_EXIT_USAGE;
    }
    if (load_chip(argv[optind], &chip) < 0)
        return NT_EXIT_IO;
    r = sim_chip_make_crl(chip, names, n, this_update, next_update, &der, &len);
    if (r == -ENOKEY) {
        log_error("The chip in '%s' has no VLEK chain to revoke (create it with --vlek).",
                  argv[optind]);
        return NT_EXIT_USAGE;
    }
    if (r < 0) {
        log_error_errno(r, "Failed to make a CRL for the chip in '%s': %m", argv[optind]);
        return NT_EXIT_IO;
    }
    r = write_file_atomic(out, der, len, 0644);
    if (r < 0) {
        log_error_errno(r, "Failed to write '%s': %m", out);
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

int cmd_sim(int argc, char **argv) {
    if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "Usage: nitride sim init DIR --product milan|genoa|turin [--vlek] "
                   "[--report-version 2|3|5]\n"
                   "       " LAUNCH_USAGE "\n"
                   "       nitride sim set DIR [--measurement HEX] [--policy 0x..] "
                   "[--host-data HEX]\n"
                   "           [--family-id HEX] [--image-id HEX] [--id-key-digest HEX] "
                   "[--author-key-digest HEX]\n"
                   "           [--guest-svn N] [--vmpl N] "
                   "[--current-tcb|--reported-tcb|--committed-tcb|--launch-tcb SPEC]\n"
                   "           [--signing-key vcek|vlek] [--mask-chip-id on|off]\n"
                   "       nitride sim show DIR [--json]\n"
                   "       " CRL_USAGE "\n"
                   "SPEC: bl=N,tee=N,snp=N,ucode=N[,fmc=N] (fmc on Turin only)\n");
        return argc < 2 ? NT_EXIT_USAGE : NT_EXIT_OK;
    }
    optind = 0;
    if (streq(argv[1], "init"))
        return sim_init(argc - 1, argv + 1);
    if (streq(argv[1], "set"))
        return sim_set(argc - 1, argv + 1);
    if (streq(argv[1], "launch"))
        return sim_launch(argc - 1, argv + 1);
    if (streq(argv[1], "show"))
        return sim_show(argc - 1, argv + 1);
    if (streq(argv[1], "crl"))
        return sim_crl(argc - 1, argv + 1);
    log_error("Unknown 'nitride sim' command '%s' (init, launch, set, show, crl).", argv[1]);
    return NT_EXIT_USAGE;
}
